//! Access-token validation (OAuth 2.1 §5.2, RFC 9068, RFC 8725): structure, issuer, algorithm,
//! key, signature, time claims, audience, token type; then the granted scopes.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::config::{Alg, ClientIdClaim, Resource, ScopeClaim, TrustedIssuer};
use crate::jwks::{JwksManager, KeySet, KeysState};
use crate::scope::{ClaimValue, Scopes};
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

/// A JSON string member, borrowed from the decoded segment when it holds no escapes (serde
/// borrows a `Cow<str>` only as a direct field, not inside an `Option`; hence this wrapper).
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// The JOSE header. Strings borrow from the decoded segment unless they hold JSON escapes.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<Text<'a>>,
    #[serde(default, borrow)]
    typ: Option<Text<'a>>,
    // RFC 7515 §4.1.11: we understand no extensions, so any `crit` makes the token invalid.
    // Only its presence matters (`null` is absent), so its value is skipped, not built.
    #[serde(default)]
    crit: Option<IgnoredAny>,
    // `jwk`, `jku`, `x5u`, `x5c` are deliberately not read: keys come only from the issuer's JWKS.
}

/// The claims set. `iss` and `sub` borrow from the decoded segment unless they hold JSON
/// escapes; the claims whose shape varies stay `Value`s, each checked strictly below.
#[derive(Deserialize)]
struct Claims<'a> {
    #[serde(default, borrow)]
    iss: Option<Text<'a>>,
    #[serde(default, borrow)]
    sub: Option<Text<'a>>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    nbf: Option<Value>,
    #[serde(default)]
    iat: Option<Value>,
    // Read only when the issuer's `scope_claims` names them (see `granted_scopes`).
    #[serde(default)]
    scope: Option<Value>,
    #[serde(default)]
    scp: Option<Value>,
    #[serde(default)]
    roles: Option<Value>,
    #[serde(default)]
    permissions: Option<Value>,
    // Read only when the issuer's `client_id_claims` names them (see `client_id`).
    #[serde(default)]
    client_id: Option<Value>,
    #[serde(default)]
    azp: Option<Value>,
    #[serde(default)]
    cid: Option<Value>,
    #[serde(default)]
    appid: Option<Value>,
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
    /// RFC 7800 confirmation: `jkt` binds the token to a DPoP key (RFC 9449 §6.1).
    #[serde(default)]
    cnf: Option<Value>,
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
/// is refused. (`null` is absent: serde reads it as `None`.) A token bound to a DPoP key may
/// also say `DPoP` (RFC 9449 §6.2: the introspection `token_type` of a bound token).
fn check_kind(c: &Claims<'_>) -> Result<(), TokenError> {
    let bound = matches!(&c.cnf, Some(Value::Object(o)) if o.contains_key("jkt"));
    let claims = [
        &c.token_type,
        &c.token_type_upper,
        &c.typ,
        &c.token_type_snake,
        &c.token_use,
    ];
    for v in claims.into_iter().flatten() {
        let ok = v.as_str().is_some_and(|s| {
            ACCESS_TOKEN_KINDS.iter().any(|k| s.eq_ignore_ascii_case(k))
                || (bound && s.eq_ignore_ascii_case("dpop"))
        });
        if !ok {
            return Err(TokenError::NotAccessToken);
        }
    }
    Ok(())
}

/// A token split into its segments, header and claims base64url-decoded and checked to be
/// UTF-8 (RFC 7519 §7.2 steps 2 and 10), not yet parsed.
struct Decoded<'t> {
    header: String,
    claims: String,
    signing_input: &'t str,
    signature: &'t str,
}

/// A token split, decoded and parsed, not yet trusted. Header and claims borrow from the
/// [`Decoded`] segments, so their strings are not copied again.
struct Parsed<'d, 't> {
    header: Header<'d>,
    claims: Claims<'d>,
    signing_input: &'t str,
    signature: &'t str,
}

const MAX_KID_LEN: usize = 256;

fn decode(token: &str, max_len: usize) -> Result<Decoded<'_>, TokenError> {
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
    // strings of members we do not read without validating them, so check the whole text
    // (once: `from_str` below then trusts it).
    let text = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(TokenError::Malformed)
    };
    Ok(Decoded {
        header: text(h64)?,
        claims: text(p64)?,
        signing_input: &token[..d2],
        signature,
    })
}

impl<'t> Decoded<'t> {
    fn parse(&self) -> Result<Parsed<'_, 't>, TokenError> {
        // Duplicate members of the fields we read are a deserialization error (RFC 7515 §5.2:
        // reject duplicate header parameter names).
        let header: Header<'_> =
            serde_json::from_str(&self.header).map_err(|_| TokenError::Malformed)?;
        let claims: Claims<'_> =
            serde_json::from_str(&self.claims).map_err(|_| TokenError::Malformed)?;
        if header.crit.is_some() || header.kid.as_ref().is_some_and(|k| k.len() > MAX_KID_LEN) {
            return Err(TokenError::Malformed);
        }
        Ok(Parsed {
            header,
            claims,
            signing_input: self.signing_input,
            signature: self.signature,
        })
    }
}

