//! One DPoP proof checked against the request it came with (RFC 9449 §4.2, §4.3): a compact
//! JWS whose header carries `typ: dpop+jwt`, an allowed asymmetric `alg` and the public `jwk`
//! that verifies it; claims `jti`, `htm`, `htu`, `iat` and `ath` bound to this request and
//! this access token. The proof's key is parsed and verified by `jwks::keys` (no crypto here).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::DpopError;
use crate::config::{Alg, DpopSettings};
use crate::jwks::{SkipReason, parse_public_jwk};
use crate::normalize;

/// Longest proof accepted: an RS512 proof with a 4096-bit key is ~2 kB; 8 kB leaves room
/// without letting one header cost much to decode.
pub const MAX_PROOF_BYTES: usize = 8192;
/// Longest `jti` remembered (RFC 9449 §4.2: 96 bits of randomness suffice).
pub const MAX_JTI_BYTES: usize = 256;

/// JWK members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4;
/// RFC 8037 §2; the AKP draft's `priv`). RFC 9449 §4.3 item 7: the `jwk` must not hold a
/// private key.
const PRIVATE_MEMBERS: [&str; 10] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv", "seed"];

/// A proof that passed every check but replay, with what binding and replay need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// RFC 7638 SHA-256 thumbprint of the proof key, base64url (what `cnf.jkt` holds).
    pub jkt: String,
    pub jti: String,
    pub iat: u64,
    pub alg: Alg,
    /// The server-issued nonce it carries (RFC 9449 §8), if any.
    pub nonce: Option<String>,
}

/// What the proof is checked against: the request as the client saw it.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The request method as Envoy passed it (RFC 9110 methods are case-sensitive).
    pub method: &'a str,
    /// `scheme://host[:port]` of the resource URI (see [`origin`]).
    pub origin: &'a str,
    /// The normalized request path, without query or fragment.
    pub path: &'a str,
    /// The access token the proof must hash (`ath`).
    pub token: &'a str,
    pub now: u64,
}

/// Other header parameters are ignored (RFC 7515 §4); a repeated one we read is an error.
#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: Option<String>,
    jwk: Option<Map<String, Value>>,
    // RFC 7515 §4.1.11: no extension is understood, so any `crit` makes the proof invalid.
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<Value>,
    htm: Option<Value>,
    htu: Option<Value>,
    iat: Option<Value>,
    ath: Option<Value>,
    nonce: Option<Value>,
}

/// The `DPoP` header value, exactly one (RFC 9449 §4.3 item 1). Envoy joins repeated headers
/// with `,`, which no compact JWS contains.
pub fn single_proof(value: Option<&str>) -> Result<&str, DpopError> {
    let v = value.map(str::trim).filter(|v| !v.is_empty());
    let v = v.ok_or(DpopError::ProofMissing)?;
    if v.contains(',') {
        return Err(DpopError::ProofMultiple);
    }
    Ok(v)
}

