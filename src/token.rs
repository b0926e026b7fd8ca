//! Access-token validation (OAuth 2.1 §5.2, RFC 9068, RFC 8725): structure, issuer, algorithm,
//! key, signature, time claims, audience, token type; then the granted scopes.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use crate::config::{Alg, Resource, TrustedIssuer};
use crate::jwks::{JwksManager, KeySet, KeysState};
use crate::scope::Scopes;
use crate::trace::Trace;

/// Why a bearer token was refused. Every variant but `NoKeys` is a 401 `invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWS compact JWT")]
    Malformed,
    #[error("token is longer than the configured limit")]
    TooLong,
    #[error("token issuer is not trusted for this resource")]
    UnknownIssuer,
    #[error("token algorithm is not allowed")]
    DisallowedAlg,
    #[error("token signing key is unknown")]
    UnknownKid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has no exp claim")]
    MissingExp,
    #[error("token is expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token audience does not include this resource")]
    WrongAudience,
    #[error("token is not an access token")]
    NotAccessToken,
    #[error("no signing keys are available for the token issuer")]
    NoKeys,
}

pub use crate::principal::Principal;

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    // RFC 7515 §4.1.11: we understand no extensions, so any `crit` makes the token invalid.
    #[serde(default)]
    crit: Option<Value>,
    // `jwk`, `jku`, `x5u`, `x5c` are deliberately not read: keys come only from the issuer's JWKS.
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    nbf: Option<Value>,
    #[serde(default)]
    iat: Option<Value>,
    #[serde(default)]
    scope: Option<Value>,
    #[serde(default)]
    scp: Option<Value>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    /// Casdoor / Hanzo IAM mark refresh tokens (same key, issuer and audience) with this.
    #[serde(default, rename = "tokenType")]
    token_type: Option<Value>,
    #[serde(default, rename = "TokenType")]
    token_type_upper: Option<Value>,
    /// Keycloak: `Bearer` for access tokens; `Refresh`, `Offline`, `ID` for the others.
    #[serde(default)]
    typ: Option<Value>,
    /// `token_type` as some IAMs copy it from the token response into the claims.
    #[serde(default, rename = "token_type")]
    token_type_snake: Option<Value>,
    /// Amazon Cognito: `access` or `id`.
    #[serde(default)]
    token_use: Option<Value>,
}

/// What a token-kind claim may say for an access token (ASCII case-insensitive, exact: no
/// trimming, so `"refresh-token "` or `" Bearer"` is a malformed declaration, not a pass).
const ACCESS_TOKEN_KINDS: &[&str] = &[
    "access-token",       // Casdoor / Hanzo IAM tokenType, TokenType
    "access_token",       // the same in snake case
    "bearer",             // Keycloak payload typ; token_type copied from RFC 6749 §7.1
    "access",             // Cognito token_use
    "at+jwt",             // RFC 9068 §2.1 spelling, should an IAM mirror the header
    "application/at+jwt", // its media-type form (RFC 9068 §2.1)
];

/// RFC 9068 §4 / RFC 8725 §3.11: a resource server must not accept another kind of JWT from
/// the same issuer as an access token. Refresh and ID tokens are signed with the same key,
/// issuer and often the same audience (Casdoor, Keycloak), so every claim an IAM uses to say
/// what a token is must, when present, say "access token" — a string from
/// [`ACCESS_TOKEN_KINDS`]; any other value, or another JSON type (array, number, object),
/// is refused. (`null` is absent: serde reads it as `None`.)
fn check_kind(c: &Claims) -> Result<(), TokenError> {
    let claims = [
        &c.token_type,
        &c.token_type_upper,
        &c.typ,
        &c.token_type_snake,
        &c.token_use,
    ];
    for v in claims.into_iter().flatten() {
        let ok = v
            .as_str()
            .is_some_and(|s| ACCESS_TOKEN_KINDS.iter().any(|k| s.eq_ignore_ascii_case(k)));
        if !ok {
            return Err(TokenError::NotAccessToken);
        }
    }
    Ok(())
}

/// A token split and decoded, not yet trusted.
struct Parsed<'t> {
    header: Header,
    claims: Claims,
    signing_input: &'t str,
    signature: &'t str,
}