fn verify_with(set: &KeySet, p: &Parsed<'_, '_>, alg: Alg) -> Option<bool> {
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
    let decoded = decode(token, max_len);
    let parsed = decoded.as_ref().map_err(|e| *e).and_then(Decoded::parse);
    let p = trace.check("token structure", parsed, |p| {
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

fn trusted_issuer<'r>(
    c: &Claims<'_>,
    resource: &'r Resource,
) -> Result<&'r TrustedIssuer, TokenError> {
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
    let claims: Result<Claims<'_>, TokenError> =
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
    const ACCESS: [&str; 3] = ["jwt", "at+jwt", "application/at+jwt"];
    match typ {
        None => Ok(()),
        Some(t) if ACCESS.iter().any(|a| t.eq_ignore_ascii_case(a)) => Ok(()),
        Some(_) => Err(TokenError::NotAccessToken),
    }
}

fn numeric_date(v: &Value) -> Result<f64, TokenError> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .ok_or(TokenError::Malformed)
}

fn check_claims(
    c: &Claims<'_>,
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
    let scopes = trace.check("scopes", granted_scopes(c, trusted), |s| {
        if s.is_empty() {
            "(none)".into()
        } else {
            s.joined()
        }
    })?;
    let client_id = trace.check("client id", client_id(c, trusted), |id| {
        id.as_deref().unwrap_or("(none)").to_owned()
    })?;
    let cnf_jkt = trace.check("confirmation", confirmation(c.cnf.as_ref()), |j| match j {
        Some(_) => "bound to a DPoP key (cnf.jkt)".to_owned(),
        None => "none: a bearer token".to_owned(),
    })?;
    Ok(Principal {
        issuer: trusted.issuer.clone(),
        subject: c.sub.as_deref().map(str::to_owned),
        client_id,
        scopes,
        expires_at: exp.max(0.0) as u64,
        cnf_jkt,
    })
}

/// RFC 7800 §3.1 `cnf`: absent, or an object whose only confirmation method is RFC 9449 §6.1
/// `jkt` (a base64url SHA-256 thumbprint, 43 characters). Another method (RFC 8705
/// `x5t#S256`: mutual TLS) cannot be checked here, and a sender-constrained token must not be
/// taken from whoever merely holds it: refused.
fn confirmation(cnf: Option<&Value>) -> Result<Option<String>, TokenError> {
    let obj = match cnf {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(TokenError::Malformed),
    };
    if obj.keys().any(|k| k != "jkt") {
        return Err(TokenError::NotAccessToken);
    }
    match obj.get("jkt") {
        Some(Value::String(j)) if j.len() == 43 => Ok(Some(j.clone())),
        _ => Err(TokenError::Malformed),
    }
}

/// The union of the scopes in the claims the issuer's `scope_claims` names, each parsed by
/// [`ClaimValue`]; a configured claim that is not a scope list makes the token malformed. A
/// token with none of them has no scopes.
fn granted_scopes(c: &Claims<'_>, trusted: &TrustedIssuer) -> Result<Scopes, TokenError> {
    let mut scopes = Scopes::default();
    for claim in &trusted.scope_claims {
        let value = match claim {
            ScopeClaim::Scope => &c.scope,
            ScopeClaim::Scp => &c.scp,
            ScopeClaim::Roles => &c.roles,
            ScopeClaim::Permissions => &c.permissions,
        };
        if let Some(v) = value {
            let parsed = ClaimValue::parse(v).map_err(|_| TokenError::Malformed)?;
            scopes.extend(parsed);
        }
    }
    Ok(scopes)
}

/// The client the token was issued to: the first of the issuer's `client_id_claims` present.
/// Every configured claim that is present must be a string, so a token cannot smuggle a
/// second, differently typed client id past the one we report.
fn client_id(c: &Claims<'_>, trusted: &TrustedIssuer) -> Result<Option<String>, TokenError> {
    let mut found = None;
    for claim in &trusted.client_id_claims {
        let value = match claim {
            ClientIdClaim::ClientId => &c.client_id,
            ClientIdClaim::Azp => &c.azp,
            ClientIdClaim::Cid => &c.cid,
            ClientIdClaim::Appid => &c.appid,
        };
        match value {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                found.get_or_insert_with(|| s.clone());
            }
            Some(_) => return Err(TokenError::Malformed),
        }
    }
    Ok(found)
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
#[path = "token_tests.rs"]
mod tests;
