//! `mcp-authz doctor`: the seed guide's "verify the endpoints" step, automated. For every
//! issuer: AS metadata (RFC 8414) and OIDC discovery, the JWKS and each key in it, the
//! algorithms, the scopes the policy needs, and whether tokens will carry our resource as
//! audience (RFC 8707). Findings are plain sentences; errors make the command fail.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use url::Url;

use std::sync::Arc;

use crate::config::{Alg, ClientIdClaim, Config, KeySource, Resource, ScopeClaim, TrustedIssuer};
use crate::introspect::{self, CallError, Introspector};
use crate::jwks::{self, JwksManager};
use crate::metrics::Metrics;
use crate::scope::ClaimValue;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Error,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    pub text: String,
}

/// Optional client credentials used to ask the AS for a token for each resource.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn ok(&mut self, t: impl Into<String>) {
        self.0.push(Finding {
            level: Level::Ok,
            text: t.into(),
        });
    }
    fn warn(&mut self, t: impl Into<String>) {
        self.0.push(Finding {
            level: Level::Warn,
            text: t.into(),
        });
    }
    fn error(&mut self, t: impl Into<String>) {
        self.0.push(Finding {
            level: Level::Error,
            text: t.into(),
        });
    }
}

/// Run every check; returns the report text and the worst level found.
pub async fn run(config: &Config, probe: &Probe) -> anyhow::Result<(String, Level)> {
    let jwks = JwksManager::new(config, Metrics::new())?;
    let mut out = String::new();
    let mut worst = Level::Ok;
    for issuer in &config.issuers {
        let mut r = Report::default();
        let resources: Vec<&Resource> = config
            .resources
            .iter()
            .filter(|res| res.issuers.iter().any(|t| t.issuer == issuer.issuer))
            .collect();
        let metadata = check_metadata(&jwks, &issuer.issuer, &issuer.source, &mut r).await;
        let jwks_doc = match &issuer.source {
            KeySource::File(p) => match std::fs::read(p) {
                Ok(b) => Some(b),
                Err(e) => {
                    r.error(format!("cannot read jwks_file {}: {e}", p.display()));
                    None
                }
            },
            KeySource::JwksUri(u) => fetch(&jwks, u, "JWKS", &mut r).await,
            KeySource::Discovery => match metadata
                .as_ref()
                .and_then(|m| m.get("jwks_uri"))
                .and_then(Value::as_str)
            {
                Some(u) => match Url::parse(u) {
                    Ok(u) => fetch(&jwks, &u, "JWKS", &mut r).await,
                    Err(e) => {
                        r.error(format!("jwks_uri {u:?} is not a URL: {e}"));
                        None
                    }
                },
                None => {
                    r.error("no metadata document names a jwks_uri, so no keys can be loaded");
                    None
                }
            },
        };
        if let Some(body) = jwks_doc {
            check_keys(&body, issuer.issuer.as_str(), &resources, &mut r);
        }
        if let Some(m) = &metadata {
            check_scopes(m, &resources, &mut r);
            check_audience(&jwks, m, &issuer.issuer, &resources, probe, &mut r).await;
        }
        let trusted = resources
            .iter()
            .flat_map(|res| res.issuers.iter())
            .find(|t| t.issuer == issuer.issuer && t.introspection.is_some());
        if let Some(t) = trusted {
            check_introspection(&jwks, t, &mut r).await;
        }
        writeln!(out, "issuer {}", issuer.issuer)?;
        for f in &r.0 {
            let tag = match f.level {
                Level::Ok => "ok   ",
                Level::Warn => "WARN ",
                Level::Error => "ERROR",
            };
            writeln!(out, "  {tag} {}", f.text)?;
            worst = worst.max(f.level);
        }
    }
    writeln!(
        out,
        "{}",
        match worst {
            Level::Ok => "all checks passed",
            Level::Warn => "passed with warnings",
            Level::Error => "problems found: tokens from the issuers above may be refused",
        }
    )?;
    Ok((out, worst))
}

