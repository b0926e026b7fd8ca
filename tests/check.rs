//! Integration tests: the real service on 127.0.0.1:0, a local identity provider on port 0, and
//! Check calls over gRPC — every row of the decision matrix and the token/credential cases
//! experts try (../shared/reference/peers.md).

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use common::*;
use serde_json::json;

const SEED_401_BODY: &str = r#"{"error":"unauthorized","message":"Authentication required. Use OAuth 2.0 with the authorization server listed in the Protected Resource Metadata."}"#;

#[tokio::test]
async fn no_credentials_gets_401_without_error_code() {
    let mut h = Harness::standard().await;
    let a = h.check(Req::new("POST", "/mcp")).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.www(),
        Some(
            format!(
                "Bearer realm=\"MCP Server\", scope=\"files:list\", resource_metadata=\"{PRM_URL}\""
            )
            .as_str()
        )
    );
    assert_eq!(a.body, SEED_401_BODY);
    assert_eq!(a.headers["content-type"], "application/json");
    assert_eq!(
        a.headers["access-control-expose-headers"],
        "WWW-Authenticate"
    );
    assert_eq!(a.grpc_code, tonic::Code::PermissionDenied as i32);

    // Another scheme is "no bearer credentials": same answer, no error code (RFC 6750 §3.1).
    let a = h
        .check(Req::new("POST", "/mcp").header("authorization", "Basic dXNlcjpwdw=="))
        .await;
    assert_eq!(a.status, 401);
    assert!(!a.www().unwrap().contains("error="));
}

#[tokio::test]
async fn malformed_credentials_get_400_invalid_request() {
    let mut h = Harness::standard().await;
    let token = RSA.mint(&h.claims("files:list"));
    for (auth, path) in [
        (Some("Bearer".to_owned()), "/mcp"),
        (Some(format!("Bearer {token},Bearer {token}")), "/mcp"),
        (Some("Bearer a b".to_owned()), "/mcp"),
        (Some(format!("Bearer {token}")), "/mcp?access_token=abc"),
        (None, &format!("/mcp?access_token={token}")),
    ] {
        let mut req = Req::new("POST", path);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let a = h.check(req).await;
        assert_eq!(a.status, 400, "{auth:?} {path}");
        let www = a.www().expect("challenge");
        assert!(
            www.starts_with("Bearer realm=\"MCP Server\", error=\"invalid_request\""),
            "{www}"
        );
        assert!(
            www.ends_with(&format!("resource_metadata=\"{PRM_URL}\"")),
            "{www}"
        );
        assert!(!www.contains(&token[..20]), "token echoed into header");
    }
}

/// A `files:list files:read` token on `POST /mcp`, with a client-sent identity header.
async fn allowed_with_a_spoofed_subject(h: &mut Harness) -> Answer {
    let token = RSA.mint(&h.claims("files:list files:read"));
    let req = Req::new("POST", "/mcp")
        .header("authorization", &format!("Bearer {token}"))
        .header("x-mcp-authz-subject", "spoofed-admin");
    h.check(req).await
}

#[tokio::test]
async fn valid_token_is_allowed_with_identity_headers() {
    let mut h = Harness::standard().await;
    let a = allowed_with_a_spoofed_subject(&mut h).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.grpc_code, 0);
    assert_eq!(a.headers["x-mcp-authz-subject"], "user-1");
    assert_eq!(a.headers["x-mcp-authz-client-id"], "client-1");
    assert_eq!(a.headers["x-mcp-authz-scopes"], "files:list files:read");
    assert_eq!(a.headers["x-mcp-authz-issuer"], h.idp.issuer);
    assert!(
        a.removed.is_empty(),
        "set headers must not also be removed: {:?}",
        a.removed
    );
    assert_eq!(a.metadata["decision"], "allow");
    assert_eq!(a.metadata["sub"], "user-1");
    assert_eq!(a.metadata["route"], "mcp");
    // Every field the README promises for access logs (Envoy dynamic_metadata).
    assert_eq!(a.metadata["client_id"], "client-1");
    assert_eq!(a.metadata["scope"], "files:list files:read");
    assert_eq!(a.metadata["iss"], h.idp.issuer);
    assert_eq!(a.metadata["resource"], "files");
    assert_eq!(a.metadata["reason"], "ok");

    // Without a client id claim, a client-sent copy of that header is removed.
    let mut c = h.claims("files:list");
    c.as_object_mut().unwrap().remove("client_id");
    let a = h.bearer("POST", "/mcp", &RSA.mint(&c)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.removed, vec!["x-mcp-authz-client-id"]);

    // ES256 and EdDSA keys work too; lowercase scheme is accepted.
    for key in [&*EC, &*ED] {
        let t = key.mint(&h.claims("files:list"));
        let a = h
            .check(Req::new("POST", "/mcp").header("authorization", &format!("bearer {t}")))
            .await;
        assert_eq!(a.status, 200, "{}", key.kid);
    }
}

#[tokio::test]
async fn identity_headers_set_to_null_and_metadata_off_leave_the_answer_lean() {
    let idp = Idp::start(&[&RSA]).await;
    let identity = "identity: {subject_header: null, client_id_header: null, \
                    scopes_header: x-granted, dynamic_metadata: false}";
    let yaml = config_yaml(&idp.issuer, identity, ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    let a = allowed_with_a_spoofed_subject(&mut h).await;
    assert_eq!(a.status, 200, "{a:?}");
    let mut set: Vec<_> = a.headers.keys().map(String::as_str).collect();
    set.sort_unstable();
    assert_eq!(set, ["x-granted", "x-mcp-authz-issuer"]);
    assert_eq!(a.headers["x-granted"], "files:list files:read");
    // Not configured, so neither set nor stripped: the MCP server must not read it.
    assert!(a.removed.is_empty(), "{:?}", a.removed);
    assert!(a.metadata.is_empty(), "{:?}", a.metadata);
    // Denials still carry their metadata (for access logs).
    let list_only = RSA.mint(&h.claims("files:list"));
    let a = h.bearer("GET", "/mcp/files/x", &list_only).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.reason(), "insufficient_scope");
    // Distinctness is checked among the headers in use.
    let clash = "identity: {subject_header: null, client_id_header: x-a, scopes_header: x-a}";
    let err =
        mcp_authz::config::Config::from_yaml(&config_yaml("https://i", clash, ROUTES)).unwrap_err();
    assert!(err.to_string().contains("distinct"), "{err}");
}

