//! Renders what the proxy in front of mcp-authz serves, from the one validated
//! [`Config`](crate::config::Config): the RFC 9728 Protected Resource Metadata documents
//! (here), a complete Envoy v3 bootstrap ([`envoy`]) and the Istio mesh configuration
//! ([`istio`]), so the public PRM answers, the routes and the ext_authz wiring can never drift
//! from the policy.

use std::time::Duration;

use serde::Serialize;
use serde_yaml::{Mapping, Value};
use url::Url;

use crate::config::Resource;

pub mod envoy;
mod envoy_routes;
pub mod istio;

pub use envoy::{AUTHZ_CLUSTER, EnvoyOptions, envoy_bootstrap};

pub(crate) const CORS_ALLOW_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Request headers MCP clients send (Streamable HTTP, 2025-06-18 .. 2026-07-28).
pub(crate) const CORS_ALLOW_HEADERS: &str = "authorization, content-type, mcp-protocol-version, mcp-session-id, last-event-id, mcp-method, mcp-name, dpop";
/// Browser clients must read the challenge (RFC 9728 §5.1 `resource_metadata`) and the session.
pub(crate) const CORS_EXPOSE_HEADERS: &str = "WWW-Authenticate, Mcp-Session-Id";
pub(crate) const CORS_MAX_AGE: &str = "86400";
pub(crate) const PRM_CORS_ALLOW_METHODS: &str = "GET, OPTIONS";
pub(crate) const PRM_CACHE_CONTROL: &str = "max-age=300";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "resource {id:?} has no upstream: set resources[].upstream or pass an upstream override"
    )]
    MissingUpstream { id: String },
    #[error("upstream override names unknown resource {id:?}")]
    UnknownResource { id: String },
    #[error(
        "resources {first:?} and {second:?} both need the route {path:?} on host {host:?}; give them different hosts or paths"
    )]
    RouteConflict {
        host: String,
        path: String,
        first: String,
        second: String,
    },
    #[error(
        "envoy.cors_allow_origins: {origin:?} is not \"*\" or an origin like \"https://app.example.com\" (scheme, host, optional non-default port; no path, no wildcard)"
    )]
    CorsOrigin { origin: String },
    #[error(
        "resource {id:?} has no Istio workload: add istio.workloads.{id} (namespace, selector, destination)"
    )]
    MissingWorkload { id: String },
    #[error(
        "resource id {id:?} does not make a Kubernetes object name ({name:?}): use lowercase letters, digits and '-'"
    )]
    IstioName { id: String, name: String },
    #[error(
        "resources {first:?} and {second:?} both make the Kubernetes object name {name:?}; rename one"
    )]
    IstioNameConflict {
        name: String,
        first: String,
        second: String,
    },
    #[error(
        "resource host {host:?} is an IP address; a VirtualService needs the DNS name clients use"
    )]
    IstioHost { host: String },
    #[error(
        "the PRM of resource {id:?} is {len} bytes, over the {limit}-byte direct-response limit a VirtualService cannot raise; shorten scopes_supported, name or documentation"
    )]
    PrmTooLarge {
        id: String,
        len: usize,
        limit: usize,
    },
    #[error(
        "sessions: binding MCP sessions needs Envoy's ext_proc filter, which the Istio render does not install (it would take an EnvoyFilter); remove `sessions:` for the mesh and have the MCP server bind sessions to x-mcp-authz-subject / x-mcp-authz-client-id (README, Sessions)"
    )]
    IstioSessions,
    #[error("cannot serialize the Envoy bootstrap: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

// ---------------------------------------------------------------------------
// Protected Resource Metadata (RFC 9728 §2, §3.2)
// ---------------------------------------------------------------------------

/// The PRM document in a fixed field order; fields without values are omitted (RFC 9728 §3.2).
#[derive(Serialize)]
struct Prm<'a> {
    /// RFC 9728 §3.3: must equal the resource identifier byte for byte, so it comes from the
    /// configuration, never from the request's Host.
    resource: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    authorization_servers: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    scopes_supported: &'a [String],
    /// The token is accepted only in the Authorization header (RFC 6750 §2.1; MCP forbids
    /// the query string).
    bearer_methods_supported: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_documentation: Option<&'a str>,
}

/// The RFC 9728 Protected Resource Metadata document of `resource`, as compact JSON.
pub fn prm_json(resource: &Resource) -> String {
    fn non_empty(s: &Option<String>) -> Option<&str> {
        s.as_deref().filter(|s| !s.is_empty())
    }
    let prm = Prm {
        resource: &resource.uri,
        authorization_servers: &resource.authorization_servers,
        scopes_supported: &resource.scopes_supported,
        bearer_methods_supported: ["header"],
        resource_name: non_empty(&resource.name),
        resource_documentation: non_empty(&resource.documentation),
    };
    // Only strings and string slices: serde_json cannot fail on them.
    serde_json::to_string(&prm).expect("PRM document serializes")
}

