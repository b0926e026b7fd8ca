//! Validation of the server-wide settings (listeners, workers, limits, JWKS timing, identity
//! headers, the session key) and the assembly of the whole model from the schema; resources
//! are validated in `resources.rs`, the Envoy and Istio sections in `render.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use super::model::{Config, IdentityHeaders, IssuerKeysConfig, JwksSettings, Resource};
use super::render::{validate_envoy, validate_istio};
use super::resources::validate_resource;
use super::schema::{
    DEFAULT_IDENTITY_HEADERS, MAX_WORKERS, MAX_WORKERS_U64, RawConfig, RawIdentity, RawJwks,
    RawSessions,
};
use super::{ConfigError, invalid, parse_addr};

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let grpc_addr = parse_addr("listen.grpc", &raw.listen.grpc)?;
        let admin_addr = parse_addr("listen.admin", &raw.listen.admin)?;
        let workers = match raw.listen.workers {
            // available_parallelism honours the cgroup CPU quota (a Kubernetes CPU limit).
            None => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)),
            Some(n @ 1..=MAX_WORKERS_U64) => n as usize,
            Some(_) => {
                return Err(invalid(
                    "listen.workers",
                    format!("must be between 1 and {MAX_WORKERS}"),
                ));
            }
        };
        let jwks = validate_jwks(&raw.jwks)?;
        if raw.limits.max_token_bytes < 64 {
            return Err(invalid("limits.max_token_bytes", "must be at least 64"));
        }
        if raw.limits.max_body_bytes < 1024 {
            return Err(invalid("limits.max_body_bytes", "must be at least 1024"));
        }
        if !(2..=512).contains(&raw.limits.max_json_depth) {
            return Err(invalid(
                "limits.max_json_depth",
                "must be between 2 and 512",
            ));
        }
        if raw.resources.is_empty() {
            return Err(invalid("resources", "at least one resource is required"));
        }
        let envoy = validate_envoy(&raw.envoy, grpc_addr, raw.limits.max_body_bytes)?;
        let mut resources = Vec::with_capacity(raw.resources.len());
        let mut issuers: Vec<IssuerKeysConfig> = Vec::new();
        for (i, r) in raw.resources.into_iter().enumerate() {
            let at = format!("resources[{i}]");
            let resource = validate_resource(&at, r, &jwks, &mut issuers, envoy.check_timeout)?;
            if resources.iter().any(|o: &Resource| o.id == resource.id) {
                return Err(invalid(
                    format!("{at}.id"),
                    format!("duplicate resource id {:?}", resource.id),
                ));
            }
            if resources.iter().any(|o: &Resource| o.uri == resource.uri) {
                return Err(invalid(
                    format!("{at}.uri"),
                    format!("duplicate resource uri {:?}", resource.uri),
                ));
            }
            resources.push(resource);
        }
        super::introspection_check::check_resources(&resources)?;
        let identity = validate_identity(&raw.identity, &resources, envoy.access_log)?;
        let istio = validate_istio(raw.istio, grpc_addr, &resources)?;
        let sessions = raw.sessions.as_ref().map(validate_sessions).transpose()?;
        Ok(Config {
            grpc_addr,
            workers,
            admin_addr,
            jwks,
            identity,
            max_token_bytes: raw.limits.max_token_bytes,
            max_body_bytes: raw.limits.max_body_bytes,
            max_json_depth: raw.limits.max_json_depth,
            token_cache_entries: raw.limits.token_cache_entries,
            resources,
            issuers,
            envoy,
            istio,
            sessions,
        })
    }
}

fn validate_sessions(s: &RawSessions) -> Result<crate::session::SessionKey, ConfigError> {
    use crate::session::SessionKey;
    match (&s.key_file, &s.key_env) {
        (Some(path), None) => {
            SessionKey::from_file(path).map_err(|e| invalid("sessions.key_file", e))
        }
        (None, Some(var)) => SessionKey::from_env(var).map_err(|e| invalid("sessions.key_env", e)),
        _ => Err(invalid(
            "sessions",
            "set exactly one of key_file and key_env",
        )),
    }
}

