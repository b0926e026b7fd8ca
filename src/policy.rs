//! Which resource and route a request belongs to, and what that route and the MCP rules
//! require. It matches the normalised forms (`normalize.rs`), whatever Envoy did, so no path or
//! URI trick reaches a route or rule it should not.

use std::collections::HashMap;

use crate::config::{
    Access, Config, IntrospectMode, McpRules, PathMatch, RESOURCE_CONTEXT_KEY, Resource, Route,
    Rule,
};
use crate::mcp::{Call, Reference};
use crate::normalize::{
    UriError, canonical_resource_uri, fold_path, segment_prefix, uri_prefix_matches,
};
use crate::scope::Scopes;

/// Why no resource could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceMiss {
    /// Envoy named a resource id that is not configured.
    UnknownId,
    /// Host and path fit no configured resource.
    NoMatch,
    /// The path's exact form and its case-folded, trailing-slash-free form select different
    /// resources: which one the server would serve depends on its router, so neither is guessed.
    Ambiguous,
}

/// Pick the resource: Envoy's per-route `context_extensions` entry when present (authoritative),
/// else the resource whose URI host matches and whose path is the longest segment prefix of the
/// request path, else the only resource on that host, else the only resource configured.
pub fn select_resource<'c>(
    config: &'c Config,
    context_extensions: &HashMap<String, String>,
    host: &str,
    path: &str,
) -> Result<&'c Resource, ResourceMiss> {
    if let Some(id) = context_extensions.get(RESOURCE_CONTEXT_KEY) {
        return config.resource(id).ok_or(ResourceMiss::UnknownId);
    }
    if config.resources.len() == 1 {
        return Ok(&config.resources[0]);
    }
    let on_host: Vec<&Resource> = config.resources.iter().filter(|r| r.host == host).collect();
    let pick = |fold: bool| {
        let by_path = on_host
            .iter()
            .filter(|r| {
                if fold {
                    let p = fold_path(path);
                    segment_prefix(&fold_path(&r.path), &p) || fold_path(&r.prm_paths[0]) == p
                } else {
                    segment_prefix(&r.path, path) || r.prm_paths[0] == path
                }
            })
            .max_by_key(|r| r.path.len());
        match (by_path, on_host.as_slice()) {
            (Some(r), _) => Ok(*r),
            (None, [only]) => Ok(*only),
            _ => Err(ResourceMiss::NoMatch),
        }
    };
    let exact = pick(false);
    match (exact, pick(true)) {
        (Ok(a), Ok(b)) if !std::ptr::eq(a, b) => Err(ResourceMiss::Ambiguous),
        (Err(_), Ok(_)) => Err(ResourceMiss::Ambiguous),
        _ => exact,
    }
}

/// What the matched route (or the resource default) asks of the request.
#[derive(Debug, Clone)]
pub enum Requirement<'c> {
    /// No token needed.
    Public { route: &'c str },
    /// A valid token with all of these scopes (plus what the MCP rules add for POST bodies).
    Scopes {
        route: &'c str,
        scopes: &'c Scopes,
        mcp: Option<&'c McpRules>,
        /// Which tokens are introspected (RFC 7662) on this route.
        introspect: IntrospectMode,
    },
    /// Denied whatever the token (no route matched under default-deny).
    Deny,
    /// The exact path and the path as a case-insensitive, trailing-slash-tolerant router reads
    /// it (`fold_path`) match different routes (or one matches a route and the other the
    /// default): refused (400), since either reading could be the weaker one — Express folds,
    /// Starlette does not.
    Ambiguous,
}

/// Well-known PRM paths and CORS preflights never need a token (RFC 9728 §3; MCP: browser
/// clients preflight before they hold a token).
pub fn is_always_public(resource: &Resource, method: &str, path: &str, is_preflight: bool) -> bool {
    (method == "OPTIONS" && is_preflight)
        || ((method == "GET" || method == "HEAD") && resource.prm_paths.iter().any(|p| p == path))
}

/// First matching route wins; no match falls back to the resource default.
pub fn match_route<'c>(
    resource: &'c Resource,
    host: &str,
    method: &str,
    path: &str,
) -> Requirement<'c> {
    let exact = resource
        .routes
        .iter()
        .position(|r| route_matches(r, host, method, path));
    let folded_path = fold_path(path);
    let folded = resource
        .routes
        .iter()
        .position(|r| route_matches_folded(r, host, method, &folded_path));
    if exact != folded {
        return Requirement::Ambiguous;
    }
    match exact.map(|i| &resource.routes[i]) {
        Some(Route {
            name,
            access: Access::Public,
            ..
        }) => Requirement::Public { route: name },
        Some(Route {
            name,
            access: Access::Scopes(scopes),
            mcp,
            introspect,
            ..
        }) => Requirement::Scopes {
            route: name,
            scopes,
            mcp: mcp.as_ref(),
            introspect: introspect.unwrap_or(resource.introspect),
        },
        None => match &resource.default_scopes {
            Some(scopes) => Requirement::Scopes {
                route: "default",
                scopes,
                mcp: None,
                introspect: resource.introspect,
            },
            None => Requirement::Deny,
        },
    }
}