const MAX_KID_LEN: usize = 256;

fn parse(token: &str, max_len: usize) -> Result<Parsed<'_>, TokenError> {
    if token.len() > max_len {
        return Err(TokenError::TooLong);
    }
    // Exactly three segments; count cheaply before any decoding (CVE-2025-30204).
    let mut dots = token.match_indices('.').map(|(i, _)| i);
    let (Some(d1), Some(d2), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(TokenError::Malformed);
    };
    let (h64, p64, signature) = (&token[..d1], &token[d1 + 1..d2], &token[d2 + 1..]);
    if h64.is_empty() || p64.is_empty() || signature.is_empty() {
        return Err(TokenError::Malformed);
    }
    // RFC 7519 §7.2 steps 2 and 10: each segment decodes to UTF-8 JSON. serde_json skips the
    // strings of members we do not read without validating them, so check the whole text.
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .filter(|b| std::str::from_utf8(b).is_ok())
            .ok_or(TokenError::Malformed)
    };
    // Duplicate members of the fields we read are a deserialization error (RFC 7515 §5.2:
    // reject duplicate header parameter names).
    let header: Header =
        serde_json::from_slice(&decode(h64)?).map_err(|_| TokenError::Malformed)?;
    let claims: Claims =
        serde_json::from_slice(&decode(p64)?).map_err(|_| TokenError::Malformed)?;
    if header.crit.is_some() || header.kid.as_ref().is_some_and(|k| k.len() > MAX_KID_LEN) {
        return Err(TokenError::Malformed);
    }
    Ok(Parsed {
        header,
        claims,
        signing_input: &token[..d2],
        signature,
    })
}

fn verify_with(set: &KeySet, p: &Parsed<'_>, alg: Alg) -> Option<bool> {
    let mut candidates = set.candidates(p.header.kid.as_deref(), alg).peekable();
    candidates.peek()?;
    // RFC 7515 §2: the signature segment is base64url without padding, as jsonwebtoken decodes it.
    let Ok(signature) = URL_SAFE_NO_PAD.decode(p.signature) else {
        return Some(false);
    };
    let message = p.signing_input.as_bytes();
    Some(candidates.any(|key| key.verify(alg, message, &signature)))
}

/// A token that passed every check, with what the cache needs to reuse the result safely.
#[derive(Debug, Clone)]
pub struct Validated {
    pub principal: Principal,
    /// Generation of the key set whose key verified the signature.
    pub key_generation: u64,
    /// First second at which the token counts as expired (`exp` + leeway).
    pub expires_at: u64,
}

/// Validate `token` for `resource`. `now` is seconds since the epoch.
pub async fn validate(
    token: &str,
    resource: &Resource,
    jwks: &Arc<JwksManager>,
    now: u64,
    max_len: usize,
) -> Result<Validated, TokenError> {
    validate_traced(token, resource, jwks, now, max_len, &mut Trace::off()).await
}

