//! Fuzz the token validator (`token::validate`) against the harness's own keys: no panic, and
//! no token validates unless the harness signed its `header.payload` itself. The first input
//! byte picks how the token is built:
//! - 0: the rest is the token text;
//! - 1: the rest replaces the claims JSON of a harness token, signature kept (never valid
//!   unless the claims text is unchanged);
//! - 2: the rest replaces the header JSON, signature kept (likewise);
//! - 3: the rest replaces the signature bytes (valid only if the signing input is);
//! - 4: the rest is `header` NUL `claims`, signed for real with a trusted key: then
//!   validation must agree with an independent reading of the JSON (the `alg` the key signs
//!   as, no `crit`, exact issuer, audience, `exp`/`nbf`/`iat` within the leeway, the scope
//!   claims `scope`/`scp` — the issuer's default `scope_claims` — well-formed scope lists, the
//!   client id claims `client_id`/`azp` strings, `cnf` absent or only a `jkt` thumbprint).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_authz::token::validate;
use mcp_authz_fuzz::{FIXTURE, ISSUER, LEEWAY, MAX_TOKEN_BYTES, RESOURCE_URI, b64};
use serde_json::Value;

/// Claims a correctly signed token must carry for `validate` to accept it (RFC 7519 §4.1,
/// RFC 8707), read with serde_json (last duplicate wins).
fn claims_acceptable(
    header: &[u8],
    claims: &[u8],
    signed_alg: &str,
    now: u64,
) -> Result<(), String> {
    let h: Value = serde_json::from_slice(header).map_err(|e| format!("header: {e}"))?;
    let c: Value = serde_json::from_slice(claims).map_err(|e| format!("claims: {e}"))?;
    if h.get("alg").and_then(Value::as_str) != Some(signed_alg) {
        return Err(format!("alg {:?} but signed as {signed_alg}", h.get("alg")));
    }
    if h.get("crit").is_some_and(|v| !v.is_null()) {
        return Err("crit present".into());
    }
    if c.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return Err(format!("iss {:?}", c.get("iss")));
    }
    let aud_ok = |v: &Value| {
        v.as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case(RESOURCE_URI))
    };
    let aud = c.get("aud");
    if !aud.is_some_and(|a| aud_ok(a) || a.as_array().is_some_and(|l| l.iter().any(aud_ok))) {
        return Err(format!("aud {aud:?}"));
    }
    let (now, leeway) = (now as f64, LEEWAY as f64);
    match c.get("exp").and_then(Value::as_f64) {
        Some(exp) if now < exp + leeway => {}
        other => return Err(format!("exp {other:?}")),
    }
    for claim in ["nbf", "iat"] {
        match c.get(claim) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_f64() {
                Some(t) if t <= now + leeway => {}
                _ => return Err(format!("{claim} {v}")),
            },
        }
    }
    for claim in ["scope", "scp"] {
        if !scope_claim_ok(c.get(claim)) {
            return Err(format!("{claim} {:?}", c.get(claim)));
        }
    }
    for claim in ["client_id", "azp"] {
        if !matches!(c.get(claim), None | Some(Value::Null | Value::String(_))) {
            return Err(format!("{claim} {:?}", c.get(claim)));
        }
    }
    // RFC 7800 / RFC 9449 §6.1: `cnf` absent, or exactly `{"jkt": <43-character thumbprint>}`.
    match c.get("cnf") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o))
            if o.len() == 1
                && o.get("jkt")
                    .and_then(Value::as_str)
                    .is_some_and(|j| j.len() == 43) => {}
        Some(other) => return Err(format!("cnf {other}")),
    }
    Ok(())
}

/// A scope claim `validate` may accept (scope::ClaimValue, restated from RFC 6749 §3.3 and
/// RFC 9068 §2.2.3): absent or null; a string, empty or space-delimited with no empty item;
/// an array of non-empty strings without spaces. No control character anywhere.
fn scope_claim_ok(v: Option<&Value>) -> bool {
    let clean = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty() || s.split(' ').all(clean),
        Some(Value::Array(items)) => items
            .iter()
            .all(|i| i.as_str().is_some_and(|s| clean(s) && !s.contains(' '))),
        Some(_) => false,
    }
}

fn parts(token: &str) -> (Vec<u8>, Vec<u8>, &str) {
    use base64::Engine;
    let d = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .expect("harness token segment")
    };
    let mut it = token.split('.');
    let (h, c, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    (d(h), d(c), s)
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (&pick, body) = rest.split_first().unwrap_or((&0, &[]));
    let base = &f.tokens[usize::from(pick) % f.tokens.len()].token;
    let (header, claims, signature) = parts(base);
    let mut signed_as = None;
    let token = match mode % 5 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => format!("{}.{}.{signature}", b64(&header), b64(body)),
        2 => format!("{}.{}.{signature}", b64(body), b64(&claims)),
        3 => format!("{}.{}.{}", b64(&header), b64(&claims), b64(body)),
        _ => {
            let key = &f.keys[usize::from(pick) % f.keys.len()];
            let (h, c) = match body.iter().position(|&b| b == 0) {
                Some(i) => (&body[..i], &body[i + 1..]),
                None => (&key.header().into_bytes()[..], body),
            };
            signed_as = Some((key.alg(), h.to_vec(), c.to_vec()));
            key.mint_raw(h, c)
        }
    };
    let result = f.runtime.block_on(validate(
        &token,
        f.resource(),
        &f.jwks,
        f.now,
        MAX_TOKEN_BYTES,
    ));
    let Ok(validated) = result else {
        return;
    };
    match signed_as {
        None => {
            let input = token.rsplit_once('.').map_or("", |p| p.0);
            assert!(
                f.is_valid_signing_input(input),
                "a token the harness never signed validated: {token:?}"
            );
        }
        Some((alg, h, c)) => {
            if let Err(why) = claims_acceptable(&h, &c, alg, f.now) {
                panic!("validated although {why}: {token:?} -> {validated:?}");
            }
        }
    }
});