/// RFC 7662: the endpoint is found and answers a made-up token (never a real one) as
/// inactive, with the configured client authentication.
async fn check_introspection(jwks: &Arc<JwksManager>, t: &TrustedIssuer, r: &mut Report) {
    let Some(settings) = &t.introspection else {
        return;
    };
    let intro = Introspector::new(Metrics::new());
    let described = introspect::describe(settings);
    match intro.probe(jwks, t).await {
        Ok((endpoint, true)) => r.ok(format!(
            "introspection endpoint {endpoint} answers a made-up token as inactive ({described})"
        )),
        Ok((endpoint, false)) => r.error(format!(
            "introspection endpoint {endpoint} does not report a made-up token inactive: its answers cannot be trusted ({described})"
        )),
        Err(e @ CallError::Status(401 | 403)) => r.error(format!(
            "introspection: {e}: check client_id and the client secret ({described})"
        )),
        Err(e) => r.error(format!("introspection: {e} ({described})")),
    }
}

async fn fetch(jwks: &JwksManager, url: &Url, what: &str, r: &mut Report) -> Option<Vec<u8>> {
    match jwks.get(url).await {
        Ok((body, _)) => {
            r.ok(format!("{what} {url} answers ({} bytes)", body.len()));
            Some(body)
        }
        Err(e) => {
            r.error(format!("{what} {url} is not usable: {e}"));
            None
        }
    }
}

/// Both discovery documents; returns the first usable one.
async fn check_metadata(
    jwks: &JwksManager,
    issuer: &str,
    source: &KeySource,
    r: &mut Report,
) -> Option<Value> {
    let urls = match jwks::discovery_urls(issuer) {
        Ok(u) => u,
        Err(_) => {
            if *source == KeySource::Discovery {
                r.error("the issuer is not a URL, so its metadata cannot be discovered");
            } else {
                r.warn("the issuer is not a URL: no metadata to check (keys come from the configured source)");
            }
            return None;
        }
    };
    let mut found = None;
    for (url, name) in urls
        .iter()
        .zip(["OAuth AS metadata (RFC 8414)", "OpenID discovery"])
    {
        let Ok((body, _)) = jwks
            .get(url)
            .await
            .inspect_err(|e| r.warn(format!("{name} {url}: {e}")))
        else {
            continue;
        };
        let doc: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                r.error(format!("{name} {url} is not JSON: {e}"));
                continue;
            }
        };
        match doc.get("issuer").and_then(Value::as_str) {
            Some(i) if i == issuer => r.ok(format!("{name} {url}: issuer matches")),
            Some(i) => {
                r.error(format!(
                    "{name} {url} names issuer {i:?}, but tokens are expected from {issuer:?}: they must match exactly (RFC 8414 §3.3){}",
                    issuer_hint(i, issuer)
                ));
                continue;
            }
            None => {
                r.error(format!("{name} {url} has no issuer"));
                continue;
            }
        }
        let pkce = doc
            .get("code_challenge_methods_supported")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|m| m == "S256"));
        if !pkce {
            r.warn(format!(
                "{name} does not advertise PKCE S256; MCP clients require it"
            ));
        }
        if doc.get("registration_endpoint").is_none() {
            r.warn(format!(
                "{name} has no registration_endpoint: clients that register dynamically (Claude, VS Code) cannot connect"
            ));
        }
        found.get_or_insert(doc);
    }
    if found.is_none() && *source == KeySource::Discovery {
        r.error("no discovery document could be used");
    }
    found
}

/// Why a discovery document's issuer may differ from the configured one, for the IdPs whose
/// issuer strings are easy to get wrong.
fn issuer_hint(named: &str, configured: &str) -> &'static str {
    let entra = |u: &str| u.contains("sts.windows.net") || u.contains("login.microsoftonline.com");
    let host_and_rest = |u: &str| -> Option<(String, String)> {
        let u = Url::parse(u).ok()?;
        Some((u.host_str()?.to_ascii_lowercase(), u.path().to_owned()))
    };
    if named.trim_end_matches('/') == configured.trim_end_matches('/') {
        "; they differ only in a trailing slash (Auth0's and Entra ID v1's issuers end with one)"
    } else if entra(named) && entra(configured) {
        "; Entra ID v1 tokens are issued by https://sts.windows.net/<tenant>/, v2 tokens by https://login.microsoftonline.com/<tenant>/v2.0 (the application's accessTokenAcceptedVersion decides)"
    } else if matches!(
        (host_and_rest(named), host_and_rest(configured)),
        (Some((h1, p1)), Some((h2, p2))) if h1 != h2 && p1 == p2
    ) {
        "; a Casdoor/Hanzo IAM issuer follows the Host of each request unless `origin` is set in its configuration: pin it, then configure that URL"
    } else {
        ""
    }
}