#[tokio::test]
async fn public_routes_prm_and_preflight_need_no_token() {
    let mut h = Harness::standard().await;
    for req in [
        Req::new("GET", "/mcp/health"),
        Req::new("GET", "/.well-known/oauth-protected-resource/mcp"),
        Req::new("GET", "/.well-known/oauth-protected-resource"),
        Req::new("OPTIONS", "/mcp")
            .header("origin", "https://inspector.example")
            .header("access-control-request-method", "POST"),
    ] {
        let label = format!("{} {}", req.method, req.path);
        let req = req.header("x-mcp-authz-subject", "spoofed");
        let a = h.check(req).await;
        assert_eq!(a.status, 200, "{label}");
        assert!(a.headers.is_empty(), "{label}");
        assert!(
            a.removed.contains(&"x-mcp-authz-subject".to_owned()),
            "{label}: spoofed identity stripped"
        );
    }
    // A plain OPTIONS (not a CORS preflight) is not public.
    assert_eq!(h.check(Req::new("OPTIONS", "/mcp")).await.status, 401);
}

#[tokio::test]
async fn invalid_tokens_get_401_invalid_token() {
    let mut h = Harness::standard().await;
    let good = h.claims("files:list");
    let with = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut c = good.clone();
        f(c.as_object_mut().unwrap());
        c
    };
    let rsa_hdr = json!({"alg":"RS256","kid":"rsa-1"});
    let valid = RSA.mint(&good);
    let (hp, sig) = valid.rsplit_once('.').unwrap();
    let mut cases: Vec<(&str, String, &str)> = vec![
        ("not a jwt", "abc".into(), "token_malformed"),
        ("two segments", "abc.def".into(), "token_malformed"),
        ("thousands of dots", ".".repeat(5000), "token_malformed"),
        (
            "too long",
            format!("{}.{}.{}", "a".repeat(5000), "b".repeat(5000), "c"),
            "token_too_long",
        ),
        (
            "bad signature",
            format!("{hp}.{}", b64(&[1u8; 256])),
            "token_bad_signature",
        ),
        (
            "truncated signature",
            format!("{hp}.{}", &sig[..40]),
            "token_bad_signature",
        ),
        (
            "non-base64url signature",
            format!("{hp}.ab+/cd"),
            "token_bad_signature",
        ),
        (
            "expired",
            RSA.mint(&with(&|c| {
                c.insert("exp".into(), json!(now() - 120));
            })),
            "token_expired",
        ),
        (
            "no exp",
            RSA.mint(&with(&|c| {
                c.remove("exp");
            })),
            "token_missing_exp",
        ),
        (
            "nbf future",
            RSA.mint(&with(&|c| {
                c.insert("nbf".into(), json!(now() + 600));
            })),
            "token_not_yet_valid",
        ),
        (
            "wrong iss",
            RSA.mint(&with(&|c| {
                c.insert("iss".into(), json!("https://evil.example"));
            })),
            "token_unknown_issuer",
        ),
        (
            "no iss",
            RSA.mint(&with(&|c| {
                c.remove("iss");
            })),
            "token_unknown_issuer",
        ),
        (
            "wrong aud",
            RSA.mint(&with(&|c| {
                c.insert("aud".into(), json!("https://other.example.com/mcp"));
            })),
            "token_wrong_audience",
        ),
        (
            "aud trailing slash",
            RSA.mint(&with(&|c| {
                c.insert("aud".into(), json!("https://mcp.example.com/mcp/"));
            })),
            "token_wrong_audience",
        ),
        (
            "aud []",
            RSA.mint(&with(&|c| {
                c.insert("aud".into(), json!([]));
            })),
            "token_wrong_audience",
        ),
        (
            "aud null",
            RSA.mint(&with(&|c| {
                c.insert("aud".into(), json!(null));
            })),
            "token_wrong_audience",
        ),
        (
            "aud number",
            RSA.mint(&with(&|c| {
                c.insert("aud".into(), json!(42));
            })),
            "token_wrong_audience",
        ),
        (
            "aud = client id (Casdoor default)",
            RSA.mint(&with(&|c| {
                c.insert("aud".into(), json!(["client-1"]));
            })),
            "token_wrong_audience",
        ),
        (
            "refresh token",
            RSA.mint(&with(&|c| {
                c.insert("tokenType".into(), json!("refresh-token"));
            })),
            "token_not_access_token",
        ),
        (
            "refresh token, other casing",
            RSA.mint(&with(&|c| {
                c.insert("TokenType".into(), json!("refresh-token"));
                c.insert("tokenType".into(), json!("access-token"));
            })),
            "token_not_access_token",
        ),
        (
            "id token typ",
            RSA.mint_with_header(
                &json!({"alg":"RS256","kid":"rsa-1","typ":"logout+jwt"}),
                &good,
            ),
            "token_not_access_token",
        ),
        (
            "alg none",
            mint_raw(
                r#"{"alg":"none","kid":"rsa-1"}"#,
                &good.to_string(),
                |_| vec![],
            )
            .trim_end_matches('.')
            .to_owned()
                + ".x",
            "token_disallowed_alg",
        ),
        (
            "alg NONE",
            mint_raw(r#"{"alg":"NONE"}"#, &good.to_string(), |_| vec![1]),
            "token_disallowed_alg",
        ),
        (
            "alg off the allow-list",
            RSA.mint_with_header(&json!({"alg":"PS256","kid":"rsa-1"}), &good),
            "token_disallowed_alg",
        ),
        (
            "header alg differs from JWK alg",
            RSA.mint_with_header(&json!({"alg":"ES256","kid":"rsa-1"}), &good),
            "token_unknown_kid",
        ),
        (
            "duplicate claim",
            mint_raw(
                &rsa_hdr.to_string(),
                &format!(
                    "{{\"iss\":\"{}\",\"aud\":\"https://mcp.example.com/mcp\",\"exp\":{},\"aud\":\"x\"}}",
                    h.idp.issuer,
                    now() + 300
                ),
                |m| RSA.sign(m),
            ),
            "token_malformed",
        ),
        (
            "crit header",
            RSA.mint_with_header(
                &json!({"alg":"RS256","kid":"rsa-1","crit":["b64"],"b64":false}),
                &good,
            ),
            "token_malformed",
        ),
        (
            "ecdsa r=s=0 (CVE-2022-21449)",
            mint_raw(r#"{"alg":"ES256","kid":"ec-1"}"#, &good.to_string(), |_| {
                vec![0u8; 64]
            }),
            "token_bad_signature",
        ),
    ];
    // HS256 signed with the RSA public key (as JWK JSON) as the HMAC secret.
    let secret = RSA.jwk().to_string();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    cases.push((
        "HS256 with the public key",
        mint_raw(r#"{"alg":"HS256","kid":"rsa-1"}"#, &good.to_string(), |m| {
            aws_lc_rs::hmac::sign(&key, m).as_ref().to_vec()
        }),
        "token_disallowed_alg",
    ));
    // Embedded keys are ignored: an attacker key in `jwk`/`jku`/`x5u` with our kid.
    let attacker = TestKey::rsa("rsa-1");
    cases.push((
        "embedded jwk",
        attacker.mint_with_header(&json!({"alg":"RS256","kid":"rsa-1","jwk":attacker.jwk(),"jku":"https://evil/jwks","x5u":"https://evil/x5u"}), &good),
        "token_bad_signature",
    ));
    // An embedded certificate chain is ignored as well: attacker key, our kid, its "cert".
    cases.push((
        "embedded x5c",
        attacker.mint_with_header(
            &json!({"alg":"RS256","kid":"rsa-1","x5c":[b64(b"attacker certificate")],"x5t#S256":"x"}),
            &good,
        ),
        "token_bad_signature",
    ));
    // RFC 7518 §3.4: an ES256 signature is R || S (64 bytes); the ASN.1 DER form some
    // libraries emit is refused, even when it is a valid signature by the right key.
    let ec_header = json!({"alg":"ES256","kid":"ec-1"}).to_string();
    cases.push((
        "ES256 signature DER-encoded",
        mint_raw(&ec_header, &good.to_string(), |m| der_ecdsa(&EC.sign(m))),
        "token_bad_signature",
    ));
    // Non-UTF-8 payload.
    cases.push((
        "non-utf8 payload",
        format!(
            "{}.{}.{}",
            b64(rsa_hdr.to_string().as_bytes()),
            b64(&[0xff, 0xfe]),
            sig
        ),
        "token_malformed",
    ));

    for (name, token, reason) in cases {
        let a = h.bearer("POST", "/mcp", &token).await;
        assert_eq!(a.status, 401, "{name}: {a:?}");
        assert_eq!(a.reason(), reason, "{name}");
        let www = a.www().unwrap_or_default();
        assert!(
            www.starts_with(
                "Bearer realm=\"MCP Server\", error=\"invalid_token\", error_description=\""
            ),
            "{name}: {www}"
        );
        assert!(
            www.ends_with(&format!("resource_metadata=\"{PRM_URL}\"")),
            "{name}: {www}"
        );
        assert_eq!(a.json()["error"], "invalid_token", "{name}");
    }
    // None of those bad signatures or kids made the service refetch keys except the one
    // unknown kid... and there was none: every kid above exists.
    assert_eq!(
        h.idp.fetches(),
        1,
        "no refetch for bad tokens under known kids"
    );
}

