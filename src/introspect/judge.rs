//! An introspection answer judged like a JWT's claims (RFC 7662 §2.2, §4): `active` must be
//! literally `true`; then the same checks a verified JWT's claims pass (`token.rs`): `exp`
//! (required here too, so a cached answer never outlives the token), `nbf`/`iat` with the
//! issuer's leeway, `aud` naming this resource, every token-kind claim saying "access token"
//! (`token_type` included), the scopes from `scope`, and `cnf` (only `jkt`, RFC 9449 §6.2). `iss`, when present, must be the
//! issuer whose endpoint answered.

use serde_json::{Map, Value};

use crate::config::{Resource, TrustedIssuer};
use crate::principal::Principal;
use crate::token::{self, TokenError};
use crate::trace::Trace;

/// Why introspection refused a token, or could not judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `active` is not `true`: revoked, expired, unknown to the issuer (RFC 7662 §2.2).
    #[error("token is not active")]
    Inactive,
    /// Active, but not for this resource, or not (or no longer) valid.
    #[error("{0}")]
    Token(TokenError),
    /// The endpoint could not be asked, or gave no usable answer (fail closed: 503).
    #[error("token introspection is unavailable")]
    Unavailable,
}

/// Judge `answer` from `issuer`'s endpoint for `resource` at `now`.
pub fn judge(
    answer: &Map<String, Value>,
    issuer: &TrustedIssuer,
    resource: &Resource,
    now: u64,
    trace: &mut Trace,
) -> Result<Principal, Refusal> {
    // RFC 7662 §2.2: `active` is REQUIRED and boolean; a string "true" is not true.
    if answer.get("active") != Some(&Value::Bool(true)) {
        trace.fail("introspection", &Refusal::Inactive);
        return Err(Refusal::Inactive);
    }
    let mut claims = answer.clone();
    match claims.get("iss") {
        None | Some(Value::Null) => {
            // The answer speaks for the issuer that was asked.
            claims.insert("iss".into(), Value::String(issuer.issuer.clone()));
        }
        Some(Value::String(s)) if *s == issuer.issuer => {}
        Some(_) => {
            trace.fail("introspection", &TokenError::UnknownIssuer);
            return Err(Refusal::Token(TokenError::UnknownIssuer));
        }
    }
    // A sender-constrained token (RFC 9449 §6.2 `cnf.jkt`, RFC 8705 `cnf.x5t#S256`) is not a
    // bearer token: `cnf.jkt` becomes the principal's binding, checked against the request's
    // DPoP proof (`dpop::check_binding`); any other confirmation method is refused by the
    // claims check (`token::confirmation`).
    let json = serde_json::to_vec(&claims).map_err(|_| Refusal::Token(TokenError::Malformed))?;
    let mut inner = Trace::off();
    let judged = token::check_claims_offline(&json, resource, now, &mut inner);
    match judged {
        Ok(p) => {
            trace.ok("introspection", || {
                format!(
                    "active; exp, aud, kind checked; scopes [{}]",
                    p.scopes.joined()
                )
            });
            Ok(p)
        }
        Err(e) => {
            trace.fail("introspection", &e);
            Err(Refusal::Token(e))
        }
    }
}

/// Until when an answer may be reused (seconds since the epoch): an active one for at most
/// `ttl` and never past its `exp`; an inactive one (or one without a usable `exp`) for
/// `negative_ttl`.
pub fn cache_until(answer: &Map<String, Value>, now: u64, ttl: u64, negative_ttl: u64) -> u64 {
    let active = answer.get("active") == Some(&Value::Bool(true));
    let exp = answer
        .get("exp")
        .and_then(Value::as_f64)
        .filter(|e| e.is_finite() && *e > 0.0);
    match (active, exp) {
        (true, Some(exp)) => now.saturating_add(ttl).min(exp as u64),
        _ => now.saturating_add(negative_ttl),
    }
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