fn check_keys(body: &[u8], issuer: &str, resources: &[&Resource], r: &mut Report) {
    let (keys, skipped) = match jwks::parse_jwks(body) {
        Ok(k) => k,
        Err(e) => {
            r.error(format!("the JWKS is not a key set: {e}"));
            return;
        }
    };
    for k in &keys {
        r.ok(format!(
            "key {}: {:?}{}",
            k.kid.as_deref().unwrap_or("(no kid)"),
            k.kind,
            k.alg
                .map(|a| format!(", alg {}", a.as_str()))
                .unwrap_or_default()
        ));
    }
    for (kid, reason) in &skipped {
        r.warn(format!(
            "key {} skipped ({}): tokens signed with it will be refused",
            kid.as_deref().unwrap_or("(no kid)"),
            reason.label()
        ));
    }
    if keys.is_empty() {
        r.error("no usable signing key: every token from this issuer will get 503");
        return;
    }
    for res in resources {
        let Some(t) = res.issuers.iter().find(|t| t.issuer == issuer) else {
            continue;
        };
        // A key none of whose algorithms is allowed (typically Hanzo IAM's MLDSA65 key while
        // `algorithms` keeps its default): its tokens are refused as token_disallowed_alg.
        for k in &keys {
            let algs: Vec<&str> = Alg::ALL
                .iter()
                .filter(|a| k.accepts(**a))
                .map(|a| a.as_str())
                .collect();
            if !t.algorithms.iter().any(|a| k.accepts(*a)) {
                r.warn(format!(
                    "resource {}: key {} verifies only {}, not in algorithms: its tokens will be refused",
                    res.id,
                    k.kid.as_deref().unwrap_or("(no kid)"),
                    algs.join(" ")
                ));
            }
        }
        let usable: Vec<&str> = t
            .algorithms
            .iter()
            .filter(|a| keys.iter().any(|k| k.accepts(**a)))
            .map(|a| a.as_str())
            .collect();
        if usable.is_empty() {
            r.error(format!(
                "resource {}: none of the allowed algorithms can be verified with these keys",
                res.id
            ));
        } else {
            r.ok(format!(
                "resource {}: algorithms with a key: {}",
                res.id,
                usable.join(" ")
            ));
        }
    }
}

fn check_scopes(meta: &Value, resources: &[&Resource], r: &mut Report) {
    let Some(advertised) = meta.get("scopes_supported").and_then(Value::as_array) else {
        r.warn("the AS does not list scopes_supported; cannot check the policy's scopes");
        return;
    };
    let advertised: BTreeSet<&str> = advertised.iter().filter_map(Value::as_str).collect();
    for res in resources {
        let missing: Vec<&str> = res
            .known_scopes
            .iter()
            .map(String::as_str)
            .filter(|s| !advertised.contains(s))
            .collect();
        if missing.is_empty() {
            r.ok(format!(
                "resource {}: the AS advertises every scope the policy uses",
                res.id
            ));
        } else {
            r.warn(format!(
                "resource {}: the AS does not advertise {} — define them as custom scopes (seed Part 1 Step 4) or tokens will never carry them",
                res.id,
                missing.join(" ")
            ));
        }
    }
}

