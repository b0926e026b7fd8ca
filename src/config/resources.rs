//! Validation of `resources:`: each resource's URI and PRM paths, its issuers (audience,
//! algorithms, where keys come from), scope vocabulary, routes in order, and MCP rules
//! (canonical resource-URI prefixes, tool and prompt names).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use url::Url;

use super::introspection::validate_introspection;
use super::model::{
    Access, Alg, ClientIdClaim, IssuerKeysConfig, JwksSettings, KeySource, McpRules, PathMatch,
    Resource, Route, Rule, ScopeClaim, TrustedIssuer,
};
use super::schema::{RawIssuer, RawMcpRules, RawResource, RawRoute, RawRule};
use super::{ConfigError, invalid, parse_host_port};
use crate::fetch_url::check_fetch_url;
use crate::scope::Scopes;

fn validate_scope_token(at: &str, s: &str) -> Result<(), ConfigError> {
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            at,
            format!("{s:?} is not a valid OAuth scope token"),
        ))
    }
}

fn validate_scopes(at: &str, list: &[String]) -> Result<Scopes, ConfigError> {
    for (i, s) in list.iter().enumerate() {
        validate_scope_token(&format!("{at}[{i}]"), s)?;
    }
    Ok(Scopes::new(list.iter().cloned()))
}

fn validate_path(at: &str, p: &str) -> Result<String, ConfigError> {
    if !p.starts_with('/') {
        return Err(invalid(at, format!("{p:?} must start with '/'")));
    }
    if crate::normalize::normalize_path(p).as_deref() != Ok(p) {
        return Err(invalid(
            at,
            format!(
                "{p:?} is not a normalized path (no '//', '.', '..', '%', '?', '#', ';' or '\\')"
            ),
        ));
    }
    Ok(p.to_owned())
}