#[tokio::test]
async fn insufficient_scope_gets_403_step_up() {
    let mut h = Harness::standard().await;
    // Route needs files:read; token has files:list plus scopes this resource does not know.
    let token = RSA.mint(&h.claims("files:list openid offline_access other:thing"));
    let a = h.bearer("GET", "/mcp/files/a.txt", &token).await;
    assert_eq!(a.status, 403);
    assert_eq!(
        a.www(),
        Some(
            format!("Bearer realm=\"MCP Server\", error=\"insufficient_scope\", error_description=\"The access token lacks the scope this request requires\", scope=\"files:list files:read\", resource_metadata=\"{PRM_URL}\"")
                .as_str()
        )
    );
    assert_eq!(a.json()["scope"], "files:list files:read");

    // `files` is not `files:read` by prefix; `admin` does not imply `admin:read`.
    let a = h
        .bearer(
            "GET",
            "/mcp/files/a.txt",
            &RSA.mint(&h.claims("files files:rea")),
        )
        .await;
    assert_eq!(a.status, 403);

    // Implications: files:admin implies files:read.
    let a = h
        .bearer(
            "GET",
            "/mcp/files/a.txt",
            &RSA.mint(&h.claims("files:admin")),
        )
        .await;
    assert_eq!(a.status, 200);

    // `scp` as an array (Entra/Okta) counts.
    let mut c = h.claims("");
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["files:read"]);
    let a = h.bearer("GET", "/mcp/files/a.txt", &RSA.mint(&c)).await;
    assert_eq!(a.status, 200);

    // No scope claim at all: no scopes.
    c.as_object_mut().unwrap().remove("scp");
    let a = h.bearer("POST", "/mcp", &RSA.mint(&c)).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["scope"], "files:list");
}