/// [`validate`], recording each step for `mcp-authz explain`.
pub async fn validate_traced(
    token: &str,
    resource: &Resource,
    jwks: &Arc<JwksManager>,
    now: u64,
    max_len: usize,
    trace: &mut Trace,
) -> Result<Validated, TokenError> {
    let p = trace.check("token structure", parse(token, max_len), |p| {
        format!(
            "JWS compact, {} bytes, alg {}, kid {}, typ {}",
            token.len(),
            p.header.alg,
            p.header.kid.as_deref().unwrap_or("(none)"),
            p.header.typ.as_deref().unwrap_or("(none)")
        )
    })?;
    let trusted = trace.check("issuer", trusted_issuer(&p.claims, resource), |t| {
        format!("{} is trusted for {}", t.issuer, resource.id)
    })?;
    let iss = trusted.issuer.as_str();
    // RFC 8725 §3.1: the algorithm must be on our allow-list ("none" and HS* never are).
    let alg = Alg::parse(&p.header.alg)
        .filter(|a| trusted.algorithms.contains(a))
        .ok_or(TokenError::DisallowedAlg);
    let alg = trace.check("algorithm", alg, |a| format!("{} is allowed", a.as_str()))?;
    trace.check("token type", check_typ(p.header.typ.as_deref()), |_| {
        "access token".into()
    })?;

    let set = match jwks.keys(iss) {
        KeysState::Ready(set) => set,
        KeysState::Unavailable => {
            trace.fail("signing keys", &TokenError::NoKeys);
            return Err(TokenError::NoKeys);
        }
    };
    trace.ok("signing keys", || {
        format!(
            "{} usable keys (generation {})",
            set.keys.len(),
            set.generation
        )
    });
    let (verified, key_generation) = match verify_with(&set, &p, alg) {
        Some(v) => (v, set.generation),
        None => {
            // No key with this kid: the issuer may have rotated. One shared, rate-limited refetch.
            let kid_unknown = p.header.kid.as_deref().is_some_and(|k| !set.knows_kid(k));
            let fresh = if kid_unknown {
                trace.ok("key lookup", || {
                    "kid not in the key set: refetching once".into()
                });
                jwks.refetch_for_unknown_kid(iss).await
            } else {
                None
            };
            match fresh.and_then(|s| verify_with(&s, &p, alg).map(|v| (v, s.generation))) {
                Some(v) => v,
                None => {
                    trace.fail("key lookup", &TokenError::UnknownKid);
                    return Err(TokenError::UnknownKid);
                }
            }
        }
    };
    let sig = if verified {
        Ok(())
    } else {
        Err(TokenError::BadSignature)
    };
    trace.check("signature", sig, |_| {
        format!("verified with {}", alg.as_str())
    })?;
    let principal = check_claims(&p.claims, trusted, resource, now, trace)?;
    let expires_at = principal
        .expires_at
        .saturating_add(trusted.leeway.as_secs());
    Ok(Validated {
        principal,
        key_generation,
        expires_at,
    })
}

fn trusted_issuer<'r>(c: &Claims, resource: &'r Resource) -> Result<&'r TrustedIssuer, TokenError> {
    let iss = c.iss.as_deref().ok_or(TokenError::UnknownIssuer)?;
    resource
        .issuers
        .iter()
        .find(|t| t.issuer == iss)
        .ok_or(TokenError::UnknownIssuer)
}

/// Offline check of a claims document (no signature): what `explain --claims` shows.
pub fn check_claims_offline(
    json: &[u8],
    resource: &Resource,
    now: u64,
    trace: &mut Trace,
) -> Result<Principal, TokenError> {
    let claims: Result<Claims, TokenError> =
        serde_json::from_slice(json).map_err(|_| TokenError::Malformed);
    let claims = trace.check("claims document", claims, |_| {
        "JSON object (signature not checked: offline)".into()
    })?;
    let trusted = trace.check("issuer", trusted_issuer(&claims, resource), |t| {
        format!("{} is trusted for {}", t.issuer, resource.id)
    })?;
    check_claims(&claims, trusted, resource, now, trace)
}

/// RFC 9068 §2.1 names `at+jwt`; plain `JWT` or no `typ` is what most issuers (Casdoor) send.
/// Any other type (an ID token's `logout+jwt`, a DPoP proof) is not an access token.
fn check_typ(typ: Option<&str>) -> Result<(), TokenError> {
    match typ.map(str::to_ascii_lowercase).as_deref() {
        None | Some("jwt") | Some("at+jwt") | Some("application/at+jwt") => Ok(()),
        Some(_) => Err(TokenError::NotAccessToken),
    }
}

fn numeric_date(v: &Value) -> Result<f64, TokenError> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or(TokenError::Malformed)
}