/// RFC 9449 §4.3: check `proof` against `expected` under `settings`.
pub fn verify(
    proof: &str,
    expected: &Expected<'_>,
    settings: &DpopSettings,
) -> Result<VerifiedProof, DpopError> {
    use DpopError as E;
    if proof.len() > MAX_PROOF_BYTES {
        return Err(E::ProofMalformed);
    }
    // Item 2: a well-formed JWS in compact serialization, exactly three segments.
    let mut parts = proof.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(E::ProofMalformed);
    };
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .filter(|b| !b.is_empty() && std::str::from_utf8(b).is_ok())
            .ok_or(E::ProofMalformed)
    };
    let header: Header = serde_json::from_slice(&decode(h64)?).map_err(|_| E::ProofMalformed)?;
    let claims: Claims = serde_json::from_slice(&decode(p64)?).map_err(|_| E::ProofMalformed)?;
    let signature = URL_SAFE_NO_PAD.decode(s64).map_err(|_| E::ProofMalformed)?;
    if header.crit.is_some() {
        return Err(E::ProofMalformed);
    }
    // Item 4: `typ` exactly `dpop+jwt` (RFC 9449 §4.2; not the media-type form).
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err(E::ProofTyp);
    }
    // Item 5: an asymmetric algorithm this resource allows (`none` and HS* never parse).
    let alg = header
        .alg
        .as_deref()
        .and_then(Alg::parse)
        .filter(|a| settings.algorithms.contains(a))
        .ok_or(E::ProofAlg)?;
    // Item 7: a public key, of a type that verifies `alg`.
    let jwk = header.jwk.ok_or(E::ProofKey)?;
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(E::ProofKey);
    }
    // A JWK without its own `alg` is parsed for the proof's only (an RSA key would otherwise
    // be prepared for all six RSA algorithms); one with another `alg` is refused below.
    let mut parsed_jwk = jwk.clone();
    parsed_jwk
        .entry("alg")
        .or_insert_with(|| Value::from(alg.as_str()));
    let key = parse_public_jwk(&Value::Object(parsed_jwk)).map_err(|e| match e {
        SkipReason::UnsupportedAlg => E::ProofAlg,
        _ => E::ProofKey,
    })?;
    if !key.accepts(alg) {
        return Err(E::ProofAlg);
    }
    // Item 6: the signature, with that key.
    let signing_input = &proof[..h64.len() + 1 + p64.len()];
    if !key.verify(alg, signing_input.as_bytes(), &signature) {
        return Err(E::ProofSignature);
    }
    let jkt = thumbprint(&jwk).ok_or(E::ProofKey)?;
    // Item 8 and §4.2: `jti` a string of bounded length.
    let jti = match claims.jti {
        Some(Value::String(j)) if !j.is_empty() && j.len() <= MAX_JTI_BYTES => j,
        _ => return Err(E::ProofJti),
    };
    // Item 8: `htm` the request's method.
    if claims.htm.as_ref().and_then(Value::as_str) != Some(expected.method) {
        return Err(E::ProofHtm);
    }
    // Item 9: `htu` the request URI, query and fragment ignored.
    let htu = claims.htu.as_ref().and_then(Value::as_str);
    if !htu.is_some_and(|u| same_target(u, expected.origin, expected.path)) {
        return Err(E::ProofHtu);
    }
    // Item 11: `iat` within the window, either way.
    let iat = claims
        .iat
        .as_ref()
        .and_then(Value::as_u64)
        .ok_or(E::ProofIat)?;
    if iat.abs_diff(expected.now) > settings.iat_window_seconds {
        return Err(E::ProofIat);
    }
    // Item 12 and §4.2: `ath`, base64url SHA-256 of the access token, whenever one is sent.
    let ath = claims.ath.as_ref().and_then(Value::as_str);
    if ath != Some(token_hash(expected.token).as_str()) {
        return Err(E::ProofAth);
    }
    let nonce = match claims.nonce {
        None => None,
        Some(Value::String(n)) => Some(n),
        Some(_) => return Err(E::ProofMalformed),
    };
    Ok(VerifiedProof {
        jkt,
        jti,
        iat,
        alg,
        nonce,
    })
}

/// RFC 9449 §4.2 `ath`: base64url (no padding) of SHA-256 of the ASCII access token.
pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

/// RFC 7638 §3: SHA-256 over the required members only, in lexicographic order, no
/// whitespace (serde_json escapes the values as JSON strings). `None` for a key type without
/// defined members (the key was accepted by `parse_public_jwk`, so only its shape is read).
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let s = |name: &str| jwk.get(name).and_then(Value::as_str).map(Value::from);
    let members: Vec<(&str, Value)> = match jwk.get("kty").and_then(Value::as_str)? {
        "EC" => vec![
            ("crv", s("crv")?),
            ("kty", "EC".into()),
            ("x", s("x")?),
            ("y", s("y")?),
        ],
        "RSA" => vec![("e", s("e")?), ("kty", "RSA".into()), ("n", s("n")?)],
        "OKP" => vec![("crv", s("crv")?), ("kty", "OKP".into()), ("x", s("x")?)],
        _ => return None,
    };
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    let canonical = format!("{{{}}}", body.join(","));
    Some(URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        canonical.as_bytes(),
    )))
}

/// `scheme://host[:port]` of an absolute http(s) URI, normalized per RFC 3986 §6.2.2.1 and
/// §6.2.3: scheme and host lower-case, the scheme's default port dropped, no userinfo. The
/// rest of the URI, from the first `/`, `?` or `#`, is returned beside it.
fn split_origin(uri: &str) -> Option<(String, &str)> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    Some((format!("{scheme}://{authority}"), tail))
}

/// The origin (`scheme://host[:port]`) of a resource URI, as [`split_origin`] normalizes it.
///
/// `htu` is compared with the resource URI's origin, not with `:authority` and
/// `x-forwarded-proto`: the client addresses the resource by the URI it was given (PRM
/// `resource`, the token's `aud`), while the Host and scheme Envoy sees can be rewritten by
/// load balancers in front of it or chosen by the client.
pub fn origin(resource_uri: &str) -> Option<String> {
    split_origin(resource_uri).map(|(o, _)| o)
}

/// RFC 9449 §4.3 item 9: `htu` names this origin and path; query and fragment are ignored,
/// the path is compared after the same normalization the request path went through.
fn same_target(htu: &str, origin: &str, path: &str) -> bool {
    let Some((htu_origin, tail)) = split_origin(htu) else {
        return false;
    };
    let tail = tail.split(['?', '#']).next().unwrap_or("");
    let tail = if tail.is_empty() { "/" } else { tail };
    htu_origin == origin && normalize::normalize_path(tail).is_ok_and(|p| p == path)
}

#[cfg(test)]
#[path = "proof_tests.rs"]
mod tests;