#[tokio::test]
async fn policy_denials_are_403_without_challenge() {
    let mut h = Harness::standard().await;
    let token = RSA.mint(&h.claims("files:admin files:list"));
    for (req, reason) in [
        (Req::new("POST", "/admin"), "no_route"),
        (Req::new("POST", "/mcpx"), "no_route"),
        (
            Req::new("POST", "/mcp").context("mcp_authz_resource", "no-such-resource"),
            "unknown_resource",
        ),
    ] {
        let label = format!("{} {:?}", req.path, req.context);
        let a = h
            .check(req.header("authorization", &format!("Bearer {token}")))
            .await;
        assert_eq!(a.status, 403, "{label}");
        assert_eq!(a.reason(), reason, "{label}");
        assert_eq!(a.www(), None, "{label}");
        assert_eq!(a.json()["error"], "forbidden", "{label}");
        assert_eq!(a.headers["cache-control"], "no-store", "{label}");
    }
    // The context extension naming the resource selects it whatever the host.
    let req = Req::new("POST", "/mcp")
        .host("internal.svc")
        .context("mcp_authz_resource", "files");
    assert_eq!(
        h.check(req.header("authorization", &format!("Bearer {token}")))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn path_tricks_cannot_reach_other_routes() {
    let mut h = Harness::standard().await;
    // /mcp/health is public; these normalize to protected paths and need a token.
    for path in [
        "/mcp/health/../x",
        "/mcp/health/%2e%2e/x",
        "//mcp",
        "/mcp/./",
        "/mcp/health/..",
        "/mcp?/mcp/health",
    ] {
        let a = h.check(Req::new("POST", path)).await;
        assert_eq!(a.status, 401, "{path}");
    }
    // Encoded separators and other ambiguous forms are refused outright.
    for path in [
        "/mcp/health%2F..%2Fx",
        "/mcp%5Cx",
        "/mcp%00",
        "/mcp/health;x",
        "/mcp/%zz",
        "/mcp\\health",
    ] {
        let a = h.check(Req::new("GET", path)).await;
        assert_eq!(a.status, 400, "{path}");
        assert_eq!(a.reason(), "bad_path", "{path}");
        assert_eq!(a.www(), None, "{path}");
    }
    // Public path stays public with a query string.
    assert_eq!(
        h.check(Req::new("GET", "/mcp/health?x=1")).await.status,
        200
    );
    // A path that a case-insensitive, trailing-slash-tolerant router (Express) dispatches to
    // another route than its exact form is refused: either reading could be the weaker one.
    for (method, path) in [
        ("GET", "/mcp/health/"),
        ("GET", "/MCP/health"),
        ("POST", "/MCP"),
        ("POST", "/Mcp/"),
        ("GET", "/mcp/FILES/x"),
    ] {
        let a = h.check(Req::new(method, path)).await;
        assert_eq!(a.status, 400, "{path}");
        assert_eq!(a.json()["error"], "bad_request", "{path}");
        assert_eq!(a.www(), None, "{path}");
    }
    // Case or a trailing slash that changes no route is not refused.
    assert_eq!(h.check(Req::new("POST", "/mcp/X/")).await.status, 401);
    assert_eq!(h.check(Req::new("GET", "/mcp/files/A/")).await.status, 401);
}

#[tokio::test]
async fn issuer_down_from_start_gives_503() {
    let idp = Idp::start(&[&RSA]).await;
    idp.set_mode(Mode::Status(500));
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, false).await;
    let token = RSA.mint(&h.claims("files:list"));
    eventually(
        "a failed fetch counted",
        Duration::from_secs(30),
        async || fetch_errors(&h.app) >= 1,
    )
    .await;
    assert!(!h.app.ready.get());
    let a = h.bearer("POST", "/mcp", &token).await;
    assert_eq!((a.status, a.reason()), (503, "no_signing_keys"));
    assert_eq!(a.headers["retry-after"], "30");
    assert_eq!(a.headers["cache-control"], "no-store");
    assert_eq!(a.www(), None);
    // No token still gets the 401 challenge: discovery must work while the IAM is down.
    assert_eq!(h.check(Req::new("POST", "/mcp")).await.status, 401);
    // The IAM comes back: keys load on the retry and the token passes.
    h.idp.set_mode(Mode::Ok);
    eventually(
        "ready after the IAM came back",
        Duration::from_secs(30),
        async || h.app.ready.get(),
    )
    .await;
    assert_eq!(h.bearer("POST", "/mcp", &token).await.status, 200);
}

#[tokio::test]
async fn issuer_down_after_start_keeps_last_good_keys_then_goes_stale() {
    let idp = Idp::start(&[&RSA]).await;
    // Refresh every second; keys stay usable 12 s after the last success, a margin that a
    // loaded machine does not eat between the failed refresh and the next Check.
    let yaml = config_yaml(
        &idp.issuer,
        "  max_stale_seconds: 12\n  refresh_seconds: 1\n  max_refresh_seconds: 1",
        ROUTES,
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let token = RSA.mint(&h.claims("files:list"));
    // A different token each time, so no answer comes from the verified-token cache.
    let fresh = |h: &Harness| {
        let mut c = h.claims("files:list");
        c["jti"] = json!(format!("{:?}", std::time::Instant::now()));
        RSA.mint(&c)
    };
    assert_eq!(h.bearer("POST", "/mcp", &token).await.status, 200);
    h.idp.stop();
    eventually(
        "a failed refresh counted",
        Duration::from_secs(30),
        async || fetch_errors(&h.app) >= 1,
    )
    .await;
    let a = h.bearer("POST", "/mcp", &fresh(&h)).await;
    assert_eq!(a.status, 200, "last good keys still used");
    assert!(h.app.ready.get(), "still ready on last good keys");
    // Past max_stale_seconds the keys are no longer used, and readiness drops.
    let mut last = None;
    eventually("stale keys refused", Duration::from_secs(60), async || {
        let t = fresh(&h);
        let a = h.bearer("POST", "/mcp", &t).await;
        last = Some((a.status, a.reason().to_owned()));
        a.status != 200
    })
    .await;
    assert_eq!(last, Some((503, "no_signing_keys".to_owned())));
    assert_eq!(
        h.bearer("POST", "/mcp", &token).await.status,
        503,
        "nor from the cache"
    );
    eventually(
        "not ready on stale keys",
        Duration::from_secs(30),
        async || !h.app.ready.get(),
    )
    .await;
}

#[tokio::test]
async fn key_rotation_picks_up_new_kid_with_one_fetch() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    assert_eq!(h.idp.fetches(), 1);
    h.idp.set_keys(&[&RSA, &RSA2]);
    let token = RSA2.mint(&h.claims("files:list"));
    // Ten concurrent Checks with the new kid share one refetch.
    let mut joins = Vec::new();
    for _ in 0..10 {
        let mut c = h.client.clone();
        let req = Req::new("POST", "/mcp").header("authorization", &format!("Bearer {token}"));
        joins.push(tokio::spawn(async move {
            Answer::from(c.check(req.into_proto()).await.unwrap().into_inner())
        }));
    }
    for j in joins {
        assert_eq!(j.await.unwrap().status, 200);
    }
    assert_eq!(h.idp.fetches(), 2, "exactly one refetch for the new kid");
    // The old key is removed from the JWKS: after the next refetch it stops verifying.
    h.idp.set_keys(&[&RSA2]);
    let old = RSA.mint(&h.claims("files:list"));
    assert_eq!(
        h.bearer("POST", "/mcp", &old).await.status,
        200,
        "still in the cached set"
    );
}

#[tokio::test]
async fn removed_key_stops_verifying_after_refresh() {
    let idp = Idp::start(&[&RSA, &RSA2]).await;
    let yaml = config_yaml(
        &idp.issuer,
        "  refresh_seconds: 1\n  max_refresh_seconds: 1",
        ROUTES,
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let old = RSA.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &old).await.status, 200);
    // Now in the verified-token cache too: a key-set change must drop it.
    let hit = |h: &Harness| {
        h.app
            .metrics
            .counter("mcp_authz_token_cache_requests_total", &[("result", "hit")])
    };
    let hits = hit(&h);
    assert_eq!(h.bearer("POST", "/mcp", &old).await.status, 200);
    assert_eq!(hit(&h), hits + 1, "served from the cache");
    h.idp.set_keys(&[&RSA2]);
    let mut last = None;
    eventually(
        "the removed key stops verifying",
        Duration::from_secs(30),
        async || {
            let a = h.bearer("POST", "/mcp", &old).await;
            last = Some((a.status, a.reason().to_owned()));
            a.status != 200
        },
    )
    .await;
    assert_eq!(last, Some((401, "token_unknown_kid".to_owned())));
}