pub(super) fn validate_resource(
    at: &str,
    r: RawResource,
    jwks: &JwksSettings,
    all_issuers: &mut Vec<IssuerKeysConfig>,
    check_timeout: Duration,
) -> Result<Resource, ConfigError> {
    if r.id.is_empty()
        || !r
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(invalid(
            format!("{at}.id"),
            format!(
                "{:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                r.id
            ),
        ));
    }
    let uri = Url::parse(&r.uri).map_err(|e| {
        invalid(
            format!("{at}.uri"),
            format!("{:?} is not a URL: {e}", r.uri),
        )
    })?;
    if !matches!(uri.scheme(), "https" | "http") {
        return Err(invalid(
            format!("{at}.uri"),
            "scheme must be https (or http for local development)",
        ));
    }
    // RFC 8707 §2 / RFC 9728 §1.2: absolute URI, no fragment; MCP: canonical, no trailing slash.
    if uri.fragment().is_some() || uri.query().is_some() {
        return Err(invalid(
            format!("{at}.uri"),
            "must not have a query or fragment",
        ));
    }
    let host = uri
        .host_str()
        .ok_or_else(|| invalid(format!("{at}.uri"), "must have a host"))?
        .to_ascii_lowercase();
    if r.uri.ends_with('/') {
        return Err(invalid(
            format!("{at}.uri"),
            format!(
                "{:?} must not end with '/' (the canonical resource URI has no trailing slash)",
                r.uri
            ),
        ));
    }
    let path = if uri.path().is_empty() {
        "/".to_owned()
    } else {
        uri.path().to_owned()
    };
    validate_path(&format!("{at}.uri"), &path)?;
    // RFC 9728 §3.1: insert the well-known segment between host and path.
    let origin = uri.origin().ascii_serialization();
    let suffix = if path == "/" { "" } else { path.as_str() };
    let prm_path = format!("/.well-known/oauth-protected-resource{suffix}");
    let prm_url = format!("{origin}{prm_path}");
    let prm_paths = [prm_path, "/.well-known/oauth-protected-resource".to_owned()];

    if r.issuers.is_empty() {
        return Err(invalid(
            format!("{at}.issuers"),
            "at least one issuer is required",
        ));
    }
    let mut issuers = Vec::new();
    for (i, ri) in r.issuers.into_iter().enumerate() {
        let iat = format!("{at}.issuers[{i}]");
        issuers.push(validate_issuer(&iat, ri, jwks, all_issuers, check_timeout)?);
    }
    let mut seen = BTreeSet::new();
    for (i, iss) in issuers.iter().enumerate() {
        if !seen.insert(iss.issuer.as_str()) {
            return Err(invalid(
                format!("{at}.issuers[{i}].issuer"),
                format!("issuer {:?} is listed twice", iss.issuer),
            ));
        }
    }

    let mut known_scopes = BTreeSet::new();
    let mut implications = HashMap::new();
    for (k, v) in &r.scope_implications {
        let iat = format!("{at}.scope_implications.{k}");
        validate_scope_token(&iat, k)?;
        let implied = validate_scopes(&iat, v)?;
        known_scopes.insert(k.clone());
        known_scopes.extend(implied.iter().map(str::to_owned));
        implications.insert(k.clone(), implied.iter().map(str::to_owned).collect());
    }

    let raw_routes = r.routes.unwrap_or_else(|| {
        vec![RawRoute {
            name: Some("default".into()),
            host: None,
            path: None,
            path_prefix: Some(path.clone()),
            methods: None,
            public: false,
            scopes: Some(vec![]),
            mcp: None,
            introspect: None,
        }]
    });
    let mut routes = Vec::with_capacity(raw_routes.len());
    for (i, rr) in raw_routes.into_iter().enumerate() {
        let rat = format!("{at}.routes[{i}]");
        let route = validate_route(&rat, i, rr)?;
        if let Access::Scopes(s) = &route.access {
            known_scopes.extend(s.iter().map(str::to_owned));
        }
        if let Some(m) = &route.mcp {
            known_scopes.extend(m.scopes().map(str::to_owned));
        }
        routes.push(route);
    }

    let default_scopes = match r.default_scopes {
        None => None,
        Some(list) => {
            let s = validate_scopes(&format!("{at}.default_scopes"), &list)?;
            known_scopes.extend(s.iter().map(str::to_owned));
            Some(s)
        }
    };

    let scopes_supported = match r.scopes_supported {
        Some(list) => {
            let s = validate_scopes(&format!("{at}.scopes_supported"), &list)?;
            if s.iter().any(|x| x == "offline_access") {
                return Err(invalid(
                    format!("{at}.scopes_supported"),
                    "offline_access does not belong in a resource's scopes_supported",
                ));
            }
            known_scopes.extend(s.iter().map(str::to_owned));
            list
        }
        // MCP: the minimal set for basic use — the scopes the routes require to connect.
        None => {
            let mut v = Scopes::default();
            for route in &routes {
                if let Access::Scopes(s) = &route.access {
                    v.extend(s.iter().map(str::to_owned));
                }
                // Connecting (initialize before 2026-07-28, server/discover since) and listing
                // are basic use: those methods' scopes are baseline too.
                for m in route.mcp.iter() {
                    for list in [
                        "initialize",
                        "server/discover",
                        "tools/list",
                        "resources/list",
                        "prompts/list",
                    ] {
                        if let Some(Rule::Scopes(s)) = m.methods.get(list) {
                            v.extend(s.iter().map(str::to_owned));
                        }
                    }
                }
            }
            v.iter().map(str::to_owned).collect()
        }
    };

    let authorization_servers = match r.authorization_servers {
        Some(list) if list.is_empty() => {
            return Err(invalid(
                format!("{at}.authorization_servers"),
                "MCP requires at least one authorization server",
            ));
        }
        Some(list) => {
            for (i, a) in list.iter().enumerate() {
                Url::parse(a).map_err(|e| {
                    invalid(
                        format!("{at}.authorization_servers[{i}]"),
                        format!("{a:?} is not a URL: {e}"),
                    )
                })?;
            }
            list
        }
        None => issuers.iter().map(|i| i.issuer.clone()).collect(),
    };
    if let Some(d) = &r.documentation {
        Url::parse(d).map_err(|e| {
            invalid(
                format!("{at}.documentation"),
                format!("{d:?} is not a URL: {e}"),
            )
        })?;
    }

    let upstream = match &r.upstream {
        Some(u) => Some(parse_host_port(&format!("{at}.upstream"), u)?),
        None => None,
    };
    let dpop = super::dpop::validate_dpop(&format!("{at}.dpop"), r.dpop)?;
    let realm = r.realm.unwrap_or_else(|| r.uri.clone());
    if !realm
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(invalid(
            format!("{at}.realm"),
            "must be printable ASCII without '\"' or '\\'",
        ));
    }

    Ok(Resource {
        id: r.id,
        uri: r.uri,
        host,
        path,
        realm,
        name: r.name,
        documentation: r.documentation,
        scopes_supported,
        authorization_servers,
        issuers,
        routes,
        upstream,
        default_scopes,
        implications,
        step_up: r.step_up,
        introspect: r.introspect,
        dpop,
        prm_url,
        prm_paths,
        known_scopes,
    })
}

