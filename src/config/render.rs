//! Validation of the `envoy:` and `istio:` sections, which only `mcp-authz render` reads
//! (listeners, timeouts, body limits, the mesh's names and selectors), and the bounds that tie
//! Envoy's body buffer to what the Check service decodes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::model::{EnvoySettings, IstioSettings, IstioWorkload, Resource};
use super::schema::{RawEnvoy, RawIstio, RawIstioWorkload};
use super::{ConfigError, invalid, parse_addr, parse_host_port};

pub(super) fn validate_envoy(
    e: &RawEnvoy,
    grpc: SocketAddr,
    max_body_bytes: usize,
) -> Result<EnvoySettings, ConfigError> {
    let admin = parse_addr("envoy.admin", &e.admin)?;
    if !admin.ip().is_loopback() {
        return Err(invalid(
            "envoy.admin",
            "Envoy's admin interface must bind to loopback",
        ));
    }
    let authz_address = match &e.authz_address {
        Some(a) => parse_host_port("envoy.authz_address", a)?,
        None if grpc.ip().is_unspecified() => ("127.0.0.1".to_owned(), grpc.port()),
        None => (grpc.ip().to_string(), grpc.port()),
    };
    if e.check_timeout_ms == 0 || e.check_timeout_ms > 10_000 {
        return Err(invalid(
            "envoy.check_timeout_ms",
            "must be between 1 and 10000",
        ));
    }
    let limit = u32::try_from(max_body_bytes)
        .ok()
        .filter(|l| *l < u32::MAX)
        .ok_or_else(|| invalid("limits.max_body_bytes", "must be below 4294967295"))?;
    if e.check_streams_per_connection == Some(0) {
        return Err(invalid(
            "envoy.check_streams_per_connection",
            "must be at least 1 (leave it out for Envoy's default)",
        ));
    }
    let buffered = e.max_request_bytes.unwrap_or(limit);
    if buffered < limit {
        return Err(invalid(
            "envoy.max_request_bytes",
            format!(
                "must be at least limits.max_body_bytes ({max_body_bytes}): Envoy would cut bodies mcp-authz accepts"
            ),
        ));
    }
    if !(1..=86_400).contains(&e.max_stream_seconds) {
        return Err(invalid(
            "envoy.max_stream_seconds",
            "must be between 1 and 86400",
        ));
    }
    // Envoy buffers one byte more than `buffered` (see below); the bound leaves ~1 MiB of the
    // 4 MiB decode limit for headers, so that byte fits.
    if buffered as usize > MAX_ENVOY_REQUEST_BYTES {
        return Err(invalid(
            "envoy.max_request_bytes",
            "must be at most 3145728 (3 MiB): the body travels inside a CheckRequest of at most 4 MiB, with headers",
        ));
    }
    if e.cors_allow_origins.is_empty() {
        return Err(invalid(
            "envoy.cors_allow_origins",
            "list at least one origin (\"*\" for any)",
        ));
    }
    Ok(EnvoySettings {
        listen: parse_addr("envoy.listen", &e.listen)?,
        admin,
        authz_address,
        check_timeout: Duration::from_millis(e.check_timeout_ms),
        check_streams_per_connection: e.check_streams_per_connection,
        // Envoy reports a body cut at exactly `max_request_bytes` as complete
        // (`x-envoy-auth-partial-body: false`) when more follows; one byte over the limit
        // mcp-authz enforces makes every cut body longer than that limit, so it is refused
        // (413) instead of judged on a complete-looking prefix.
        max_request_bytes: buffered.saturating_add(1),
        max_stream: Duration::from_secs(e.max_stream_seconds),
        escaped_slashes: e.escaped_slashes,
        cors_allow_origins: e.cors_allow_origins.clone(),
        access_log: e.access_log,
    })
}

/// Largest `envoy.max_request_bytes`: the buffered body travels inside the CheckRequest,
/// which mcp-authz decodes up to [`MAX_CHECK_MESSAGE_BYTES`] (4 MiB); 1 MiB is left for
/// the headers (Envoy's `max_request_headers_kb` is 60 KiB by default, at most 8 MiB) and the
/// rest of the message. A larger request is denied (`undecodable_request`), never an error.
pub const MAX_ENVOY_REQUEST_BYTES: usize = MAX_CHECK_MESSAGE_BYTES - (1 << 20);

/// Largest CheckRequest the service decodes (tonic's default, made explicit so
/// [`MAX_ENVOY_REQUEST_BYTES`] can be derived from it). Larger ones are denied.
pub const MAX_CHECK_MESSAGE_BYTES: usize = 4 << 20;

/// RFC 1123 label as Kubernetes names namespaces and Services: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 bytes.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes label name or value: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63.
fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

