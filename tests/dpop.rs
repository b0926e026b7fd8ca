//! DPoP-bound tokens (RFC 9449) through gRPC Check: proofs built here with the test keys
//! (`common`), tokens bound with `cnf.jkt` (in the JWT, or in an introspection answer from the
//! in-test endpoint); every proof check, the binding, the downgrade to `Bearer`, the modes,
//! the challenges, and the bounded replay cache.

mod common;
#[path = "common/introspection_server.rs"]
mod introspection_server;

use common::*;
use introspection_server::IntrospectionServer;
use serde_json::{Value, json};

const URI: &str = "https://mcp.example.com/mcp";

/// RFC 7638 thumbprint of a public JWK, computed independently of `src/dpop` (serde_json
/// sorts object members, so the required ones come out in lexicographic order).
fn jkt(key: &TestKey) -> String {
    let jwk = key.jwk();
    let required: &[&str] = match jwk["kty"].as_str().unwrap() {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        _ => &["crv", "kty", "x"],
    };
    let canonical: serde_json::Map<String, Value> = required
        .iter()
        .map(|m| ((*m).to_owned(), jwk[*m].clone()))
        .collect();
    let text = Value::Object(canonical).to_string();
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
}

fn ath(token: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

fn jti() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b64(&b)
}

/// A proof by `key` for `htm` `htu` and `token`; `header` and `claims` patch the defaults
/// (a `null` value removes the member).
fn proof_with(
    key: &TestKey,
    htm: &str,
    htu: &str,
    token: &str,
    header: Value,
    claims: Value,
) -> String {
    let mut h = json!({"typ": "dpop+jwt", "alg": key.default_alg(), "jwk": key.jwk()});
    let mut c = json!({"jti": jti(), "htm": htm, "htu": htu, "iat": now(), "ath": ath(token)});
    for (base, patch) in [(&mut h, header), (&mut c, claims)] {
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
    }
    key.mint_with_header(&h, &c)
}

fn proof(key: &TestKey, token: &str) -> String {
    proof_with(key, "POST", URI, token, json!({}), json!({}))
}

/// The token the IdP (RSA) issues, bound to `key` when given.
fn token(h: &Harness, scope: &str, bound_to: Option<&TestKey>) -> String {
    let mut c = h.claims(scope);
    if let Some(k) = bound_to {
        c["cnf"] = json!({"jkt": jkt(k)});
    }
    RSA.mint(&c)
}

async fn harness(dpop: &str) -> Harness {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", &format!("{ROUTES}    dpop: {dpop}\n"));
    Harness::start(idp, &yaml, true).await
}

async fn dpop_req(h: &mut Harness, token: &str, proof: &str) -> Answer {
    h.check(
        Req::new("POST", "/mcp")
            .header("authorization", &format!("DPoP {token}"))
            .header("dpop", proof),
    )
    .await
}

fn proofs(h: &Harness, result: &str) -> u64 {
    h.app
        .metrics
        .counter("mcp_authz_dpop_proofs_total", &[("result", result)])
}

/// The challenge of an `allowed` resource: `Bearer` first (clients that read only a leading
/// Bearer challenge find `resource_metadata`), then `DPoP` with `algs`; the error on `DPoP`.
fn assert_dpop_error(a: &Answer, error: &str, reason: &str) {
    assert_eq!((a.status, a.reason()), (401, reason), "{a:?}");
    let www = a.www().expect("challenge");
    let (bearer, dpop) = www.split_once(", DPoP ").expect("two challenges");
    assert!(bearer.starts_with("Bearer realm=\"MCP Server\""), "{www}");
    assert!(!bearer.contains("error="), "{www}");
    assert!(
        dpop.starts_with("algs=\"ES256 EdDSA RS256 PS256\", realm=\"MCP Server\""),
        "{www}"
    );
    assert!(dpop.contains(&format!("error=\"{error}\"")), "{www}");
    for part in [bearer, dpop] {
        assert!(
            part.contains(&format!("resource_metadata=\"{PRM_URL}\"")),
            "{www}"
        );
    }
}