fn validate_issuer(
    at: &str,
    ri: RawIssuer,
    jwks: &JwksSettings,
    all: &mut Vec<IssuerKeysConfig>,
    check_timeout: Duration,
) -> Result<TrustedIssuer, ConfigError> {
    if ri.issuer.is_empty() {
        return Err(invalid(format!("{at}.issuer"), "must not be empty"));
    }
    let source = match (&ri.jwks_uri, &ri.jwks_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(at, "set either jwks_uri or jwks_file, not both"));
        }
        (Some(u), None) => {
            let url = Url::parse(u).map_err(|e| {
                invalid(format!("{at}.jwks_uri"), format!("{u:?} is not a URL: {e}"))
            })?;
            check_fetch_url(&url, jwks.allow_insecure_http)
                .map_err(|m| invalid(format!("{at}.jwks_uri"), m))?;
            KeySource::JwksUri(url)
        }
        (None, Some(f)) => KeySource::File(f.clone()),
        (None, None) => {
            let url = Url::parse(&ri.issuer).map_err(|e| {
                invalid(
                    format!("{at}.issuer"),
                    format!("{:?} is not a URL, so its keys cannot be discovered ({e}); set jwks_uri or jwks_file", ri.issuer),
                )
            })?;
            check_fetch_url(&url, jwks.allow_insecure_http)
                .map_err(|m| invalid(format!("{at}.issuer"), m))?;
            KeySource::Discovery
        }
    };
    if ri.algorithms.is_empty() {
        return Err(invalid(
            format!("{at}.algorithms"),
            "at least one algorithm is required",
        ));
    }
    let mut algorithms = Vec::new();
    for (i, a) in ri.algorithms.iter().enumerate() {
        let alg = Alg::parse(a).ok_or_else(|| {
            invalid(
                format!("{at}.algorithms[{i}]"),
                format!(
                    "{a:?} is not supported (asymmetric only: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA MLDSA65 ML-DSA-44 ML-DSA-65 ML-DSA-87)"
                ),
            )
        })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    if ri.leeway_seconds > 300 {
        return Err(invalid(
            format!("{at}.leeway_seconds"),
            "must be at most 300",
        ));
    }
    match all.iter().find(|k| k.issuer == ri.issuer) {
        Some(existing) if existing.source != source => {
            return Err(invalid(
                at,
                format!(
                    "issuer {:?} is configured elsewhere with a different key source",
                    ri.issuer
                ),
            ));
        }
        Some(_) => {}
        None => all.push(IssuerKeysConfig {
            issuer: ri.issuer.clone(),
            source,
        }),
    }
    let scope_claims = claim_list(
        &format!("{at}.scope_claims"),
        &ri.scope_claims,
        ScopeClaim::parse,
        ScopeClaim::ALL.map(ScopeClaim::as_str),
    )?;
    let client_id_claims = claim_list(
        &format!("{at}.client_id_claims"),
        &ri.client_id_claims,
        ClientIdClaim::parse,
        ClientIdClaim::ALL.map(ClientIdClaim::as_str),
    )?;
    Ok(TrustedIssuer {
        issuer: ri.issuer,
        algorithms,
        leeway: Duration::from_secs(ri.leeway_seconds),
        extra_audiences: ri.extra_audiences,
        scope_claims,
        client_id_claims,
        introspection: ri
            .introspection
            .as_ref()
            .map(|raw| {
                validate_introspection(
                    &format!("{at}.introspection"),
                    raw,
                    jwks.allow_insecure_http,
                    check_timeout,
                )
            })
            .transpose()?,
    })
}

