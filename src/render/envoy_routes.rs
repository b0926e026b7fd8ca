//! The Envoy route table `render envoy` emits per virtual host: the PRM documents by
//! `direct_response` (with their static CORS answer), each resource's and route's paths to the
//! MCP server with the per-route ext_authz settings (resource name, body buffering, preflight
//! marker), the 404 catch-alls that keep every other path from the upstream, and the CORS
//! policies.

use super::{
    CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, CORS_EXPOSE_HEADERS, CORS_MAX_AGE, Origins,
    PRM_CACHE_CONTROL, PRM_CORS_ALLOW_METHODS, RenderError, RouteOwners, inspects_body, obj,
    prm_json, seq,
};
use crate::config::{
    IDENTITY_CONTEXT_KEY, IDENTITY_STRIPPED_BY_PROXY, PREFLIGHT_CONTEXT_KEY, PREFLIGHTS_BY_PROXY,
    PathMatch, RESOURCE_CONTEXT_KEY, Resource,
};
use crate::normalize::segment_prefix;
use serde_yaml::Value;

pub(super) fn virtual_host(
    host: &str,
    resources: &[&Resource],
    origins: &Origins,
    cors: &Value,
    max_request_bytes: u32,
) -> Result<Value, RenderError> {
    let mut routes = Vec::new();
    let mut owners = RouteOwners::new(host);
    let mut check = |key: String, id: &str| owners.claim(key, id);

    // (a) RFC 9728 §3.1: the path-suffixed well-known URL, which clients try first.
    for r in resources {
        check(r.prm_paths[0].clone(), &r.id)?;
        routes.extend(prm_routes(
            r,
            &r.prm_paths[0],
            &format!("prm_{}", r.id),
            origins,
        ));
    }
    // (b) The root well-known URL, which older clients try next. It can describe only one
    // resource: the one at `/` if the host has one (its path-suffixed URL *is* the root, added
    // above), otherwise the first resource configured on the host. Clients of the others find
    // their PRM through the path-suffixed URL or the 401's `resource_metadata`.
    if let Some(first) = resources.first()
        && !resources.iter().any(|r| r.path == "/")
    {
        check(first.prm_paths[1].clone(), &first.id)?;
        routes.extend(prm_routes(
            first,
            &first.prm_paths[1],
            &format!("prm_root_{}", first.id),
            origins,
        ));
    }
    // (c) The MCP endpoints, most specific path first so `/a/b` is not shadowed by `/a`.
    let mut by_specificity: Vec<&Resource> = resources.to_vec();
    by_specificity.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
    for r in &by_specificity {
        check(format!("{} (prefix)", r.path), &r.id)?;
        let matcher = if r.path == "/" {
            obj([("prefix", "/".into())])
        } else {
            // `/mcp` and `/mcp/...`, never `/mcpx`: the same segment-boundary rule as the
            // policy's `path_prefix` (Envoy RouteMatch.path_separated_prefix).
            obj([("path_separated_prefix", r.path.as_str().into())])
        };
        routes.push(upstream_route(
            format!("mcp_{}", r.id),
            matcher,
            r,
            max_request_bytes,
        ));
    }
    // (c') The paths the policy's routes name outside their resource's path (a public
    // `/health`, an `/admin` route): these go to the resource's MCP server too, exact paths
    // exactly, prefixes on segment boundaries, longest first. Nothing else reaches it.
    let mut extra: Vec<(&Resource, &PathMatch)> = Vec::new();
    for r in resources {
        for route in &r.routes {
            let p = match &route.path {
                PathMatch::Exact(p) | PathMatch::Prefix(p) => p,
            };
            if !segment_prefix(&r.path, p) && !extra.iter().any(|(_, m)| same_match(m, &route.path))
            {
                extra.push((r, &route.path));
            }
        }
    }
    extra.sort_by_key(|(_, m)| {
        let (PathMatch::Exact(p) | PathMatch::Prefix(p)) = m;
        (
            std::cmp::Reverse(p.len()),
            matches!(m, PathMatch::Prefix(_)),
        )
    });
    for (i, (r, m)) in extra.iter().enumerate() {
        let (key, matcher) = match m {
            PathMatch::Exact(p) => (p.clone(), obj([("path", p.as_str().into())])),
            PathMatch::Prefix(p) if p == "/" => {
                (format!("{p} (prefix)"), obj([("prefix", "/".into())]))
            }
            PathMatch::Prefix(p) => (
                format!("{p} (prefix)"),
                obj([("path_separated_prefix", p.trim_end_matches('/').into())]),
            ),
        };
        check(key, &r.id)?;
        routes.push(upstream_route(
            format!("route_{}_{i}", r.id),
            matcher,
            r,
            max_request_bytes,
        ));
    }
    // (d) Everything else on this host is still decided by mcp-authz, on behalf of the first
    // resource, so under default-deny an unknown path gets mcp-authz's 403 JSON (one answer
    // shape, every request counted) — but it never reaches an MCP server: an allowed request
    // (`default_scopes`) gets Envoy's 404. A case-insensitive router (Express) would otherwise
    // serve `/MCP` or `/mcp/` from the MCP handler under the default's weaker scopes.
    // A resource at `/` already is the catch-all.
    if let Some(first) = resources.first()
        && !resources.iter().any(|r| r.path == "/")
        && !extra
            .iter()
            .any(|(_, m)| matches!(m, PathMatch::Prefix(p) if p == "/"))
    {
        routes.push(not_found_route(format!("default_{}", first.id), first));
    }

    Ok(obj([
        ("name", host.into()),
        // `:authority` carries a port unless it is the scheme default; `host:*` matches any
        // port (Envoy VirtualHost.domains prefix wildcard). No `*` domain: other hosts get
        // Envoy's 404 and never reach an MCP server.
        ("domains", seq([host.into(), format!("{host}:*").into()])),
        ("routes", Value::Sequence(routes)),
        (
            "typed_per_filter_config",
            obj([(CORS_FILTER, cors.clone())]),
        ),
    ]))
}

