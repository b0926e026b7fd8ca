use serde_json::{Value, json};

use super::*;
use crate::config::Config;

fn resource() -> Resource {
    Config::from_yaml(
        "resources:\n  - id: a\n    uri: https://mcp.example.com/mcp\n    issuers: [{issuer: https://iam, extra_audiences: [client-1]}]\n",
    )
    .unwrap()
    .resources
    .remove(0)
}

const NOW: u64 = 1_000_000;

fn run(v: Value) -> Result<Principal, Refusal> {
    let r = resource();
    let Value::Object(m) = v else { panic!() };
    judge(&m, &r.issuers[0], &r, NOW, &mut Trace::off())
}

fn active(extra: Value) -> Value {
    let mut base = json!({"active": true, "aud": "https://mcp.example.com/mcp",
        "exp": NOW + 300, "scope": "files:read files:list", "sub": "u1", "client_id": "c1"});
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

#[test]
fn active_answer_is_a_principal() {
    let p = run(active(json!({}))).unwrap();
    assert_eq!(p.issuer, "https://iam");
    assert_eq!(p.subject.as_deref(), Some("u1"));
    assert_eq!(p.client_id.as_deref(), Some("c1"));
    assert_eq!(p.scopes.joined(), "files:read files:list");
    assert_eq!(p.expires_at, NOW + 300);
    // `iss` present and equal; `token_type` of an access token.
    assert!(
        run(active(
            json!({"iss": "https://iam", "token_type": "Bearer"})
        ))
        .is_ok()
    );
    assert!(run(active(json!({"aud": ["x", "client-1"]}))).is_ok());
}

#[test]
fn active_must_be_literally_true() {
    for a in [
        json!(false),
        json!("true"),
        json!(1),
        json!(null),
        json!([true]),
    ] {
        assert_eq!(run(active(json!({"active": a}))), Err(Refusal::Inactive));
    }
    let mut v = active(json!({}));
    v.as_object_mut().unwrap().remove("active");
    assert_eq!(run(v), Err(Refusal::Inactive));
    assert_eq!(run(json!({"active": false})), Err(Refusal::Inactive));
}

#[test]
fn claims_are_judged_like_a_jwt() {
    let tok = |e| Err(Refusal::Token(e));
    assert_eq!(
        run(active(json!({"aud": "https://other/mcp"}))),
        tok(TokenError::WrongAudience)
    );
    let mut no_aud = active(json!({}));
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(run(no_aud), tok(TokenError::WrongAudience));
    assert_eq!(
        run(active(json!({"iss": "https://evil"}))),
        tok(TokenError::UnknownIssuer)
    );
    assert_eq!(
        run(active(json!({"iss": 7}))),
        tok(TokenError::UnknownIssuer)
    );
    // leeway 30 s
    assert!(run(active(json!({"exp": NOW - 29}))).is_ok());
    assert_eq!(
        run(active(json!({"exp": NOW - 30}))),
        tok(TokenError::Expired)
    );
    let mut no_exp = active(json!({}));
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(run(no_exp), tok(TokenError::MissingExp));
    assert_eq!(
        run(active(json!({"nbf": NOW + 31}))),
        tok(TokenError::NotYetValid)
    );
    assert_eq!(
        run(active(json!({"token_type": "refresh_token"}))),
        tok(TokenError::NotAccessToken)
    );
    // RFC 9449 §6.2: a bound token's `cnf.jkt` becomes the principal's binding (checked
    // against the request's proof by `dpop::check_binding`); `token_type: DPoP` only with it.
    const JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
    let bound = run(active(json!({"token_type": "DPoP", "cnf": {"jkt": JKT}}))).unwrap();
    assert_eq!(bound.cnf_jkt.as_deref(), Some(JKT));
    assert_eq!(run(active(json!({}))).unwrap().cnf_jkt, None);
    assert_eq!(
        run(active(json!({"token_type": "DPoP"}))),
        tok(TokenError::NotAccessToken)
    );
    assert_eq!(
        run(active(json!({"cnf": {"jkt": "abc"}}))),
        tok(TokenError::Malformed)
    );
    assert_eq!(run(active(json!({"cnf": "x"}))), tok(TokenError::Malformed));
    // Mutual-TLS binding (RFC 8705) cannot be checked here: refused, as any other method.
    assert_eq!(
        run(active(json!({"cnf": {"x5t#S256": JKT}}))),
        tok(TokenError::NotAccessToken)
    );
    assert_eq!(
        run(active(json!({"cnf": {"jkt": JKT, "x5t#S256": JKT}}))),
        tok(TokenError::NotAccessToken)
    );
    assert_eq!(run(active(json!({"scope": 7}))), tok(TokenError::Malformed));
}

#[test]
fn cache_lifetime_never_passes_exp() {
    let m = |v: Value| v.as_object().unwrap().clone();
    // min(ttl, exp)
    assert_eq!(
        cache_until(&m(json!({"active": true, "exp": NOW + 10})), NOW, 60, 5),
        NOW + 10
    );
    assert_eq!(
        cache_until(&m(json!({"active": true, "exp": NOW + 600})), NOW, 60, 5),
        NOW + 60
    );
    // negatives and answers without a usable exp: the negative lifetime
    assert_eq!(
        cache_until(&m(json!({"active": false})), NOW, 60, 5),
        NOW + 5
    );
    assert_eq!(
        cache_until(&m(json!({"active": true})), NOW, 60, 5),
        NOW + 5
    );
    assert_eq!(
        cache_until(&m(json!({"active": true, "exp": "soon"})), NOW, 60, 5),
        NOW + 5
    );
    // already expired: nothing left
    assert_eq!(
        cache_until(&m(json!({"active": true, "exp": NOW - 1})), NOW, 60, 5),
        NOW - 1
    );
}