fn validate_jwks(j: &RawJwks) -> Result<JwksSettings, ConfigError> {
    let nonzero = |name: &str, v: u64| {
        if v == 0 {
            Err(invalid(format!("jwks.{name}"), "must be greater than 0"))
        } else {
            Ok(Duration::from_secs(v))
        }
    };
    let s = JwksSettings {
        refresh: nonzero("refresh_seconds", j.refresh_seconds)?,
        min_refresh: nonzero("min_refresh_seconds", j.min_refresh_seconds)?,
        max_refresh: nonzero("max_refresh_seconds", j.max_refresh_seconds)?,
        retry: nonzero("retry_seconds", j.retry_seconds)?,
        unknown_kid_cooldown: Duration::from_secs(j.unknown_kid_cooldown_seconds),
        max_stale: nonzero("max_stale_seconds", j.max_stale_seconds)?,
        fetch_timeout: nonzero("fetch_timeout_seconds", j.fetch_timeout_seconds)?,
        max_response_bytes: j.max_response_bytes,
        allow_insecure_http: j.allow_insecure_http,
    };
    if s.min_refresh > s.max_refresh {
        return Err(invalid(
            "jwks.min_refresh_seconds",
            "must not exceed jwks.max_refresh_seconds",
        ));
    }
    if s.max_response_bytes < 1024 {
        return Err(invalid("jwks.max_response_bytes", "must be at least 1024"));
    }
    Ok(s)
}

fn validate_header_name(at: &str, name: &str) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b));
    if !ok {
        return Err(invalid(at, format!("{name:?} is not a valid header name")));
    }
    let lower = name.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "authorization" | "host" | "content-length" | "content-type" | "cookie" | "x-request-id"
    ) {
        return Err(invalid(
            at,
            format!("{name:?} cannot be an identity header"),
        ));
    }
    Ok(lower)
}

/// The identity headers and metadata an allow answer carries. Each costs Envoy CPU on every
/// allowed request (benches/BENCHMARKS.md, section 3), so the defaults send what an MCP server
/// needs to tell callers apart — `sub` and the client, plus the issuer when a `sub` alone is
/// ambiguous — and metadata only when the rendered access log reads it.
fn validate_identity(
    i: &RawIdentity,
    resources: &[Resource],
    access_log: bool,
) -> Result<IdentityHeaders, ConfigError> {
    let name = |at: &str, v: &Option<String>| {
        v.as_deref()
            .map(|n| validate_header_name(at, n))
            .transpose()
    };
    // OpenID Connect Core §2: `sub` is unique only within its issuer.
    let several_issuers = resources.iter().any(|r| r.issuers.len() > 1);
    let issuer = match &i.issuer_header {
        Some(v) => v.clone(),
        None => several_issuers.then(|| DEFAULT_IDENTITY_HEADERS[3].to_owned()),
    };
    let dynamic_metadata = match i.dynamic_metadata {
        Some(false) if access_log => {
            return Err(invalid(
                "identity.dynamic_metadata",
                "envoy.access_log logs the dynamic metadata: leave this on (or unset)",
            ));
        }
        Some(on) => on,
        None => access_log,
    };
    let mut h = IdentityHeaders {
        subject: name("identity.subject_header", &i.subject_header)?,
        client_id: name("identity.client_id_header", &i.client_id_header)?,
        scopes: name("identity.scopes_header", &i.scopes_header)?,
        issuer: name("identity.issuer_header", &issuer)?,
        forward_authorization: i.forward_authorization,
        dynamic_metadata,
        reserved: Vec::new(),
    };
    let distinct: BTreeSet<&str> = h.names().collect();
    if distinct.len() != h.names().count() {
        return Err(invalid(
            "identity",
            "identity header names must be distinct",
        ));
    }
    let reserved: BTreeSet<String> = h
        .names()
        .chain(DEFAULT_IDENTITY_HEADERS)
        .map(str::to_owned)
        .collect();
    h.reserved = reserved.into_iter().collect();
    Ok(h)
}