fn check_claims(
    c: &Claims,
    trusted: &TrustedIssuer,
    resource: &Resource,
    now: u64,
    trace: &mut Trace,
) -> Result<Principal, TokenError> {
    let now_f = now as f64;
    let leeway = trusted.leeway.as_secs() as f64;
    // RFC 7519 §4.1.4: reject on or after exp (plus leeway).
    let exp = c
        .exp
        .as_ref()
        .ok_or(TokenError::MissingExp)
        .and_then(numeric_date);
    let exp = trace.check(
        "exp",
        exp.and_then(|e| {
            if now_f >= e + leeway {
                Err(TokenError::Expired)
            } else {
                Ok(e)
            }
        }),
        |e| format!("expires in {} s (leeway {} s)", (*e - now_f) as i64, leeway),
    )?;
    let mut times = Ok(());
    for claim in [&c.nbf, &c.iat].into_iter().flatten() {
        match numeric_date(claim) {
            Ok(t) if now_f + leeway < t => times = Err(TokenError::NotYetValid),
            Ok(_) => {}
            Err(e) => times = Err(e),
        }
    }
    trace.check("nbf/iat", times, |_| "not in the future".into())?;
    let aud = if audience_ok(c.aud.as_ref(), resource, trusted) {
        Ok(())
    } else {
        Err(TokenError::WrongAudience)
    };
    trace.check("aud", aud, |_| format!("includes {}", resource.uri))?;
    trace.check("token kind", check_kind(c), |_| {
        "no claim says it is anything but an access token".into()
    })?;
    let mut scopes = Scopes::default();
    for claim in [&c.scope, &c.scp].into_iter().flatten() {
        match claim {
            Value::String(s) => scopes.extend(Scopes::parse_space(s).iter().map(str::to_owned)),
            Value::Array(items) => {
                for i in items {
                    let s = i.as_str().ok_or(TokenError::Malformed)?;
                    scopes.extend(Scopes::parse_space(s).iter().map(str::to_owned));
                }
            }
            Value::Null => {}
            _ => return Err(TokenError::Malformed),
        }
    }
    trace.ok("scopes", || {
        if scopes.is_empty() {
            "(none)".into()
        } else {
            scopes.joined()
        }
    });
    Ok(Principal {
        issuer: trusted.issuer.clone(),
        subject: c.sub.clone(),
        client_id: c.client_id.clone().or_else(|| c.azp.clone()),
        scopes,
        expires_at: exp.max(0.0) as u64,
    })
}

/// RFC 8707 / MCP: the token must be issued for this resource. `aud` is a string or an array of
/// strings (RFC 7519 §4.1.3); scheme and host compare case-insensitively, the rest exactly.
fn audience_ok(aud: Option<&Value>, resource: &Resource, trusted: &TrustedIssuer) -> bool {
    let matches = |a: &str| {
        same_resource_uri(a, &resource.uri) || trusted.extra_audiences.iter().any(|x| x == a)
    };
    match aud {
        Some(Value::String(a)) => matches(a),
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str().is_some_and(matches)),
        _ => false,
    }
}