/// The public PRM answer (RFC 9728 §3.2: 200, application/json) for `path`, served by Envoy.
///
/// Envoy's CORS filter skips routes without a route entry, and a `direct_response` route has
/// none (cors_filter.cc, `decodeHeaders`), so the PRM's CORS headers are static here: `*` when
/// any origin is allowed, else one route per allowed origin (matched on the `Origin` header)
/// and a last route without CORS headers. The same response answers the preflight (MCP SDKs
/// send `MCP-Protocol-Version` on discovery, which makes the browser preflight); browsers
/// ignore a preflight's body and a simple response's `allow-methods`/`allow-headers`.
fn prm_routes(r: &Resource, path: &str, name: &str, origins: &Origins) -> Vec<Value> {
    let body = prm_json(r);
    let route = |name: String, origin: Option<&str>, cors: Option<&str>| {
        let mut m = vec![("path", path.into())];
        if let Some(o) = origin {
            m.push((
                "headers",
                seq([obj([
                    ("name", "origin".into()),
                    ("string_match", obj([("exact", o.into())])),
                ])]),
            ));
        }
        let mut headers = vec![
            // Envoy labels a direct_response body text/plain unless overwritten.
            header("content-type", "application/json"),
            header("cache-control", PRM_CACHE_CONTROL),
        ];
        if let Some(allow) = cors {
            headers.extend([
                header("access-control-allow-origin", allow),
                header("access-control-allow-methods", PRM_CORS_ALLOW_METHODS),
                header("access-control-allow-headers", CORS_ALLOW_HEADERS),
                header("access-control-max-age", CORS_MAX_AGE),
            ]);
        }
        if matches!(origins, Origins::List(_)) {
            // The answer depends on Origin, so shared caches must key on it.
            headers.push(header("vary", "Origin"));
        }
        obj([
            ("name", name.into()),
            ("match", obj(m)),
            (
                "direct_response",
                obj([
                    ("status", 200u16.into()),
                    ("body", obj([("inline_string", body.as_str().into())])),
                ]),
            ),
            ("response_headers_to_add", Value::Sequence(headers)),
            // Discovery must work without a token (RFC 9728 §3; MCP authorization, "Protected
            // Resource Metadata Discovery").
            (
                "typed_per_filter_config",
                obj([(
                    EXT_AUTHZ_FILTER,
                    obj([
                        ("@type", EXT_AUTHZ_PER_ROUTE.into()),
                        ("disabled", true.into()),
                    ]),
                )]),
            ),
        ])
    };
    match origins {
        Origins::Any => vec![route(name.to_owned(), None, Some("*"))],
        Origins::List(list) => {
            let mut v: Vec<Value> = list
                .iter()
                .enumerate()
                .map(|(i, o)| route(format!("{name}_cors_{i}"), Some(o), Some(o)))
                .collect();
            v.push(route(name.to_owned(), None, None));
            v
        }
    }
}

const EXT_AUTHZ_PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";