/// Resources grouped by host, in configuration order (hosts by first appearance).
/// Whether mcp-authz needs `r`'s request bodies: only when its policy has MCP rules (the
/// JSON-RPC method, tool, resource or prompt name are part of the decision).
pub(crate) fn inspects_body(r: &Resource) -> bool {
    r.routes.iter().any(|route| route.mcp.is_some())
}

pub(crate) fn group_by_host(resources: &[Resource]) -> Vec<(&str, Vec<&Resource>)> {
    let mut out: Vec<(&str, Vec<&Resource>)> = Vec::new();
    for r in resources {
        match out.iter_mut().find(|(h, _)| *h == r.host) {
            Some((_, list)) => list.push(r),
            None => out.push((&r.host, vec![r])),
        }
    }
    out
}

/// `envoy.cors_allow_origins`, checked.
pub(crate) enum Origins {
    Any,
    List(Vec<String>),
}

impl Origins {
    pub(crate) fn parse(origins: &[String]) -> Result<Origins, RenderError> {
        if origins.iter().any(|o| o == "*") {
            return Ok(Origins::Any);
        }
        for o in origins {
            // A browser's Origin is exactly scheme://host[:port] (RFC 6454 §6.2); anything
            // else could never match, so refuse it instead of rendering a dead rule.
            // Envoy matches exactly here; a wildcard would silently never match.
            let ok = !o.contains('*')
                && Url::parse(o)
                    .ok()
                    .filter(|u| u.origin().is_tuple())
                    .is_some_and(|u| u.origin().ascii_serialization() == *o);
            if !ok {
                return Err(RenderError::CorsOrigin { origin: o.clone() });
            }
        }
        Ok(Origins::List(origins.to_vec()))
    }
}

/// protobuf Duration JSON form (`1s`, `0.5s`).
pub(crate) fn duration(d: Duration) -> String {
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    if nanos == 0 {
        format!("{secs}s")
    } else {
        let frac = format!("{nanos:09}");
        format!("{secs}.{}s", frac.trim_end_matches('0'))
    }
}

/// An ordered YAML mapping (serde_yaml keeps insertion order; serde_json here would not).
pub(crate) fn obj<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Mapping(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect::<Mapping>(),
    )
}

pub(crate) fn seq(items: impl IntoIterator<Item = Value>) -> Value {
    Value::Sequence(items.into_iter().collect())
}

/// Every route key on one host (an exact PRM path, or an MCP prefix) belongs to one resource:
/// two resources differing only in scheme or port would otherwise shadow each other, in the
/// Envoy render and the Istio one alike.
pub(crate) struct RouteOwners<'h> {
    host: &'h str,
    owners: Vec<(String, String)>,
}

impl<'h> RouteOwners<'h> {
    pub(crate) fn new(host: &'h str) -> Self {
        RouteOwners {
            host,
            owners: Vec::new(),
        }
    }

    /// Give `key` to resource `id`, or refuse if another resource has it.
    pub(crate) fn claim(&mut self, key: String, id: &str) -> Result<(), RenderError> {
        if let Some((_, first)) = self.owners.iter().find(|(k, _)| *k == key) {
            return Err(RenderError::RouteConflict {
                host: self.host.to_owned(),
                path: key,
                first: first.clone(),
                second: id.to_owned(),
            });
        }
        self.owners.push((key, id.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const ONE: &str = r#"
resources:
  - id: files
    uri: https://mcp.example.com/mcp
    name: My Files MCP Server
    documentation: https://mcp.example.com/docs
    scopes_supported: [files:list, files:read]
    issuers: [{issuer: https://iam.example.com}]
"#;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml).expect("test config is valid")
    }

    #[test]
    fn prm_has_fixed_field_order() {
        let c = config(ONE);
        assert_eq!(
            prm_json(&c.resources[0]),
            r#"{"resource":"https://mcp.example.com/mcp","authorization_servers":["https://iam.example.com"],"scopes_supported":["files:list","files:read"],"bearer_methods_supported":["header"],"resource_name":"My Files MCP Server","resource_documentation":"https://mcp.example.com/docs"}"#
        );
    }

    #[test]
    fn prm_omits_fields_without_values() {
        // The default route requires no particular scope, so scopes_supported is empty.
        let c = config(
            "resources:\n  - id: a\n    uri: http://127.0.0.1:10000/mcp\n    issuers: [{issuer: https://iam.example.com}]\n",
        );
        assert_eq!(
            prm_json(&c.resources[0]),
            r#"{"resource":"http://127.0.0.1:10000/mcp","authorization_servers":["https://iam.example.com"],"bearer_methods_supported":["header"]}"#
        );
    }

    #[test]
    fn durations_use_protobuf_json_form() {
        assert_eq!(duration(Duration::from_secs(2)), "2s");
        assert_eq!(duration(Duration::from_millis(500)), "0.5s");
        assert_eq!(duration(Duration::from_millis(1250)), "1.25s");
        assert_eq!(duration(Duration::from_nanos(1)), "0.000000001s");
    }
}