#[tokio::test]
async fn valid_proofs_with_each_key_type_are_allowed() {
    let mut h = harness("{mode: allowed}").await;
    let ok0 = proofs(&h, "ok");
    for key in [&*EC, &*ED, &*RSA2] {
        let t = token(&h, "files:list", Some(key));
        let a = dpop_req(&mut h, &t, &proof(key, &t)).await;
        assert_eq!(a.status, 200, "{} {a:?}", key.default_alg());
        assert_eq!(a.headers["x-mcp-authz-subject"], "user-1");
    }
    assert_eq!(proofs(&h, "ok"), ok0 + 3);
    // `htu` compared after RFC 3986 §6 normalization; query and fragment ignored (§4.3 item 9).
    let t = token(&h, "files:list", Some(&EC));
    for htu in [
        "HTTPS://MCP.Example.com/mcp",
        "https://mcp.example.com:443/mcp",
        "https://mcp.example.com/mcp?x=1#frag",
    ] {
        let p = proof_with(&EC, "POST", htu, &t, json!({}), json!({}));
        assert_eq!(dpop_req(&mut h, &t, &p).await.status, 200, "{htu}");
    }
    // The scheme name is case-insensitive, like Bearer.
    let a = h
        .check(
            Req::new("POST", "/mcp")
                .header("authorization", &format!("dpop {t}"))
                .header("dpop", &proof(&EC, &t)),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
}

#[tokio::test]
async fn a_replayed_proof_is_refused() {
    let mut h = harness("{mode: allowed}").await;
    let t = token(&h, "files:list", Some(&EC));
    let p = proof(&EC, &t);
    assert_eq!(dpop_req(&mut h, &t, &p).await.status, 200);
    let a = dpop_req(&mut h, &t, &p).await;
    assert_dpop_error(&a, "invalid_dpop_proof", "dpop_proof_replayed");
    assert_eq!(proofs(&h, "dpop_proof_replayed"), 1);
    // The same jti from another key is another proof.
    let t2 = token(&h, "files:list", Some(&ED));
    let same_jti = json!({"jti": "fixed-jti"});
    let p1 = proof_with(&EC, "POST", URI, &t, json!({}), same_jti.clone());
    let p2 = proof_with(&ED, "POST", URI, &t2, json!({}), same_jti);
    assert_eq!(dpop_req(&mut h, &t, &p1).await.status, 200);
    assert_eq!(dpop_req(&mut h, &t2, &p2).await.status, 200);
}

#[tokio::test]
async fn htm_and_htu_must_name_this_request() {
    let mut h = harness("{mode: allowed}").await;
    let t = token(&h, "files:list", Some(&EC));
    let p = proof_with(&EC, "GET", URI, &t, json!({}), json!({}));
    assert_dpop_error(
        &dpop_req(&mut h, &t, &p).await,
        "invalid_dpop_proof",
        "dpop_proof_htm",
    );
    for htu in [
        "https://mcp.example.com/mcp/other",
        "https://evil.example.com/mcp",
        "http://mcp.example.com/mcp",
        "https://mcp.example.com:8443/mcp",
        "/mcp",
    ] {
        let p = proof_with(&EC, "POST", htu, &t, json!({}), json!({}));
        assert_dpop_error(
            &dpop_req(&mut h, &t, &p).await,
            "invalid_dpop_proof",
            "dpop_proof_htu",
        );
    }
    // The path is the request's: a proof for /mcp does not cover /mcp/files.
    let a = h
        .check(
            Req::new("POST", "/mcp/files")
                .header("authorization", &format!("DPoP {t}"))
                .header("dpop", &proof(&EC, &t)),
        )
        .await;
    assert_eq!(a.reason(), "dpop_proof_htu", "{a:?}");
}

#[tokio::test]
async fn iat_outside_the_window_is_refused() {
    let mut h = harness("{mode: allowed, iat_window_seconds: 30}").await;
    let t = token(&h, "files:list", Some(&EC));
    for iat in [
        json!(now() - 31),
        json!(now() + 31),
        json!("now"),
        json!(null),
    ] {
        let p = proof_with(&EC, "POST", URI, &t, json!({}), json!({"iat": iat}));
        assert_dpop_error(
            &dpop_req(&mut h, &t, &p).await,
            "invalid_dpop_proof",
            "dpop_proof_iat",
        );
    }
    let p = proof_with(&EC, "POST", URI, &t, json!({}), json!({"iat": now() - 20}));
    assert_eq!(dpop_req(&mut h, &t, &p).await.status, 200);
}

#[tokio::test]
async fn the_token_must_be_bound_to_the_proof_key() {
    let mut h = harness("{mode: allowed}").await;
    let other = TestKey::ec("other");
    let t = token(&h, "files:list", Some(&EC));
    let a = dpop_req(&mut h, &t, &proof(&other, &t)).await;
    assert_dpop_error(&a, "invalid_token", "dpop_key_mismatch");
    // A DPoP-scheme token without cnf.jkt binds nothing.
    let unbound = token(&h, "files:list", None);
    let a = dpop_req(&mut h, &unbound, &proof(&EC, &unbound)).await;
    assert_dpop_error(&a, "invalid_token", "dpop_token_unbound");
    // A proof with a mismatching key does not use up its jti.
    let p = proof(&other, &t);
    assert_eq!(dpop_req(&mut h, &t, &p).await.reason(), "dpop_key_mismatch");
    assert_eq!(dpop_req(&mut h, &t, &p).await.reason(), "dpop_key_mismatch");
}

#[tokio::test]
async fn ath_must_be_the_hash_of_this_token() {
    let mut h = harness("{mode: allowed}").await;
    let t = token(&h, "files:list", Some(&EC));
    let other = token(&h, "files:read", Some(&EC));
    for claims in [
        json!({"ath": null}),
        json!({"ath": ath(&other)}),
        json!({"ath": 5}),
    ] {
        let p = proof_with(&EC, "POST", URI, &t, json!({}), claims);
        assert_dpop_error(
            &dpop_req(&mut h, &t, &p).await,
            "invalid_dpop_proof",
            "dpop_proof_ath",
        );
    }
}

#[tokio::test]
async fn the_proof_header_must_be_a_public_key_signed_dpop_jwt() {
    let mut h = harness("{mode: allowed}").await;
    let t = token(&h, "files:list", Some(&EC));
    let mut private = EC.jwk();
    private["d"] = json!(b64(&[7u8; 32]));
    let cases: Vec<(Value, &str)> = vec![
        (json!({"typ": "jwt"}), "dpop_proof_typ"),
        (json!({"typ": "application/dpop+jwt"}), "dpop_proof_typ"),
        (json!({"typ": null}), "dpop_proof_typ"),
        (json!({"alg": "none"}), "dpop_proof_alg"),
        (json!({"alg": "HS256"}), "dpop_proof_alg"),
        (json!({"alg": "ES384"}), "dpop_proof_alg"),
        // On the allow-list, but not an algorithm of this (P-256) key: the alg must fit it,
        // whether the JWK names its own `alg` or not.
        (json!({"alg": "RS256"}), "dpop_proof_alg"),
        (
            json!({"alg": "RS256", "jwk": {"kty": "EC", "crv": "P-256",
                "x": EC.jwk()["x"], "y": EC.jwk()["y"]}}),
            "dpop_proof_alg",
        ),
        (json!({"jwk": private}), "dpop_proof_key"),
        (
            json!({"jwk": {"kty": "oct", "k": "c2VjcmV0"}}),
            "dpop_proof_key",
        ),
        (json!({"jwk": null}), "dpop_proof_key"),
        (json!({"crit": ["x"]}), "dpop_proof_malformed"),
    ];
    for (header, reason) in cases {
        let p = proof_with(&EC, "POST", URI, &t, header.clone(), json!({}));
        let a = dpop_req(&mut h, &t, &p).await;
        assert_dpop_error(&a, "invalid_dpop_proof", reason);
        assert!(!a.www().unwrap().contains(&p), "{header}");
    }
    // An unsigned `none` proof and an HMAC one are refused however they are built.
    let none = format!(
        "{}.{}.",
        b64(json!({"typ": "dpop+jwt", "alg": "none", "jwk": EC.jwk()})
            .to_string()
            .as_bytes()),
        b64(
            json!({"jti": jti(), "htm": "POST", "htu": URI, "iat": now(), "ath": ath(&t)})
                .to_string()
                .as_bytes()
        )
    );
    assert_eq!(dpop_req(&mut h, &t, &none).await.reason(), "dpop_proof_alg");
    // A signature by another key over the same header.
    let other = TestKey::ec("other");
    let forged = mint_raw(
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": EC.jwk()}).to_string(),
        &json!({"jti": jti(), "htm": "POST", "htu": URI, "iat": now(), "ath": ath(&t)}).to_string(),
        |m| other.sign(m),
    );
    assert_dpop_error(
        &dpop_req(&mut h, &t, &forged).await,
        "invalid_dpop_proof",
        "dpop_proof_signature",
    );
    for bad in ["a.b", "a.b.c.d", "not a jws", &"x".repeat(9000)] {
        assert_eq!(
            dpop_req(&mut h, &t, bad).await.reason(),
            "dpop_proof_malformed",
            "{bad:.20}"
        );
    }
    for jti in [json!(null), json!(""), json!(7), json!("j".repeat(257))] {
        let p = proof_with(&EC, "POST", URI, &t, json!({}), json!({"jti": jti}));
        assert_eq!(dpop_req(&mut h, &t, &p).await.reason(), "dpop_proof_jti");
    }
}

#[tokio::test]
async fn exactly_one_proof_header() {
    let mut h = harness("{mode: allowed}").await;
    let t = token(&h, "files:list", Some(&EC));
    // Envoy joins repeated headers with ','.
    let two = format!("{},{}", proof(&EC, &t), proof(&EC, &t));
    assert_dpop_error(
        &dpop_req(&mut h, &t, &two).await,
        "invalid_dpop_proof",
        "dpop_proof_multiple",
    );
    let a = h
        .check(Req::new("POST", "/mcp").header("authorization", &format!("DPoP {t}")))
        .await;
    assert_dpop_error(&a, "invalid_dpop_proof", "dpop_proof_missing");
}

#[tokio::test]
async fn a_bound_token_sent_as_bearer_is_refused_in_every_mode() {
    for mode in ["{mode: allowed}", "{mode: off}"] {
        let mut h = harness(mode).await;
        let t = token(&h, "files:list", Some(&EC));
        let a = h.bearer("POST", "/mcp", &t).await;
        assert_eq!(
            (a.status, a.reason()),
            (401, "dpop_bearer_downgrade"),
            "{mode}"
        );
        let www = a.www().unwrap();
        assert!(www.contains("error=\"invalid_token\""), "{www}");
        assert!(
            www.contains(&format!("resource_metadata=\"{PRM_URL}\"")),
            "{www}"
        );
        // Even with a valid proof beside it: the scheme says bearer.
        let a = h
            .check(
                Req::new("POST", "/mcp")
                    .header("authorization", &format!("Bearer {t}"))
                    .header("dpop", &proof(&EC, &t)),
            )
            .await;
        assert_eq!(a.reason(), "dpop_bearer_downgrade", "{mode}");
    }
}

#[tokio::test]
async fn mode_off_takes_no_dpop_scheme_and_sends_no_dpop_challenge() {
    let mut h = harness("{mode: off}").await;
    let t = token(&h, "files:list", Some(&EC));
    let a = dpop_req(&mut h, &t, &proof(&EC, &t)).await;
    assert_eq!((a.status, a.reason()), (401, "no_credentials"));
    assert!(a.www().unwrap().starts_with("Bearer realm="));
    assert!(!a.www().unwrap().contains("DPoP"));
    let plain = token(&h, "files:list", None);
    assert_eq!(h.bearer("POST", "/mcp", &plain).await.status, 200);
}

#[tokio::test]
async fn allowed_mode_still_takes_plain_bearer_tokens() {
    let mut h = harness("{mode: allowed}").await;
    let t = token(&h, "files:list", None);
    let a = h.bearer("POST", "/mcp", &t).await;
    assert_eq!(a.status, 200, "{a:?}");
    // A Bearer request's token errors go on the Bearer challenge.
    let a = h.bearer("POST", "/mcp", "not-a-jwt").await;
    let www = a.www().unwrap();
    let (bearer, dpop) = www.split_once(", DPoP ").unwrap();
    assert!(bearer.contains("error=\"invalid_token\""), "{www}");
    assert!(!dpop.contains("error="), "{www}");
    // No credentials: both challenges, no error, the route's scopes.
    let a = h.check(Req::new("POST", "/mcp")).await;
    assert_eq!((a.status, a.reason()), (401, "no_credentials"));
    let www = a.www().unwrap();
    assert!(!www.contains("error="), "{www}");
    assert!(www.contains("DPoP algs="), "{www}");
    assert_eq!(www.matches("scope=\"files:list\"").count(), 2, "{www}");
}

#[tokio::test]
async fn required_mode_refuses_bearer() {
    let mut h = harness("{mode: required, algorithms: [ES256, EdDSA]}").await;
    let t = token(&h, "files:list", None);
    let a = h.bearer("POST", "/mcp", &t).await;
    assert_eq!((a.status, a.reason()), (401, "dpop_required"));
    let www = a.www().unwrap();
    assert!(
        www.starts_with("DPoP algs=\"ES256 EdDSA\", realm=\"MCP Server\", error=\"invalid_token\""),
        "{www}"
    );
    assert!(!www.contains("Bearer"), "{www}");
    let a = h.check(Req::new("POST", "/mcp")).await;
    assert_eq!(a.reason(), "no_credentials");
    assert!(a.www().unwrap().starts_with("DPoP algs="), "{a:?}");
    let bound = token(&h, "files:list", Some(&EC));
    assert_eq!(
        dpop_req(&mut h, &bound, &proof(&EC, &bound)).await.status,
        200
    );
    // RS256 is not in this resource's list.
    let bound = token(&h, "files:list", Some(&RSA2));
    let a = dpop_req(&mut h, &bound, &proof(&RSA2, &bound)).await;
    assert_eq!(a.reason(), "dpop_proof_alg");
}

#[tokio::test]
async fn insufficient_scope_on_a_dpop_request_uses_the_dpop_challenge() {
    let mut h = harness("{mode: allowed}").await;
    let t = token(&h, "files:list", Some(&EC));
    let a = h
        .check(
            Req::new("GET", "/mcp/files/a")
                .header("authorization", &format!("DPoP {t}"))
                .header(
                    "dpop",
                    &proof_with(
                        &EC,
                        "GET",
                        "https://mcp.example.com/mcp/files/a",
                        &t,
                        json!({}),
                        json!({}),
                    ),
                ),
        )
        .await;
    assert_eq!((a.status, a.reason()), (403, "insufficient_scope"), "{a:?}");
    let www = a.www().unwrap();
    let (bearer, dpop) = www.split_once(", DPoP ").unwrap();
    assert!(dpop.contains("error=\"insufficient_scope\""), "{www}");
    assert!(!bearer.contains("error="), "{www}");
}

#[tokio::test]
async fn the_replay_cache_is_bounded_and_fails_closed() {
    let mut h = harness("{mode: allowed, replay_cache_entries: 3}").await;
    let t = token(&h, "files:list", Some(&EC));
    let first = proof(&EC, &t);
    assert_eq!(dpop_req(&mut h, &t, &first).await.status, 200);
    for _ in 0..2 {
        assert_eq!(dpop_req(&mut h, &t, &proof(&EC, &t)).await.status, 200);
    }
    let config = h.app.authorizer.config.load_full();
    let resource = config.resource("files").unwrap();
    let cache = h.app.authorizer.dpop.replay_cache(resource);
    assert_eq!(cache.len(), 3);
    for _ in 0..5 {
        let a = dpop_req(&mut h, &t, &proof(&EC, &t)).await;
        assert_eq!(
            (a.status, a.reason()),
            (503, "dpop_replay_cache_full"),
            "{a:?}"
        );
        assert_eq!(a.headers.get("retry-after").map(String::as_str), Some("30"));
    }
    // Nothing was evicted: the first proof is still not accepted again.
    assert_ne!(dpop_req(&mut h, &t, &first).await.status, 200);
    assert_eq!(cache.len(), 3);
    assert_eq!(proofs(&h, "dpop_replay_cache_full"), 6);
}

#[tokio::test]
async fn an_introspection_answer_with_cnf_jkt_binds_the_token() {
    let server = IntrospectionServer::start().await;
    let secret = tempdir().join("introspection-secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(
        &idp.issuer,
        "envoy: {check_timeout_ms: 4000}",
        &format!(
            "        introspection: {{endpoint: \"{}\", client_id: \"rs\", client_secret_file: {}}}\n{ROUTES}    dpop: {{mode: allowed}}\n",
            server.endpoint(),
            secret.display()
        ),
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let t = format!("opaque-dpop-{}", std::process::id());
    server.answer(
        &t,
        json!({"active": true, "aud": URI, "exp": now() + 300, "scope": "files:list",
            "sub": "user-9", "token_type": "DPoP", "cnf": {"jkt": jkt(&EC)}}),
    );
    let a = dpop_req(&mut h, &t, &proof(&EC, &t)).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.headers["x-mcp-authz-subject"], "user-9");
    let a = dpop_req(&mut h, &t, &proof(&ED, &t)).await;
    assert_dpop_error(&a, "invalid_token", "dpop_key_mismatch");
    let a = h.bearer("POST", "/mcp", &t).await;
    assert_eq!(a.reason(), "dpop_bearer_downgrade");
    // An unbound opaque token with a proof: nothing to bind to.
    let plain = format!("opaque-plain-{}", std::process::id());
    server.answer(
        &plain,
        json!({"active": true, "aud": URI, "exp": now() + 300, "scope": "files:list"}),
    );
    let a = dpop_req(&mut h, &plain, &proof(&EC, &plain)).await;
    assert_eq!(a.reason(), "dpop_token_unbound");
    assert_eq!(h.bearer("POST", "/mcp", &plain).await.status, 200);
}

#[tokio::test]
async fn required_nonces_are_issued_and_checked() {
    let key_file = tempdir().join("dpop-nonce.key");
    std::fs::write(&key_file, format!("{}\n", "k".repeat(40))).unwrap();
    let mut h = harness(&format!(
        "{{mode: required, nonce: required, nonce_key_file: {}, nonce_seconds: 10}}",
        key_file.display()
    ))
    .await;
    let t = token(&h, "files:list", Some(&EC));
    // No nonce: use_dpop_nonce with a fresh nonce (RFC 9449 §9).
    let a = dpop_req(&mut h, &t, &proof(&EC, &t)).await;
    assert_eq!(
        (a.status, a.reason()),
        (401, "dpop_nonce_required"),
        "{a:?}"
    );
    let www = a.www().unwrap();
    assert!(
        www.starts_with("DPoP algs=") && www.contains("error=\"use_dpop_nonce\""),
        "{www}"
    );
    assert_eq!(
        a.headers["access-control-expose-headers"],
        "WWW-Authenticate, DPoP-Nonce"
    );
    let nonce = a.headers["dpop-nonce"].clone();
    let with = |n: &str| proof_with(&EC, "POST", URI, &t, json!({}), json!({"nonce": n}));
    assert_eq!(dpop_req(&mut h, &t, &with(&nonce)).await.status, 200);
    // The nonce can be used by several proofs within its lifetime.
    assert_eq!(dpop_req(&mut h, &t, &with(&nonce)).await.status, 200);
    for bad in ["", "made-up", &nonce[..nonce.len() - 1]] {
        let a = dpop_req(&mut h, &t, &with(bad)).await;
        assert_eq!(a.reason(), "dpop_nonce_required", "{bad}");
        assert!(a.headers.contains_key("dpop-nonce"));
    }
    // A nonce from another key (another deployment) is refused.
    let other_file = tempdir().join("other-nonce.key");
    std::fs::write(&other_file, "o".repeat(40)).unwrap();
    let other = mcp_authz::dpop::nonce::NonceKey::from_file(&other_file).unwrap();
    let a = dpop_req(&mut h, &t, &with(&other.issue("files", now()))).await;
    assert_eq!(a.reason(), "dpop_nonce_required");
    // Past nonce_seconds: refused.
    let ours = mcp_authz::dpop::nonce::NonceKey::from_file(&key_file).unwrap();
    let a = dpop_req(&mut h, &t, &with(&ours.issue("files", now() - 11))).await;
    assert_eq!(a.reason(), "dpop_nonce_required");
    assert_eq!(
        dpop_req(&mut h, &t, &with(&ours.issue("files", now() - 5)))
            .await
            .status,
        200
    );
}

#[test]
fn dpop_config_is_validated() {
    let cases = [
        ("{mode: sometimes}", "dpop"),
        ("{algorithms: [none]}", "resources[0].dpop.algorithms[0]"),
        ("{algorithms: [HS256]}", "resources[0].dpop.algorithms[0]"),
        ("{algorithms: [MLDSA65]}", "resources[0].dpop.algorithms[0]"),
        ("{algorithms: []}", "resources[0].dpop.algorithms"),
        (
            "{iat_window_seconds: 0}",
            "resources[0].dpop.iat_window_seconds",
        ),
        (
            "{iat_window_seconds: 3600}",
            "resources[0].dpop.iat_window_seconds",
        ),
        (
            "{replay_cache_entries: 0}",
            "resources[0].dpop.replay_cache_entries",
        ),
        ("{nonce: required}", "resources[0].dpop.nonce_key_file"),
        (
            "{nonce: required, nonce_key_file: /nonexistent/key}",
            "resources[0].dpop.nonce_key_file",
        ),
        (
            "{nonce_key_file: /nonexistent/key}",
            "resources[0].dpop.nonce_key_file",
        ),
        (
            "{replay_store: {url: \"http://127.0.0.1:6379\"}}",
            "resources[0].dpop.replay_store.url",
        ),
        (
            "{replay_store: {url: \"redis://127.0.0.1:6379\", timeout_ms: 0}}",
            "resources[0].dpop.replay_store.timeout_ms",
        ),
    ];
    for (dpop, want) in cases {
        let yaml = config_yaml("https://iam.example", "", &format!("    dpop: {dpop}\n"));
        let e = mcp_authz::config::Config::from_yaml(&yaml)
            .expect_err(dpop)
            .to_string();
        assert!(e.contains(want), "{dpop}: {e}");
    }
    let yaml = config_yaml("https://iam.example", "", "    dpop: {mode: required}\n");
    let c = mcp_authz::config::Config::from_yaml(&yaml).unwrap();
    assert_eq!(c.resources[0].dpop.algs(), "ES256 EdDSA RS256 PS256");
}