/// A route to `r`'s MCP server behind ext_authz, which learns the resource from
/// `context_extensions` (ExtAuthzPerRoute.check_settings).
fn upstream_route(name: String, matcher: Value, r: &Resource, max_request_bytes: u32) -> Value {
    let mut check_settings = vec![(
        "context_extensions",
        obj([
            (RESOURCE_CONTEXT_KEY, r.id.as_str().into()),
            // The CORS filter runs first and answers every preflight (`cors_policy`), so an
            // `OPTIONS` reaching mcp-authz here is an ordinary request (Fetch §4.8).
            (PREFLIGHT_CONTEXT_KEY, PREFLIGHTS_BY_PROXY.into()),
            // The listener strips client copies of the reserved identity headers before
            // any filter (`envoy::identity_stripping`): the allow answer only sets.
            (IDENTITY_CONTEXT_KEY, IDENTITY_STRIPPED_BY_PROXY.into()),
        ]),
    )];
    // The JSON-RPC body (method, tool name) is part of the decision only where the policy has
    // MCP rules; elsewhere Envoy neither buffers it nor copies it into the Check. The filter
    // asks for the body as raw bytes (`envoy::http_filters`): Envoy takes `pack_as_bytes`
    // only from there (envoyproxy/envoy#35623), and as a UTF-8 string it would replace bytes
    // that are not UTF-8, so mcp-authz would judge another body than the MCP server receives;
    // as bytes, such a body is refused (RFC 8259 §8.1). The route repeats the settings and
    // routes without MCP rules turn buffering off. A body over the cap arrives cut and marked
    // `x-envoy-auth-partial-body: true`, which mcp-authz refuses with 413.
    if inspects_body(r) {
        check_settings.push(("with_request_body", body_settings(max_request_bytes)));
    } else {
        check_settings.push(("disable_request_body_buffering", true.into()));
    }
    obj([
        ("name", name.into()),
        ("match", matcher),
        (
            "route",
            obj([
                ("cluster", cluster_name(r).into()),
                // SSE streams and long tool calls: no upstream deadline; idle streams are
                // bounded by the HCM's stream_idle_timeout.
                ("timeout", "0s".into()),
            ]),
        ),
        (
            "typed_per_filter_config",
            obj([(
                EXT_AUTHZ_FILTER,
                obj([
                    ("@type", EXT_AUTHZ_PER_ROUTE.into()),
                    ("check_settings", obj(check_settings)),
                ]),
            )]),
        ),
    ])
}

/// How Envoy buffers a body for the Check: up to `max_request_bytes`, cut and marked beyond,
/// as raw bytes.
pub(super) fn body_settings(max_request_bytes: u32) -> Value {
    obj([
        ("max_request_bytes", max_request_bytes.into()),
        ("allow_partial_message", true.into()),
        ("pack_as_bytes", true.into()),
    ])
}

/// Decided by mcp-authz for `r` (its 401/403 JSON), then answered 404 by Envoy itself: the
/// path is none of the resource's nor any route's, so no MCP server is asked to serve it.
fn not_found_route(name: String, r: &Resource) -> Value {
    obj([
        ("name", name.into()),
        ("match", obj([("prefix", "/".into())])),
        (
            "direct_response",
            obj([
                ("status", 404u16.into()),
                (
                    "body",
                    obj([(
                        "inline_string",
                        r#"{"error":"not_found","message":"No MCP endpoint at this path"}"#.into(),
                    )]),
                ),
            ]),
        ),
        (
            "response_headers_to_add",
            seq([header("content-type", "application/json")]),
        ),
        (
            "typed_per_filter_config",
            obj([(
                EXT_AUTHZ_FILTER,
                obj([
                    ("@type", EXT_AUTHZ_PER_ROUTE.into()),
                    (
                        "check_settings",
                        obj([
                            (
                                "context_extensions",
                                obj([
                                    (RESOURCE_CONTEXT_KEY, r.id.as_str().into()),
                                    (IDENTITY_CONTEXT_KEY, IDENTITY_STRIPPED_BY_PROXY.into()),
                                ]),
                            ),
                            ("disable_request_body_buffering", true.into()),
                        ]),
                    ),
                ]),
            )]),
        ),
    ])
}

fn same_match(a: &PathMatch, b: &PathMatch) -> bool {
    match (a, b) {
        (PathMatch::Exact(x), PathMatch::Exact(y))
        | (PathMatch::Prefix(x), PathMatch::Prefix(y)) => x == y,
        _ => false,
    }
}

fn header(key: &str, value: &str) -> Value {
    obj([
        (
            "header",
            obj([("key", key.into()), ("value", value.into())]),
        ),
        ("append_action", "OVERWRITE_IF_EXISTS_OR_ADD".into()),
    ])
}

/// `envoy.extensions.filters.http.cors.v3.CorsPolicy` for every virtual host (applies to the
/// MCP routes and the catch-all; see [`prm_routes`] for the PRM).
pub(super) fn cors_policy(origins: &Origins) -> Value {
    let matchers = match origins {
        // StringMatcher.prefix must be non-empty, so "any origin" is a regex. The filter then
        // echoes the request's Origin (no credentials are ever allowed).
        Origins::Any => vec![obj([("safe_regex", obj([("regex", ".*".into())]))])],
        Origins::List(list) => list
            .iter()
            .map(|o| obj([("exact", o.as_str().into())]))
            .collect(),
    };
    obj([
        (
            "@type",
            "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy".into(),
        ),
        ("allow_origin_string_match", Value::Sequence(matchers)),
        ("allow_methods", CORS_ALLOW_METHODS.into()),
        ("allow_headers", CORS_ALLOW_HEADERS.into()),
        ("expose_headers", CORS_EXPOSE_HEADERS.into()),
        ("max_age", CORS_MAX_AGE.into()),
        // A preflight from an origin not listed is answered by Envoy (without CORS headers,
        // so the browser refuses) rather than forwarded to ext_authz and the MCP server.
        ("forward_not_matching_preflights", false.into()),
    ])
}

pub(super) const EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";
pub(super) const CORS_FILTER: &str = "envoy.filters.http.cors";

pub(super) fn cluster_name(r: &Resource) -> String {
    format!("upstream_{}", r.id)
}