#[tokio::test]
async fn kid_flood_is_rate_limited() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    let mut joins = Vec::new();
    for i in 0..100 {
        let mut c = h.client.clone();
        let token = RSA.mint_with_header(
            &json!({"alg":"RS256","kid":format!("random-{i}")}),
            &h.claims("files:list"),
        );
        let req = Req::new("POST", "/mcp").header("authorization", &format!("Bearer {token}"));
        joins.push(tokio::spawn(async move {
            Answer::from(c.check(req.into_proto()).await.unwrap().into_inner())
        }));
    }
    for j in joins {
        let a = j.await.unwrap();
        assert_eq!(a.status, 401);
        assert_eq!(a.reason(), "token_unknown_kid");
    }
    assert_eq!(
        h.idp.fetches(),
        2,
        "exactly one refetch per cooldown, got {}",
        h.idp.fetches() - 1
    );
    // Later unknown kids inside the cooldown are refused without a fetch, and counted.
    for i in 0..10 {
        let token = RSA.mint_with_header(
            &json!({"alg":"RS256","kid":format!("later-{i}")}),
            &h.claims("files:list"),
        );
        assert_eq!(h.bearer("POST", "/mcp", &token).await.status, 401);
    }
    assert_eq!(h.idp.fetches(), 2, "no fetch inside the cooldown");
    let limited = h.app.metrics.counter(
        "mcp_authz_jwks_unknown_kid_refetches_total",
        &[("result", "rate_limited")],
    );
    assert!(limited >= 10, "rate-limited refetches counted: {limited}");
    // A valid token still passes during the flood.
    assert_eq!(
        h.bearer("POST", "/mcp", &RSA.mint(&h.claims("files:list")))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn unusable_keys_are_skipped_not_fatal() {
    let mut keys = vec![
        json!({"kty":"MLDSA","kid":"pq-1","alg":"ML-DSA-65","pub":"AAAA"}),
        json!({"kty":"oct","kid":"hmac","k":"c2VjcmV0"}),
    ];
    let mut enc = RSA2.jwk();
    enc["use"] = json!("enc");
    keys.push(enc);
    keys.push(RSA.jwk());
    let idp = Idp::start_with(json!({ "keys": keys })).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    assert_eq!(
        h.bearer("POST", "/mcp", &RSA.mint(&h.claims("files:list")))
            .await
            .status,
        200
    );
    // The encryption-use key is never used to verify.
    let a = h
        .bearer("POST", "/mcp", &RSA2.mint(&h.claims("files:list")))
        .await;
    assert_eq!(a.status, 401);
    for reason in ["unsupported_alg", "symmetric", "encryption_key"] {
        assert_eq!(
            h.app
                .metrics
                .counter("mcp_authz_jwks_keys_skipped_total", &[("reason", reason)]),
            1,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn token_without_kid_is_tried_against_compatible_keys() {
    let mut h = Harness::standard().await;
    let t = RSA.mint_with_header(&json!({"alg":"RS256"}), &h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    let t = EC.mint_with_header(&json!({"alg":"ES256"}), &h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
}

/// A harness whose identity provider answers in `mode` from the start, waited on until the
/// service has tried (and failed) to fetch keys at least once.
async fn harness_after_a_failed_fetch(mode: Mode, jwks_extra: &str) -> Harness {
    let idp = Idp::start(&[&RSA]).await;
    idp.set_mode(mode.clone());
    let yaml = config_yaml(&idp.issuer, jwks_extra, ROUTES);
    let h = Harness::start(idp, &yaml, false).await;
    eventually(
        &format!("{mode:?}: a failed fetch counted"),
        Duration::from_secs(30),
        async || fetch_errors(&h.app) >= 1,
    )
    .await;
    h
}

#[tokio::test]
async fn iam_faults_never_load_keys() {
    // Every fault but the unparseable ones serves the *valid* JWKS, so only the rule under test
    // (200 only, the size cap, the same-host redirect rule) can keep the keys out.
    let limit = "  max_response_bytes: 65536";
    for mode in [
        Mode::Html,
        Mode::Truncated,
        Mode::Status(404),
        Mode::Status(500),
        Mode::Padded(100_000),
        Mode::PaddedChunked(100_000),
        Mode::RedirectOtherHost,
    ] {
        let mut h = harness_after_a_failed_fetch(mode.clone(), limit).await;
        let token = RSA.mint(&h.claims("files:list"));
        let a = h.bearer("POST", "/mcp", &token).await;
        assert_eq!((a.status, a.reason()), (503, "no_signing_keys"), "{mode:?}");
        assert!(!h.app.ready.get(), "{mode:?}");
        h.app.shutdown(Duration::from_secs(1)).await;
    }
    // Control: the same padded documents under the default 1 MiB cap are valid key sets.
    for mode in [Mode::Padded(100_000), Mode::PaddedChunked(100_000)] {
        let idp = Idp::start(&[&RSA]).await;
        idp.set_mode(mode.clone());
        let yaml = config_yaml(&idp.issuer, "", ROUTES);
        let mut h = Harness::start(idp, &yaml, true).await;
        let token = RSA.mint(&h.claims("files:list"));
        assert_eq!(
            h.bearer("POST", "/mcp", &token).await.status,
            200,
            "{mode:?}"
        );
        h.app.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_jwks_slower_than_the_fetch_timeout_is_a_failed_fetch() {
    // fetch_timeout_seconds is 2; the answer would come after 120 s. The failure is observed
    // on the fetch-error metric (well before the answer), not by sleeping.
    let mut h = harness_after_a_failed_fetch(Mode::Slow(Duration::from_secs(120)), "").await;
    let token = RSA.mint(&h.claims("files:list"));
    let a = h.bearer("POST", "/mcp", &token).await;
    assert_eq!((a.status, a.reason()), (503, "no_signing_keys"));
    h.app.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn kid_must_belong_to_the_tokens_issuer() {
    // Issuer A holds rsa-1; issuer B holds rsa-2. A token claiming issuer B but signed by
    // A's key (kid rsa-1) must not verify.
    let a = Idp::start(&[&RSA]).await;
    let b = Idp::start(&[&RSA2]).await;
    let yaml = format!(
        "{}      - issuer: {}\n        algorithms: [RS256]\n",
        config_yaml(&a.issuer, "", ""),
        b.issuer
    );
    let mut h = Harness::start(a, &yaml, true).await;
    let mut c = h.claims("");
    c["iss"] = json!(b.issuer);
    let ans = h.bearer("POST", "/mcp", &RSA.mint(&c)).await;
    assert_eq!(ans.status, 401);
    assert_eq!(ans.reason(), "token_unknown_kid");
    // Both issuers' own tokens pass.
    assert_eq!(h.bearer("POST", "/mcp", &RSA2.mint(&c)).await.status, 200);
    let c = h.claims("");
    assert_eq!(h.bearer("POST", "/mcp", &RSA.mint(&c)).await.status, 200);
}

#[tokio::test]
async fn extra_audience_is_opt_in() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", "").replace(
        "algorithms: [RS256, ES256, EdDSA]",
        "algorithms: [RS256]\n        extra_audiences: [casdoor-client-id]",
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let mut c = h.claims("");
    c["aud"] = json!(["casdoor-client-id"]);
    assert_eq!(h.bearer("POST", "/mcp", &RSA.mint(&c)).await.status, 200);
    // Default route (no routes configured) protects the resource path with any valid token.
    assert_eq!(h.check(Req::new("POST", "/mcp")).await.status, 401);
}

#[tokio::test]
async fn metrics_and_readiness() {
    let mut h = Harness::standard().await;
    let before = h
        .app
        .metrics
        .counter("mcp_authz_checks_total", &[("reason", "no_credentials")]);
    h.check(Req::new("POST", "/mcp")).await;
    let after = h
        .app
        .metrics
        .counter("mcp_authz_checks_total", &[("reason", "no_credentials")]);
    assert_eq!(after, before + 1);
    let base = format!("http://{}", h.app.admin_addr);
    let client = reqwest::Client::new();
    let m = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("mcp_authz_checks_total{decision=\"deny\",reason=\"no_credentials\",resource=\"files\"} 1"), "{m}");
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // gRPC health reports the Check service as serving.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", h.app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            // Written out as Envoy's grpc_health_check and the Kubernetes grpc probe send it,
            // not taken from the code under test.
            service: "envoy.service.auth.v3.Authorization".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[test]
fn example_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/mcp-authz.yaml");
    let c = mcp_authz::config::Config::from_file(&path).expect("deploy/mcp-authz.yaml is valid");
    assert_eq!(c.resources[0].uri, "https://mcp.example.com/mcp");
    assert_eq!(c.resources[0].scopes_supported, vec!["files:list"]);
}

/// An ECDSA `R || S` signature re-encoded as ASN.1 DER `SEQUENCE { INTEGER r, INTEGER s }`.
fn der_ecdsa(fixed: &[u8]) -> Vec<u8> {
    let int = |half: &[u8]| {
        let mut v: Vec<u8> = half.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_none_or(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let (r, s) = fixed.split_at(fixed.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[tokio::test]
async fn kidless_and_duplicate_kid_tokens_are_tried_against_at_most_four_keys() {
    // An RS256 key first: only keys that fit the token's algorithm count towards the cap.
    let ec: Vec<TestKey> = (0..5).map(|i| TestKey::ec(&format!("ec-{i}"))).collect();
    let mut keys = vec![RSA.jwk()];
    keys.extend(ec.iter().map(TestKey::jwk));
    let idp = Idp::start_with(json!({ "keys": keys })).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    let claims = h.claims("files:list");
    let no_kid = json!({"alg": "ES256"});
    // The 4th ES256-capable key is tried, the 5th is not (README: "at most 4").
    assert_eq!(
        h.bearer("POST", "/mcp", &ec[3].mint_with_header(&no_kid, &claims))
            .await
            .status,
        200
    );
    let a = h
        .bearer("POST", "/mcp", &ec[4].mint_with_header(&no_kid, &claims))
        .await;
    assert_eq!((a.status, a.reason()), (401, "token_bad_signature"));

    // Five keys sharing one kid: the same bound, in JWKS order.
    let dup: Vec<serde_json::Value> = ec
        .iter()
        .map(|k| {
            let mut j = k.jwk();
            j["kid"] = json!("shared");
            j
        })
        .collect();
    let idp = Idp::start_with(json!({ "keys": dup })).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    let claims = h.claims("files:list");
    let shared = json!({"alg": "ES256", "kid": "shared"});
    assert_eq!(
        h.bearer("POST", "/mcp", &ec[3].mint_with_header(&shared, &claims))
            .await
            .status,
        200
    );
    let a = h
        .bearer("POST", "/mcp", &ec[4].mint_with_header(&shared, &claims))
        .await;
    assert_eq!((a.status, a.reason()), (401, "token_bad_signature"));
}

#[tokio::test]
async fn a_second_unknown_kid_refetch_is_allowed_once_the_cooldown_has_passed() {
    let idp = Idp::start(&[&RSA]).await;
    // A 5 s cooldown: long enough that the Check right after the first refetch is inside it
    // even on a loaded machine, short enough to wait out.
    let yaml = config_yaml(&idp.issuer, "", ROUTES).replace(
        "unknown_kid_cooldown_seconds: 30",
        "unknown_kid_cooldown_seconds: 5",
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let claims = h.claims("files:list");
    let started = |h: &Harness| {
        h.app.metrics.counter(
            "mcp_authz_jwks_unknown_kid_refetches_total",
            &[("result", "started")],
        )
    };
    let stray = RSA.mint_with_header(&json!({"alg":"RS256","kid":"stray"}), &claims);
    assert_eq!(
        h.bearer("POST", "/mcp", &stray).await.reason(),
        "token_unknown_kid"
    );
    assert_eq!((h.idp.fetches(), started(&h)), (2, 1));
    // The IAM rotates in a new key right after: inside the cooldown it is not fetched yet.
    h.idp.set_keys(&[&RSA, &RSA2]);
    let rotated = RSA2.mint(&claims);
    assert_eq!(
        h.bearer("POST", "/mcp", &rotated).await.reason(),
        "token_unknown_kid"
    );
    assert_eq!(h.idp.fetches(), 2, "rate limited inside the cooldown");
    // Once the cooldown has passed, the next unknown kid starts a second refetch.
    eventually(
        "a second refetch after the cooldown",
        Duration::from_secs(60),
        async || h.bearer("POST", "/mcp", &rotated).await.status == 200,
    )
    .await;
    assert_eq!((h.idp.fetches(), started(&h)), (3, 2));
}

#[tokio::test]
async fn a_check_waiting_on_a_hanging_refetch_returns_within_its_bound() {
    // The refetch would answer after 300 s; the Check is bounded by the fetch timeout (2 s)
    // and the wait bound (2 × timeout + 1 s). 60 s here only catches a hang.
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    h.idp.set_mode(Mode::Slow(Duration::from_secs(300)));
    h.idp.set_keys(&[&RSA, &RSA2]);
    let t = RSA2.mint(&h.claims("files:list"));
    let a = tokio::time::timeout(Duration::from_secs(60), h.bearer("POST", "/mcp", &t))
        .await
        .expect("the Check returned instead of waiting on the hanging fetch");
    assert_eq!((a.status, a.reason()), (401, "token_unknown_kid"));
    assert_eq!(h.idp.fetches(), 2);
    // Known keys keep working meanwhile.
    let ok = RSA.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &ok).await.status, 200);
}

/// A harness whose JWKS answers carry `Cache-Control: cache_control`; `yaml` edits the config.
async fn harness_with_cache_control(
    cache_control: &str,
    yaml: impl Fn(String) -> String,
) -> Harness {
    let idp = Idp::start(&[&RSA]).await;
    *idp.state.cache_control.lock().unwrap() = Some(cache_control.to_owned());
    // refresh_seconds (the period without max-age) is 300: only max-age can make it sooner.
    let yaml = yaml(config_yaml(&idp.issuer, "", ROUTES));
    Harness::start(idp, &yaml, true).await
}

#[tokio::test]
async fn cache_control_max_age_drives_the_next_refresh() {
    let h = harness_with_cache_control("public, max-age=1", |y| y).await;
    eventually(
        "refreshes every max-age",
        Duration::from_secs(60),
        async || h.idp.fetches() >= 3,
    )
    .await;
}

#[tokio::test]
async fn cache_control_max_age_is_clamped_to_max_refresh_seconds() {
    let h = harness_with_cache_control("max-age=86400", |y| {
        y.replace(
            "min_refresh_seconds: 1",
            "min_refresh_seconds: 1\n  max_refresh_seconds: 1",
        )
    })
    .await;
    eventually(
        "refreshes at max_refresh_seconds",
        Duration::from_secs(60),
        async || h.idp.fetches() >= 3,
    )
    .await;
}

#[tokio::test]
async fn cache_control_max_age_is_clamped_to_min_refresh_seconds() {
    // max-age=0 would refetch in a loop; min_refresh_seconds 120 holds it off. Three seconds
    // of quiet is a wide margin against a loop that refetches at once.
    let h = harness_with_cache_control("max-age=0", |y| {
        y.replace("min_refresh_seconds: 1", "min_refresh_seconds: 120")
    })
    .await;
    let first = h.idp.fetches();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        h.idp.fetches(),
        first,
        "no refetch before min_refresh_seconds"
    );
}

#[tokio::test]
async fn oidc_discovery_is_the_fallback_and_its_issuer_must_match() {
    // Only /.well-known/openid-configuration answers: keys come from its jwks_uri.
    let idp = Idp::start(&[&RSA]).await;
    *idp.state.discovery.lock().unwrap() = Discovery::OidcOnly;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    let t = RSA.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    h.app.shutdown(Duration::from_secs(1)).await;

    // A document naming another issuer is refused (RFC 8414 §3.3, OIDC Discovery §4.3), on
    // either path, and its jwks_uri is never fetched.
    for discovery in [Discovery::OAuth, Discovery::OidcOnly] {
        let idp = Idp::start(&[&RSA]).await;
        *idp.state.discovery.lock().unwrap() = discovery.clone();
        *idp.state.metadata_issuer.lock().unwrap() = Some("https://evil.example".into());
        let yaml = config_yaml(&idp.issuer, "", ROUTES);
        let mut h = Harness::start(idp, &yaml, false).await;
        eventually(
            "a failed discovery counted",
            Duration::from_secs(30),
            async || fetch_errors(&h.app) >= 1,
        )
        .await;
        let t = RSA.mint(&h.claims("files:list"));
        let a = h.bearer("POST", "/mcp", &t).await;
        assert_eq!(
            (a.status, a.reason()),
            (503, "no_signing_keys"),
            "{discovery:?}"
        );
        assert_eq!(
            h.idp.fetches(),
            0,
            "{discovery:?}: jwks_uri of a mismatched document"
        );
        h.app.shutdown(Duration::from_secs(1)).await;
    }
}

/// Fail closed (decision matrix): a panic inside the decision is a 500 `internal` deny, never
/// a gRPC error that a `failure_mode_allow: true` Envoy would turn into an allow. The trigger
/// exists in debug builds only (`mcp_authz::authz::fault`).
#[cfg(debug_assertions)]
#[tokio::test]
async fn a_panic_inside_the_decision_is_a_500_internal_deny() {
    let id = format!(
        "panic-{}",
        b64(&aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("{:?}{}", std::time::Instant::now(), std::process::id()).as_bytes(),
        )
        .as_ref()[..12])
    );
    mcp_authz::authz::fault::arm_panic_for_request_id(id.clone());
    let mut h = Harness::standard().await;
    let token = RSA.mint(&h.claims("files:list"));
    let internal = |h: &Harness| {
        h.app
            .metrics
            .counter("mcp_authz_checks_total", &[("reason", "internal")])
    };
    let before = internal(&h);
    let req = Req::new("POST", "/mcp")
        .header("authorization", &format!("Bearer {token}"))
        .header("x-request-id", &id);
    let a = h.check(req).await;
    assert_eq!((a.status, a.reason()), (500, "internal"), "{a:?}");
    assert_eq!(a.grpc_code, tonic::Code::PermissionDenied as i32);
    assert_eq!(a.www(), None);
    assert_eq!(a.headers["cache-control"], "no-store");
    assert_eq!(a.json()["error"], "internal_error");
    assert_eq!(internal(&h), before + 1);
    // The service goes on: the same token on another request is allowed.
    assert_eq!(h.bearer("POST", "/mcp", &token).await.status, 200);
}

/// Issue 13: Hanzo IAM's ML-DSA-65 access tokens (FIPS 204, pure, empty context), signed here
/// by an independent implementation (@noble/post-quantum via tests/e2e/mldsa.mjs), in Hanzo's
/// spelling (`alg: "MLDSA65"`, `kty: "MLDSA"`) and the JOSE draft's (`alg: "ML-DSA-65"`,
/// `kty: "AKP"`), beside an RSA key; each spelling verifies only with its own keys.
#[tokio::test]
async fn ml_dsa_65_tokens_verify_with_their_own_keys_only() {
    let idp = Idp::start(&[&RSA, &PQ, &AKP]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES).replace(
        "algorithms: [RS256, ES256, EdDSA]",
        "algorithms: [RS256, MLDSA65, ML-DSA-65]",
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let good = h.claims("files:list");

    let hanzo = PQ.mint(&good);
    // 3,309-byte signature: ~4.5 KB, within the default limits.max_token_bytes (8192).
    assert!((4400..8192).contains(&hanzo.len()), "{}", hanzo.len());
    let a = h.bearer("POST", "/mcp", &hanzo).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.headers["x-mcp-authz-subject"], "user-1");
    let a = h.bearer("POST", "/mcp", &AKP.mint(&good)).await;
    assert_eq!(a.status, 200, "JOSE draft spelling: {a:?}");
    // Without a kid: tried against the keys that accept the alg.
    let kidless = PQ.mint_with_header(&json!({"alg":"MLDSA65","typ":"at+jwt"}), &good);
    assert_eq!(h.bearer("POST", "/mcp", &kidless).await.status, 200);

    let (hp, sig) = hanzo.rsplit_once('.').unwrap();
    let payload = hp.split_once('.').unwrap().1;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "another ML-DSA key under the published kid",
            PQ2.mint_with_header(&json!({"alg":"MLDSA65","kid":"cert-pq"}), &good),
            "token_bad_signature",
        ),
        (
            "truncated signature",
            format!("{hp}.{}", &sig[..sig.len() - 8]),
            "token_bad_signature",
        ),
        (
            "signature of the right length, one bit flipped",
            {
                let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
                raw[1000] ^= 0x10;
                format!("{hp}.{}", b64(&raw))
            },
            "token_bad_signature",
        ),
        (
            "signature over another payload",
            format!(
                "{}.{payload}.{sig}",
                b64(br#"{"alg":"MLDSA65","kid":"cert-pq","x":1}"#)
            ),
            "token_bad_signature",
        ),
        (
            "MLDSA65 against an RSA kid",
            PQ.mint_with_header(&json!({"alg":"MLDSA65","kid":"rsa-1"}), &good),
            "token_unknown_kid",
        ),
        (
            "RS256 against an ML-DSA kid",
            RSA.mint_with_header(&json!({"alg":"RS256","kid":"cert-pq"}), &good),
            "token_unknown_kid",
        ),
        (
            "Hanzo's alg against a JOSE-spelled key",
            AKP.mint_with_header(&json!({"alg":"MLDSA65","kid":"akp-1"}), &good),
            "token_unknown_kid",
        ),
        (
            "the JOSE draft's alg against a Hanzo-spelled key",
            PQ.mint_with_header(&json!({"alg":"ML-DSA-65","kid":"cert-pq"}), &good),
            "token_unknown_kid",
        ),
        (
            "other ML-DSA parameter sets are not accepted",
            PQ.mint_with_header(&json!({"alg":"ML-DSA-87","kid":"cert-pq"}), &good),
            "token_disallowed_alg",
        ),
        (
            "a lowercase spelling is not an alias",
            PQ.mint_with_header(&json!({"alg":"mldsa65","kid":"cert-pq"}), &good),
            "token_disallowed_alg",
        ),
    ];
    for (name, token, reason) in cases {
        let a = h.bearer("POST", "/mcp", &token).await;
        assert_eq!(a.status, 401, "{name}: {a:?}");
        assert_eq!(a.reason(), reason, "{name}");
        assert_eq!(a.json()["error"], "invalid_token", "{name}");
    }
    assert_eq!(
        h.idp.fetches(),
        1,
        "every kid above is published: no refetch"
    );
}

/// ML-DSA-44 and ML-DSA-87 (FIPS 204), in the JOSE draft's spelling only, signed by
/// @noble/post-quantum: each parameter set verifies only with keys of its own set, and a key
/// whose size is not its `alg`'s is never loaded.
#[tokio::test]
async fn ml_dsa_44_and_87_tokens_verify_with_their_own_parameter_set_only() {
    let akp44 = TestKey::mldsa_level("akp-44", 44, true);
    let akp87 = TestKey::mldsa_level("akp-87", 87, true);
    let idp = Idp::start(&[&RSA, &AKP, &akp44, &akp87]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES).replace(
        "algorithms: [RS256, ES256, EdDSA]",
        "algorithms: [RS256, ML-DSA-44, ML-DSA-65, ML-DSA-87]",
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let good = h.claims("files:list");

    let t44 = akp44.mint(&good);
    let t87 = akp87.mint(&good);
    // 2,420- and 4,627-byte signatures: both within the default limits.max_token_bytes (8192).
    assert!(
        t44.len() < t87.len() && t87.len() < 8192,
        "{} {}",
        t44.len(),
        t87.len()
    );
    for (name, token) in [("ML-DSA-44", &t44), ("ML-DSA-87", &t87)] {
        let a = h.bearer("POST", "/mcp", token).await;
        assert_eq!(a.status, 200, "{name}: {a:?}");
    }

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "ML-DSA-44 against an ML-DSA-87 kid",
            akp44.mint_with_header(&json!({"alg":"ML-DSA-44","kid":"akp-87"}), &good),
            "token_unknown_kid",
        ),
        (
            "ML-DSA-87 against an ML-DSA-65 kid",
            akp87.mint_with_header(&json!({"alg":"ML-DSA-87","kid":"akp-1"}), &good),
            "token_unknown_kid",
        ),
        (
            "ML-DSA-65 named in the header, signed by the ML-DSA-44 key of that kid",
            akp44.mint_with_header(&json!({"alg":"ML-DSA-65","kid":"akp-44"}), &good),
            "token_unknown_kid",
        ),
        (
            "Hanzo's MLDSA65 (not in this issuer's algorithms) against an ML-DSA-44 kid",
            akp44.mint_with_header(&json!({"alg":"MLDSA65","kid":"akp-44"}), &good),
            "token_disallowed_alg",
        ),
    ];
    for (name, token, reason) in cases {
        let a = h.bearer("POST", "/mcp", &token).await;
        assert_eq!(a.status, 401, "{name}: {a:?}");
        assert_eq!(a.reason(), reason, "{name}");
    }
    // A signature of the other set's length under the right kid and alg: bad signature.
    let (hp, _) = t44.rsplit_once('.').unwrap();
    let (_, sig87) = t87.rsplit_once('.').unwrap();
    let a = h.bearer("POST", "/mcp", &format!("{hp}.{sig87}")).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.reason(), "token_bad_signature");
}

/// ML-DSA is opt-in: an issuer with the default `algorithms` (RS256, ES256) refuses an
/// ML-DSA-65 token from a key it has loaded, and says the algorithm is the reason.
#[tokio::test]
async fn ml_dsa_65_is_not_allowed_unless_configured() {
    let idp = Idp::start(&[&RSA, &PQ]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES)
        .replace("        algorithms: [RS256, ES256, EdDSA]\n", "");
    let mut h = Harness::start(idp, &yaml, true).await;
    let good = h.claims("files:list");
    assert_eq!(h.bearer("POST", "/mcp", &RSA.mint(&good)).await.status, 200);
    let a = h.bearer("POST", "/mcp", &PQ.mint(&good)).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.reason(), "token_disallowed_alg");
}
