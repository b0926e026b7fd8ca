//! `introspection:` of an issuer and `introspect:` of a resource or route (RFC 7662 token
//! introspection): the schema, the validated settings and their checks. The client secret is
//! read from a file or an environment variable when the configuration is loaded, never
//! written in the configuration, and never printed (`ClientSecret`'s `Debug`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{ConfigError, invalid};
use crate::fetch_url::check_fetch_url;

/// `issuers[].introspection`: where and how this issuer's tokens are introspected.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// The RFC 7662 endpoint (default: `introspection_endpoint` from the issuer's RFC 8414 or
    /// OpenID Connect discovery document).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The client mcp-authz authenticates as (RFC 7662 §2.1: the endpoint requires it).
    pub client_id: String,
    /// File holding the client secret (surrounding whitespace ignored), e.g. a mounted Secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret instead.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// RFC 6749 §2.3.1: `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default)]
    pub auth_method: AuthMethod,
    /// Longest time an active answer is reused, never past the token's `exp` (default 60).
    #[serde(default = "d60")]
    pub cache_seconds: u64,
    /// How long an inactive or refused answer is reused; less than `cache_seconds` (default 5).
    #[serde(default = "d5")]
    pub negative_cache_seconds: u64,
    /// Answers remembered, by SHA-256 of the token (default 10000; 0 disables caching).
    #[serde(default = "d10000")]
    pub cache_entries: usize,
    /// Introspection calls in flight at once for this issuer (default 16).
    #[serde(default = "d16")]
    pub max_concurrent: usize,
    /// Time for one call, waiting for a free slot included; at most half of
    /// `envoy.check_timeout_ms` (default: half of it).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

fn d5() -> u64 {
    5
}

fn d60() -> u64 {
    60
}

fn d16() -> usize {
    16
}

fn d10000() -> usize {
    10_000
}

/// RFC 6749 §2.3.1 client authentication at the introspection endpoint.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with the form-urlencoded client id and secret.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }
}

/// `introspect:` of a resource or route: which tokens are introspected.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IntrospectMode {
    /// Only tokens that are not JWS compact JWTs (opaque tokens); JWTs are verified locally.
    #[default]
    Opaque,
    /// JWTs are verified and introspected too: a revoked JWT is refused (revocation-sensitive
    /// routes). Needs `introspection:` on every issuer of the resource.
    Always,
}

impl IntrospectMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IntrospectMode::Opaque => "opaque",
            IntrospectMode::Always => "always",
        }
    }
}

/// The client secret. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(..)")
    }
}