pub(super) fn validate_istio(
    raw: RawIstio,
    grpc: SocketAddr,
    resources: &[Resource],
) -> Result<IstioSettings, ConfigError> {
    // Istio's provider name is free text, but it is also written into AuthorizationPolicies
    // and shell commands: keep it to a label-like charset. `render istio` adds `-body` for the
    // provider that sends request bodies.
    if !is_label_name(&raw.provider) || !is_label_name(&format!("{}-body", raw.provider)) {
        return Err(invalid(
            "istio.provider",
            format!(
                "{:?} must use letters, digits, '-', '_' and '.' (at most 58, so that its \
                 `-body` variant fits in 63)",
                raw.provider
            ),
        ));
    }
    for (at, v) in [
        ("istio.namespace", &raw.namespace),
        ("istio.service", &raw.service),
    ] {
        if !is_dns_label(v) {
            return Err(invalid(
                at,
                format!("{v:?} is not a Kubernetes name (lowercase letters, digits, '-')"),
            ));
        }
    }
    if !is_dns_subdomain(&raw.cluster_domain) {
        return Err(invalid(
            "istio.cluster_domain",
            format!("{:?} is not a DNS domain", raw.cluster_domain),
        ));
    }
    if !crate::mesh::is_trust_domain(&raw.trust_domain) {
        return Err(invalid(
            "istio.trust_domain",
            format!(
                "{:?} is not a SPIFFE trust domain (lower-case letters, digits, '.', '-', '_')",
                raw.trust_domain
            ),
        ));
    }
    let port = match raw.port {
        Some(0) => return Err(invalid("istio.port", "must not be 0")),
        Some(p) => p,
        None => grpc.port(),
    };
    let mut gateways = Vec::new();
    for (i, g) in raw.gateways.iter().enumerate() {
        let ok = match g.split_once('/') {
            Some((ns, name)) => is_dns_label(ns) && is_dns_subdomain(name),
            None => false,
        };
        if !ok {
            return Err(invalid(
                format!("istio.gateways[{i}]"),
                format!(
                    "{g:?} is not namespace/name of a Gateway (`mesh` is always added; do not list it)"
                ),
            ));
        }
        if gateways.contains(g) {
            return Err(invalid(
                format!("istio.gateways[{i}]"),
                format!("{g:?} is listed twice"),
            ));
        }
        gateways.push(g.clone());
    }
    let mut workloads = BTreeMap::new();
    for (id, w) in raw.workloads {
        let at = format!("istio.workloads.{id}");
        if !resources.iter().any(|r| r.id == id) {
            return Err(invalid(&at, format!("no resource has the id {id:?}")));
        }
        if !is_dns_label(&w.namespace) {
            return Err(invalid(
                format!("{at}.namespace"),
                format!("{:?} is not a Kubernetes namespace name", w.namespace),
            ));
        }
        if w.selector.is_empty() {
            // An empty selector would put ext_authz in front of every pod of the namespace.
            return Err(invalid(
                format!("{at}.selector"),
                "name at least one label of the MCP server's pods",
            ));
        }
        for (k, v) in &w.selector {
            let (prefix, name) = match k.rsplit_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, k.as_str()),
            };
            if !is_label_name(name) || prefix.is_some_and(|p| !is_dns_subdomain(p)) {
                return Err(invalid(
                    format!("{at}.selector"),
                    format!("{k:?} is not a Kubernetes label key"),
                ));
            }
            if !v.is_empty() && !is_label_name(v) {
                return Err(invalid(
                    format!("{at}.selector.{k}"),
                    format!("{v:?} is not a Kubernetes label value"),
                ));
            }
        }
        let destination = parse_host_port(&format!("{at}.destination"), &w.destination)?;
        if destination.0.parse::<std::net::IpAddr>().is_ok() || !is_dns_subdomain(&destination.0) {
            return Err(invalid(
                format!("{at}.destination"),
                format!(
                    "{:?} must name a Service, e.g. files-mcp.mcp.svc.cluster.local:8080",
                    w.destination
                ),
            ));
        }
        let principals = workload_principals(&at, &raw.trust_domain, &w, &workloads)?;
        workloads.insert(
            id,
            IstioWorkload {
                namespace: w.namespace,
                selector: w.selector,
                destination,
                principals,
            },
        );
    }
    Ok(IstioSettings {
        provider: raw.provider,
        service_host: format!(
            "{}.{}.svc.{}",
            raw.service, raw.namespace, raw.cluster_domain
        ),
        port,
        gateways,
        workloads,
        trust_domain: raw.trust_domain,
    })
}

/// The SPIFFE ids `istio.workloads.<id>` is bound to: its service account's Istio identity,
/// then `principals`. Each id is well formed and bound to one resource only: the destination
/// principal must tell the resource apart (`mesh.rs`), so resources served by the same pods
/// cannot be bound.
fn workload_principals(
    at: &str,
    trust_domain: &str,
    w: &RawIstioWorkload,
    earlier: &BTreeMap<String, IstioWorkload>,
) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    if let Some(sa) = &w.service_account {
        // Kubernetes ServiceAccount names are DNS subdomains.
        if !is_dns_subdomain(sa) {
            return Err(invalid(
                format!("{at}.service_account"),
                format!("{sa:?} is not a Kubernetes ServiceAccount name"),
            ));
        }
        out.push(crate::mesh::istio_spiffe_id(trust_domain, &w.namespace, sa));
    }
    for (i, p) in w.principals.iter().enumerate() {
        let here = format!("{at}.principals[{i}]");
        if let Some(why) = crate::mesh::spiffe_id_error(p) {
            return Err(invalid(here, format!("{p:?} {why}")));
        }
        if out.contains(p) {
            return Err(invalid(
                here,
                format!("{p:?} is listed twice (or is the service account's own id)"),
            ));
        }
        out.push(p.clone());
    }
    for p in &out {
        if let Some((other, _)) = earlier.iter().find(|(_, o)| o.principals.contains(p)) {
            return Err(invalid(
                at,
                format!(
                    "{p:?} is already bound to resource {other:?}: a workload identity must name                      one resource (resources served by the same pods cannot be bound; leave                      service_account and principals off both)"
                ),
            ));
        }
    }
    Ok(out)
}