/// RFC 8707: ask for a token for each resource (client credentials) and look at its `aud`, and
/// at the claims its scopes and client id arrive in against `scope_claims`/`client_id_claims`.
async fn check_audience(
    jwks: &JwksManager,
    meta: &Value,
    issuer: &str,
    resources: &[&Resource],
    probe: &Probe,
    r: &mut Report,
) {
    let (Some(id), Some(secret)) = (&probe.client_id, &probe.client_secret) else {
        r.warn("token audience not checked: pass --client-id and --client-secret to request a test token (RFC 8707)");
        return;
    };
    let Some(endpoint) = meta.get("token_endpoint").and_then(Value::as_str) else {
        r.error("the AS metadata has no token_endpoint");
        return;
    };
    for res in resources {
        let scope = res.scopes_supported.join(" ");
        let token = match jwks
            .client_credentials_token(endpoint, id, secret, &res.uri, &scope)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                r.error(format!("resource {}: token request failed: {e}", res.id));
                continue;
            }
        };
        let Some(claims) = token_claims(&token) else {
            r.error(format!(
                "resource {}: the AS issued an opaque (non-JWT) access token; mcp-authz validates JWTs only",
                res.id
            ));
            continue;
        };
        let aud = audiences(&claims);
        if aud.iter().any(|a| a == &res.uri) {
            r.ok(format!(
                "resource {}: tokens carry aud {} (RFC 8707 resource indicators work)",
                res.id, res.uri
            ));
        } else {
            // The usual cause: the AS ignores `resource` and puts the client in `aud` (Casdoor
            // on the client-credentials grant, Keycloak without an audience mapper, Entra ID).
            let clients = client_ids(&claims, id);
            let is_client = !aud.is_empty() && aud.iter().all(|a| clients.contains(a));
            r.error(format!(
                "resource {}: the token's aud is {:?}{}, not {}: enable resource indicators at the AS, or accept the client id with extra_audiences",
                res.id,
                aud,
                if is_client { ", the client id" } else { "" },
                res.uri
            ));
        }
        if let Some(t) = res.issuers.iter().find(|t| t.issuer == issuer) {
            check_claim_shapes(&claims, t, &res.id, r);
        }
    }
}

/// Scopes or a client id in a claim the issuer's settings do not read, and configured scope
/// claims a token would be refused for (see `scope::ClaimValue`).
fn check_claim_shapes(claims: &Value, t: &TrustedIssuer, res: &str, r: &mut Report) {
    for claim in ScopeClaim::ALL {
        let Some(v) = claims.get(claim.as_str()) else {
            continue;
        };
        let configured = t.scope_claims.contains(&claim);
        match ClaimValue::parse(v) {
            Ok(s) if !configured && !s.is_empty() => r.warn(format!(
                "resource {res}: the token carries scopes in `{}` ({}), which scope_claims does not read: add it to scope_claims or these scopes are ignored",
                claim.as_str(),
                s.joined()
            )),
            Ok(_) => {}
            Err(e) if configured => r.error(format!(
                "resource {res}: the token's `{}` claim is unusable ({e}): such tokens are refused as malformed",
                claim.as_str()
            )),
            Err(_) => {}
        }
    }
    let present: Vec<ClientIdClaim> = ClientIdClaim::ALL
        .into_iter()
        .filter(|c| claims.get(c.as_str()).is_some_and(Value::is_string))
        .collect();
    if !present.is_empty() && !present.iter().any(|c| t.client_id_claims.contains(c)) {
        let names: Vec<&str> = present.iter().map(|c| c.as_str()).collect();
        r.warn(format!(
            "resource {res}: the token names its client in `{}`, which client_id_claims does not read: logs and the client id header will have none",
            names.join("`, `")
        ));
    }
}

fn token_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn audiences(claims: &Value) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

/// Every client id the token or the probe names, whatever claim carries it.
fn client_ids(claims: &Value, probe_id: &str) -> Vec<String> {
    ClientIdClaim::ALL
        .into_iter()
        .filter_map(|c| claims.get(c.as_str()).and_then(Value::as_str))
        .chain([probe_id])
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_hints() {
        let tid = "9188040d-6c67-4c5b-b112-36a304b66dad";
        let v1 = format!("https://sts.windows.net/{tid}/");
        let v2 = format!("https://login.microsoftonline.com/{tid}/v2.0");
        assert!(issuer_hint(&v2, &v1).contains("accessTokenAcceptedVersion"));
        assert!(
            issuer_hint("https://t.auth0.com/", "https://t.auth0.com").contains("trailing slash")
        );
        assert!(
            issuer_hint("http://10.0.0.5:8000", "https://iam.example.com").contains("`origin`")
        );
        assert_eq!(
            issuer_hint("https://a.example/realms/x", "https://a.example/realms/y"),
            ""
        );
    }
}