impl ClientSecret {
    fn from_bytes(raw: &[u8]) -> Result<ClientSecret, String> {
        let s = std::str::from_utf8(raw.trim_ascii())
            .map_err(|_| "the client secret is not UTF-8".to_owned())?;
        if s.is_empty() {
            return Err("the client secret is empty".into());
        }
        Ok(ClientSecret(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Validated `introspection:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionSettings {
    /// `None`: discovered (`introspection_endpoint`).
    pub endpoint: Option<Url>,
    pub client_id: String,
    pub secret: ClientSecret,
    pub auth_method: AuthMethod,
    pub cache_ttl: Duration,
    pub negative_ttl: Duration,
    pub cache_entries: usize,
    pub max_concurrent: usize,
    pub timeout: Duration,
    /// `jwks.allow_insecure_http`, for discovered endpoints.
    pub allow_insecure_http: bool,
}

/// Validate `introspection:` at `at`. `check_timeout` is `envoy.check_timeout_ms`: a Check
/// that waited past it would be an ext_authz error, which a fail-open proxy allows.
pub(super) fn validate_introspection(
    at: &str,
    raw: &RawIntrospection,
    allow_insecure_http: bool,
    check_timeout: Duration,
) -> Result<Arc<IntrospectionSettings>, ConfigError> {
    let endpoint = raw
        .endpoint
        .as_deref()
        .map(|e| {
            let url = Url::parse(e)
                .map_err(|err| invalid(format!("{at}.endpoint"), format!("{e:?}: {err}")))?;
            check_fetch_url(&url, allow_insecure_http)
                .map_err(|m| invalid(format!("{at}.endpoint"), m))?;
            Ok::<_, ConfigError>(url)
        })
        .transpose()?;
    if raw.client_id.is_empty() {
        return Err(invalid(format!("{at}.client_id"), "must not be empty"));
    }
    let secret = match (&raw.client_secret_file, &raw.client_secret_env) {
        (Some(path), None) => std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|b| ClientSecret::from_bytes(&b))
            .map_err(|m| invalid(format!("{at}.client_secret_file"), m))?,
        (None, Some(var)) => std::env::var_os(var)
            .ok_or_else(|| format!("{var} is not set"))
            .and_then(|v| ClientSecret::from_bytes(v.as_encoded_bytes()))
            .map_err(|m| invalid(format!("{at}.client_secret_env"), m))?,
        _ => {
            return Err(invalid(
                at,
                "set exactly one of client_secret_file and client_secret_env (never the secret itself)",
            ));
        }
    };
    if raw.cache_seconds == 0 {
        return Err(invalid(
            format!("{at}.cache_seconds"),
            "must be greater than 0 (use cache_entries: 0 to disable caching)",
        ));
    }
    if raw.negative_cache_seconds >= raw.cache_seconds {
        return Err(invalid(
            format!("{at}.negative_cache_seconds"),
            "must be less than cache_seconds",
        ));
    }
    if raw.max_concurrent == 0 || raw.max_concurrent > 4096 {
        return Err(invalid(
            format!("{at}.max_concurrent"),
            "must be between 1 and 4096",
        ));
    }
    let half = check_timeout / 2;
    let timeout = match raw.timeout_ms {
        None => half,
        Some(0) => {
            return Err(invalid(
                format!("{at}.timeout_ms"),
                "must be greater than 0",
            ));
        }
        Some(ms) if Duration::from_millis(ms) > half => {
            return Err(invalid(
                format!("{at}.timeout_ms"),
                format!(
                    "must be at most half of envoy.check_timeout_ms ({} ms)",
                    half.as_millis()
                ),
            ));
        }
        Some(ms) => Duration::from_millis(ms),
    };
    Ok(Arc::new(IntrospectionSettings {
        endpoint,
        client_id: raw.client_id.clone(),
        secret,
        auth_method: raw.auth_method,
        cache_ttl: Duration::from_secs(raw.cache_seconds),
        negative_ttl: Duration::from_secs(raw.negative_cache_seconds),
        cache_entries: raw.cache_entries,
        max_concurrent: raw.max_concurrent,
        timeout,
        allow_insecure_http,
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::{AuthMethod, Config, IntrospectMode};

    fn yaml(issuer_extra: &str, resource_extra: &str) -> String {
        format!(
            "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers:\n      - issuer: https://i\n{issuer_extra}\n{resource_extra}\n"
        )
    }

    fn secret_file(content: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "mcp-authz-introspection-secret-{}-{}",
            std::process::id(),
            content.len()
        ));
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn settings_and_defaults() {
        let f = secret_file("s3cret\n");
        let c = Config::from_yaml(&yaml(
            &format!(
                "        introspection: {{endpoint: https://i/introspect, client_id: rs, client_secret_file: {}}}",
                f.display()
            ),
            "    introspect: always",
        ))
        .unwrap();
        let r = &c.resources[0];
        assert_eq!(r.introspect, IntrospectMode::Always);
        let s = r.issuers[0].introspection.as_ref().unwrap();
        assert_eq!(s.secret.expose(), "s3cret");
        assert_eq!(s.auth_method, AuthMethod::ClientSecretBasic);
        assert_eq!(s.cache_ttl.as_secs(), 60);
        assert_eq!(s.negative_ttl.as_secs(), 5);
        assert_eq!(s.cache_entries, 10_000);
        assert_eq!(s.max_concurrent, 16);
        // Half the default 500 ms check timeout.
        assert_eq!(s.timeout.as_millis(), 250);
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn refusals() {
        let f = secret_file("s3cret-x\n");
        let intro = |extra: &str| {
            format!(
                "        introspection: {{client_id: rs, client_secret_file: {}{extra}}}",
                f.display()
            )
        };
        let err = |issuer: &str, resource: &str| {
            Config::from_yaml(&yaml(issuer, resource))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&intro(", timeout_ms: 251"), "").contains("timeout_ms"));
        assert!(err(&intro(", negative_cache_seconds: 60"), "").contains("negative_cache"));
        assert!(err(&intro(", max_concurrent: 0"), "").contains("max_concurrent"));
        assert!(err(&intro(", endpoint: http://iam.example/x"), "").contains("endpoint"));
        assert!(
            err(
                "        introspection: {client_id: rs, client_secret_env: A, client_secret_file: /x}",
                ""
            )
            .contains("exactly one")
        );
        assert!(
            err("        introspection: {client_id: rs}", "").contains("exactly one"),
            "a secret source is required"
        );
        assert!(
            err(
                "        introspection: {client_id: rs, client_secret_env: MCP_AUTHZ_TEST_UNSET_VAR}",
                ""
            )
            .contains("is not set")
        );
        assert!(
            err(
                "        introspection: {client_id: rs, client_secret: inline}",
                ""
            )
            .contains("unknown field")
        );
        // `always` without an endpoint for the issuer.
        assert!(err("", "    introspect: always").contains("every issuer"));
        assert!(
            err(
                "",
                "    routes: [{path: /mcp, scopes: [], introspect: always}]"
            )
            .contains("every issuer")
        );
        assert!(
            err(
                &intro(""),
                "    routes: [{path: /mcp, public: true, introspect: always}]"
            )
            .contains("public route")
        );
    }
}