fn same_resource_uri(a: &str, canonical: &str) -> bool {
    if a == canonical {
        return true;
    }
    let split = |u: &str| -> Option<(String, String)> {
        let (scheme, rest) = u.split_once("://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        Some((
            format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                authority.to_ascii_lowercase()
            ),
            path.to_owned(),
        ))
    };
    matches!((split(a), split(canonical)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn resource() -> Resource {
        Config::from_yaml(
            "resources:\n  - id: a\n    uri: https://MCP.example.com/mcp\n    issuers: [{issuer: https://iam, extra_audiences: [client-1]}]\n",
        )
        .unwrap()
        .resources
        .remove(0)
    }

    fn claims(json: &str) -> Result<Claims, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn audience_forms() {
        let r = resource();
        let t = &r.issuers[0];
        let ok = |v: Value| audience_ok(Some(&v), &r, t);
        assert!(ok(Value::from("https://MCP.example.com/mcp")));
        assert!(ok(Value::from("https://mcp.example.com/mcp")));
        assert!(ok(Value::from("HTTPS://mcp.EXAMPLE.com/mcp")));
        assert!(ok(serde_json::json!(["x", "https://mcp.example.com/mcp"])));
        assert!(ok(Value::from("client-1")));
        assert!(!ok(Value::from("https://mcp.example.com/mcp/")));
        assert!(!ok(Value::from("https://mcp.example.com/MCP")));
        assert!(!ok(Value::from("https://mcp.example.com")));
        assert!(!ok(serde_json::json!([])));
        assert!(!ok(Value::Null));
        assert!(!ok(serde_json::json!(42)));
        assert!(!ok(serde_json::json!([42])));
        assert!(!audience_ok(None, &r, t));
    }

    fn check(json: &str, now: u64) -> Result<Principal, TokenError> {
        let r = resource();
        check_claims(
            &claims(json).unwrap(),
            &r.issuers[0],
            &r,
            now,
            &mut Trace::off(),
        )
    }

    #[test]
    fn time_claims_with_leeway() {
        let base = r#""aud":"https://mcp.example.com/mcp","iss":"https://iam""#;
        // leeway is 30 s by default
        assert_eq!(
            check(&format!("{{{base}}}"), 1000),
            Err(TokenError::MissingExp)
        );
        assert!(check(&format!("{{{base},\"exp\":1000}}"), 1029).is_ok());
        assert_eq!(
            check(&format!("{{{base},\"exp\":1000}}"), 1030),
            Err(TokenError::Expired)
        );
        assert_eq!(
            check(&format!("{{{base},\"exp\":\"2000\"}}"), 1000),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            check(&format!("{{{base},\"exp\":2000,\"nbf\":1031}}"), 1000),
            Err(TokenError::NotYetValid)
        );
        assert!(check(&format!("{{{base},\"exp\":2000,\"nbf\":1030}}"), 1000).is_ok());
        assert_eq!(
            check(&format!("{{{base},\"exp\":2000,\"iat\":1500}}"), 1000),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn scopes_from_scope_and_scp() {
        let base = r#""aud":"https://mcp.example.com/mcp","exp":9999999999"#;
        let p = check(&format!("{{{base},\"scope\":\"a b\"}}"), 1).unwrap();
        assert_eq!(p.scopes.joined(), "a b");
        let p = check(&format!("{{{base},\"scp\":[\"a\",\"c\"]}}"), 1).unwrap();
        assert_eq!(p.scopes.joined(), "a c");
        let p = check(&format!("{{{base},\"scp\":\"x y\",\"scope\":\"a\"}}"), 1).unwrap();
        assert_eq!(p.scopes.joined(), "a x y");
        let p = check(&format!("{{{base}}}"), 1).unwrap();
        assert!(p.scopes.is_empty());
        assert_eq!(
            check(&format!("{{{base},\"scope\":7}}"), 1),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            check(&format!("{{{base},\"scp\":[7]}}"), 1),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn refresh_tokens_are_not_access_tokens() {
        let base = r#""aud":"https://mcp.example.com/mcp","exp":9999999999"#;
        assert_eq!(
            check(&format!("{{{base},\"tokenType\":\"refresh-token\"}}"), 1),
            Err(TokenError::NotAccessToken)
        );
        assert_eq!(
            check(
                &format!(
                    "{{{base},\"tokenType\":\"access-token\",\"TokenType\":\"refresh-token\"}}"
                ),
                1
            ),
            Err(TokenError::NotAccessToken)
        );
        assert!(check(&format!("{{{base},\"tokenType\":\"access-token\"}}"), 1).is_ok());
    }

    #[test]
    fn every_kind_claim_must_say_access_token() {
        let base = r#""aud":"https://mcp.example.com/mcp","exp":9999999999"#;
        let kind = |extra: &str| check(&format!("{{{base},{extra}}}"), 1);
        for ok in [
            r#""typ":"Bearer""#,
            r#""tokenType":"access-token""#,
            r#""TokenType":"ACCESS-TOKEN""#,
            r#""token_type":"access_token""#,
            r#""token_use":"access""#,
            r#""typ":"Bearer","tokenType":"access-token""#,
            r#""typ":null"#,
        ] {
            assert!(kind(ok).is_ok(), "{ok}");
        }
        for bad in [
            // Keycloak's other kinds
            r#""typ":"Refresh""#,
            r#""typ":"Offline""#,
            r#""typ":"ID""#,
            // other claims and spellings
            r#""token_type":"refresh_token""#,
            r#""token_use":"id""#,
            r#""tokenType":"refresh-token ""#,
            r#""tokenType":" refresh-token""#,
            r#""tokenType":"refresh-token\n""#,
            r#""TokenType":"Refresh_Token""#,
            r#""tokenType":"id-token""#,
            // malformed declarations
            r#""tokenType":["access-token"]"#,
            r#""tokenType":["refresh-token"]"#,
            r#""typ":["Bearer","Refresh"]"#,
            r#""tokenType":1"#,
            r#""token_type":{"v":"access_token"}"#,
            r#""tokenType":"""#,
            r#""typ":"Bearer ""#,
            // one access declaration does not outvote another kind
            r#""tokenType":"access-token","typ":"Refresh""#,
        ] {
            assert_eq!(kind(bad), Err(TokenError::NotAccessToken), "{bad}");
        }
    }

    #[test]
    fn client_id_from_azp() {
        let base = r#""aud":"https://mcp.example.com/mcp","exp":9999999999"#;
        assert_eq!(
            check(&format!("{{{base},\"azp\":\"c\"}}"), 1)
                .unwrap()
                .client_id
                .as_deref(),
            Some("c")
        );
        assert_eq!(
            check(&format!("{{{base},\"azp\":\"c\",\"client_id\":\"d\"}}"), 1)
                .unwrap()
                .client_id
                .as_deref(),
            Some("d")
        );
    }

    #[test]
    fn structure() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        let c = URL_SAFE_NO_PAD.encode(br#"{"iss":"x"}"#);
        assert!(parse(&format!("{h}.{c}.sig"), 8192).is_ok());
        assert!(matches!(
            parse(&format!("{h}.{c}"), 8192),
            Err(TokenError::Malformed)
        ));
        assert!(matches!(
            parse(&format!("{h}.{c}.sig.x"), 8192),
            Err(TokenError::Malformed)
        ));
        assert!(matches!(
            parse(&".".repeat(5000), 8192),
            Err(TokenError::Malformed)
        ));
        assert!(matches!(
            parse(&format!("{h}.{c}."), 8192),
            Err(TokenError::Malformed)
        ));
        assert!(matches!(
            parse(&format!("{h}.{c}.sig"), 10),
            Err(TokenError::TooLong)
        ));
        let dup = URL_SAFE_NO_PAD.encode(br#"{"iss":"x","iss":"y"}"#);
        assert!(matches!(
            parse(&format!("{h}.{dup}.sig"), 8192),
            Err(TokenError::Malformed)
        ));
        let duph = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","alg":"none"}"#);
        assert!(matches!(
            parse(&format!("{duph}.{c}.sig"), 8192),
            Err(TokenError::Malformed)
        ));
        let crit = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","crit":["exp"]}"#);
        assert!(matches!(
            parse(&format!("{crit}.{c}.sig"), 8192),
            Err(TokenError::Malformed)
        ));
        // Deep nesting in a claim we read hits serde_json's recursion limit; in one we skip it
        // is consumed without recursion. Neither can overflow the stack.
        let deep = URL_SAFE_NO_PAD.encode(format!(
            "{{\"aud\":{}{}}}",
            "[".repeat(500),
            "]".repeat(500)
        ));
        assert!(matches!(
            parse(&format!("{h}.{deep}.sig"), 8192),
            Err(TokenError::Malformed)
        ));
        let deep = URL_SAFE_NO_PAD.encode(format!(
            "{{\"x\":{}{}}}",
            "[".repeat(2000),
            "]".repeat(2000)
        ));
        assert!(parse(&format!("{h}.{deep}.sig"), 8192).is_ok());
        let bin = URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x00]);
        assert!(matches!(
            parse(&format!("{h}.{bin}.sig"), 8192),
            Err(TokenError::Malformed)
        ));
        let padded = format!("{}=", URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}x"#));
        assert!(matches!(
            parse(&format!("{padded}.{c}.sig"), 8192),
            Err(TokenError::Malformed)
        ));
    }

    #[test]
    fn typ_values() {
        assert!(check_typ(None).is_ok());
        assert!(check_typ(Some("JWT")).is_ok());
        assert!(check_typ(Some("at+JWT")).is_ok());
        assert_eq!(check_typ(Some("dpop+jwt")), Err(TokenError::NotAccessToken));
    }
}