/// A non-empty list of claim names from a closed set, repeats dropped, order kept.
fn claim_list<C: PartialEq>(
    at: &str,
    names: &[String],
    parse: impl Fn(&str) -> Option<C>,
    known: [&str; 4],
) -> Result<Vec<C>, ConfigError> {
    if names.is_empty() {
        return Err(invalid(
            at,
            format!("list at least one of {}", known.join(" ")),
        ));
    }
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let c = parse(n).ok_or_else(|| {
            invalid(
                format!("{at}[{i}]"),
                format!(
                    "{n:?} is not a claim mcp-authz reads here (one of {})",
                    known.join(" ")
                ),
            )
        })?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
}

fn validate_route(at: &str, index: usize, rr: RawRoute) -> Result<Route, ConfigError> {
    let path = match (rr.path, rr.path_prefix) {
        (Some(p), None) => PathMatch::Exact(validate_path(&format!("{at}.path"), &p)?),
        (None, Some(p)) => PathMatch::Prefix(validate_path(&format!("{at}.path_prefix"), &p)?),
        (Some(_), Some(_)) => return Err(invalid(at, "set either path or path_prefix, not both")),
        (None, None) => return Err(invalid(at, "set path or path_prefix")),
    };
    let methods = match rr.methods {
        None => vec![],
        Some(m) if m.is_empty() => {
            return Err(invalid(
                format!("{at}.methods"),
                "an empty list matches nothing; omit it to match every method",
            ));
        }
        Some(m) => {
            let mut out = Vec::new();
            for (i, x) in m.iter().enumerate() {
                if x.is_empty() || !x.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(invalid(
                        format!("{at}.methods[{i}]"),
                        format!("{x:?} is not an HTTP method"),
                    ));
                }
                out.push(x.to_ascii_uppercase());
            }
            out
        }
    };
    let access = match (rr.public, rr.scopes) {
        (true, Some(_)) => return Err(invalid(at, "a public route cannot require scopes")),
        (true, None) => Access::Public,
        (false, Some(s)) => Access::Scopes(validate_scopes(&format!("{at}.scopes"), &s)?),
        (false, None) => {
            return Err(invalid(
                at,
                "set `scopes` (use [] for any valid token) or `public: true`",
            ));
        }
    };
    let mcp = match rr.mcp {
        None => None,
        Some(m) => {
            if matches!(access, Access::Public) {
                return Err(invalid(
                    format!("{at}.mcp"),
                    "a public route cannot have MCP rules",
                ));
            }
            if !methods.is_empty() && !methods.iter().any(|x| x == "POST") {
                return Err(invalid(
                    format!("{at}.mcp"),
                    "MCP rules apply to POST bodies, but this route does not match POST",
                ));
            }
            Some(validate_mcp(&format!("{at}.mcp"), m)?)
        }
    };
    Ok(Route {
        name: rr.name.unwrap_or_else(|| format!("route-{index}")),
        host: rr.host.map(|h| h.to_ascii_lowercase()),
        path,
        methods,
        access,
        mcp,
        introspect: rr.introspect,
    })
}