/// Which MCP rule refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum McpDenial {
    #[error("the method is denied")]
    Method,
    #[error("the tool is denied")]
    Tool,
    #[error("the resource is denied")]
    Resource,
    #[error("the prompt is denied")]
    Prompt,
    /// Not a rule's verdict: the resource URI cannot be matched safely (400).
    #[error("the resource URI is ambiguous: {0}")]
    BadUri(UriError),
}

/// Scopes the JSON-RPC messages need beyond the route's, or the rule that refuses them. Every
/// message of a batch must pass; their requirements add up.
pub fn mcp_requirement(rules: &McpRules, calls: &[Call]) -> Result<Scopes, McpDenial> {
    let mut need = Scopes::default();
    let mut add = |rule: &Rule, denial| match rule {
        Rule::Deny => Err(denial),
        Rule::Scopes(s) => {
            need.extend(s.iter().map(str::to_owned));
            Ok(())
        }
    };
    for call in calls {
        let Some(method) = call.method.as_deref() else {
            // A JSON-RPC response or result from the client: no method to authorize.
            continue;
        };
        add(
            rules.methods.get(method).unwrap_or(&rules.default_method),
            McpDenial::Method,
        )?;
        match method {
            "tools/call" => {
                let rule = call.name.as_deref().and_then(|n| rules.tools.get(n));
                add(rule.unwrap_or(&rules.default_tool), McpDenial::Tool)?;
            }
            "prompts/get" => {
                let rule = call.name.as_deref().and_then(|n| rules.prompts.get(n));
                add(rule.unwrap_or(&rules.default_prompt), McpDenial::Prompt)?;
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                add(
                    resource_rule(rules, call.uri.as_deref())?,
                    McpDenial::Resource,
                )?;
            }
            // MCP 2026-07-28 replaced `resources/subscribe` by a `subscriptions/listen` filter
            // naming resource URIs (the Python SDK honours any URI, with no check of its own):
            // each is held to its resource's rule, as a subscribe is, or a client without
            // `files:read` could follow the updates of what it may not read.
            "subscriptions/listen" => {
                for uri in &call.subscriptions {
                    add(resource_rule(rules, Some(uri))?, McpDenial::Resource)?;
                }
            }
            // A completion names a prompt or a resource template; it is held to that target's
            // rule, or a client without the target's scope could enumerate what it protects.
            "completion/complete" => match &call.reference {
                Some(Reference::Prompt(name)) => {
                    let rule = name.as_deref().and_then(|n| rules.prompts.get(n));
                    add(rule.unwrap_or(&rules.default_prompt), McpDenial::Prompt)?;
                }
                Some(Reference::Resource(uri)) => {
                    add(resource_rule(rules, uri.as_deref())?, McpDenial::Resource)?;
                }
                // No usable reference: the SDKs refuse it, and it must need at least what
                // an unlisted prompt and an unlisted resource need.
                Some(Reference::Other) | None => {
                    add(&rules.default_prompt, McpDenial::Prompt)?;
                    add(&rules.default_resource, McpDenial::Resource)?;
                }
            },
            _ => {}
        }
    }
    Ok(need)
}

/// The rule for a resource URI: the longest configured prefix (canonical, see
/// [`canonical_resource_uri`]) that matches the URI's canonical form on a segment boundary.
fn resource_rule<'r>(rules: &'r McpRules, uri: Option<&str>) -> Result<&'r Rule, McpDenial> {
    let Some(uri) = uri else {
        return Ok(&rules.default_resource);
    };
    let canonical = canonical_resource_uri(uri).map_err(McpDenial::BadUri)?;
    Ok(rules
        .resources
        .iter()
        .find(|(prefix, _)| uri_prefix_matches(prefix, &canonical))
        .map_or(&rules.default_resource, |(_, r)| r))
}

fn route_matches(r: &Route, host: &str, method: &str, path: &str) -> bool {
    r.host.as_deref().is_none_or(|h| h == host)
        && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
        && r.path.matches(path)
}

/// [`route_matches`] for a folded path against the route's folded pattern.
fn route_matches_folded(r: &Route, host: &str, method: &str, folded_path: &str) -> bool {
    r.host.as_deref().is_none_or(|h| h == host)
        && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
        && match &r.path {
            PathMatch::Exact(p) => fold_path(p) == folded_path,
            PathMatch::Prefix(p) => segment_prefix(&fold_path(p), folded_path),
        }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