fn validate_rule(at: &str, r: &RawRule) -> Result<Rule, ConfigError> {
    match r {
        RawRule::Word(w) if w == "deny" => Ok(Rule::Deny),
        RawRule::Word(w) => Err(invalid(
            at,
            format!("{w:?}: expected a list of scopes or the word deny"),
        )),
        RawRule::Scopes(list) => Ok(Rule::Scopes(validate_scopes(at, list)?)),
    }
}

fn validate_rule_map(
    at: &str,
    m: &BTreeMap<String, RawRule>,
) -> Result<HashMap<String, Rule>, ConfigError> {
    let mut out = HashMap::new();
    for (k, v) in m {
        if k.is_empty() {
            return Err(invalid(at, "names must not be empty"));
        }
        out.insert(k.clone(), validate_rule(&format!("{at}.{k}"), v)?);
    }
    Ok(out)
}

fn validate_mcp(at: &str, m: RawMcpRules) -> Result<McpRules, ConfigError> {
    let methods = validate_rule_map(&format!("{at}.methods"), &m.methods)?;
    let default_of =
        |name: &str, given: &Option<RawRule>, listed: bool| -> Result<Rule, ConfigError> {
            match given {
                Some(r) => validate_rule(&format!("{at}.{name}"), r),
                None if listed => Ok(Rule::Deny),
                None => Ok(Rule::Scopes(Scopes::default())),
            }
        };
    let tools = validate_rule_map(&format!("{at}.tools"), &m.tools)?;
    let prompts = validate_rule_map(&format!("{at}.prompts"), &m.prompts)?;
    let mut resources: Vec<(String, Rule)> = Vec::new();
    for (k, rule) in validate_rule_map(&format!("{at}.resources"), &m.resources)? {
        // Rules match the canonical URI (normalize::canonical_resource_uri), so a prefix is
        // canonicalised the same way, or refused for what a request would be refused for.
        let canonical = crate::normalize::canonical_resource_uri(&k).map_err(|e| {
            invalid(
                format!("{at}.resources.{k}"),
                format!("{k:?} is not a usable resource URI prefix: {e}"),
            )
        })?;
        if let Some((_, _)) = resources.iter().find(|(c, _)| *c == canonical) {
            return Err(invalid(
                format!("{at}.resources.{k}"),
                format!("{k:?} is the same prefix as another entry once canonical ({canonical:?})"),
            ));
        }
        resources.push((canonical, rule));
    }
    resources.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    // Rules that can never apply are configuration mistakes.
    for (method, listed, field) in [
        (
            "tools/call",
            !tools.is_empty() || m.default_tool.is_some(),
            "tools",
        ),
        (
            "resources/read",
            !resources.is_empty() || m.default_resource.is_some(),
            "resources",
        ),
        (
            "prompts/get",
            !prompts.is_empty() || m.default_prompt.is_some(),
            "prompts",
        ),
    ] {
        if listed && methods.get(method) == Some(&Rule::Deny) {
            return Err(invalid(
                format!("{at}.{field}"),
                format!("unreachable: methods.{method} is deny, so these rules never apply"),
            ));
        }
    }
    let default_method = default_of("default_method", &m.default_method, false)?;
    if default_method == Rule::Deny {
        // MCP 2025-11-25 and earlier connect with initialize; 2026-07-28 with server/discover.
        for needed in ["initialize", "notifications/initialized", "server/discover"] {
            if !methods.contains_key(needed) {
                return Err(invalid(
                    format!("{at}.default_method"),
                    format!(
                        "deny would refuse {needed}, so no client could connect; list it under methods"
                    ),
                ));
            }
        }
    }
    Ok(McpRules {
        default_tool: default_of("default_tool", &m.default_tool, !tools.is_empty())?,
        default_resource: default_of(
            "default_resource",
            &m.default_resource,
            !resources.is_empty(),
        )?,
        default_prompt: default_of("default_prompt", &m.default_prompt, !prompts.is_empty())?,
        methods,
        default_method,
        tools,
        resources,
        prompts,
    })
}
