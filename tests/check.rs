//! Integration tests: the real service on 127.0.0.1:0, a local identity provider on port 0, and
//! Check calls over gRPC — every row of the decision matrix and the token/credential cases
//! experts try (../shared/reference/peers.md).

mod common;

use common::*;
use mcp_authz::config::{IDENTITY_CONTEXT_KEY, IDENTITY_STRIPPED_BY_PROXY};
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

/// Every identity header and the metadata on, as `deploy/mcp-authz.yaml` documents them.
const FULL_IDENTITY: &str = "identity: {scopes_header: x-mcp-authz-scopes, \
                             issuer_header: x-mcp-authz-issuer, dynamic_metadata: true}";

#[tokio::test]
async fn valid_token_is_allowed_with_identity_headers() {
    let idp = Idp::start(&[&RSA, &EC, &ED]).await;
    let yaml = config_yaml(&idp.issuer, FULL_IDENTITY, ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
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
async fn default_answer_is_lean_and_reserves_every_identity_name() {
    let mut h = Harness::standard().await;
    let a = allowed_with_a_spoofed_subject(&mut h).await;
    assert_eq!(a.status, 200, "{a:?}");
    let mut set: Vec<_> = a.headers.keys().map(String::as_str).collect();
    set.sort_unstable();
    assert_eq!(set, ["x-mcp-authz-client-id", "x-mcp-authz-subject"]);
    assert_eq!(a.headers["x-mcp-authz-subject"], "user-1");
    // The names not sent are still removed, so a client's copy never reaches the server…
    assert_eq!(a.removed, ["x-mcp-authz-issuer", "x-mcp-authz-scopes"]);
    // …unless the route says the proxy stripped them before the Check (the Envoy render).
    let token = RSA.mint(&h.claims("files:list"));
    let behind_render = Req::new("POST", "/mcp")
        .header("authorization", &format!("Bearer {token}"))
        .context(IDENTITY_CONTEXT_KEY, IDENTITY_STRIPPED_BY_PROXY);
    let a = h.check(behind_render).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.removed.is_empty(), "{:?}", a.removed);
    assert_eq!(a.headers.len(), 2, "{a:?}");
    // Any other value of that key is not the render's promise.
    let other = Req::new("POST", "/mcp")
        .header("authorization", &format!("Bearer {token}"))
        .context(IDENTITY_CONTEXT_KEY, "yes");
    assert_eq!(h.check(other).await.removed.len(), 2);
    // No dynamic metadata on allows when nothing reads it; denials still carry theirs.
    assert!(a.metadata.is_empty(), "{:?}", a.metadata);
    let a = h.bearer("GET", "/mcp/files/x", &token).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.reason(), "insufficient_scope");
}

#[tokio::test]
async fn identity_headers_set_to_null_are_not_sent_but_stay_reserved() {
    let idp = Idp::start(&[&RSA]).await;
    let identity = "identity: {subject_header: null, client_id_header: null, \
                    scopes_header: x-granted}";
    let yaml = config_yaml(&idp.issuer, identity, ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    let a = allowed_with_a_spoofed_subject(&mut h).await;
    assert_eq!(a.status, 200, "{a:?}");
    let set: Vec<_> = a.headers.keys().map(String::as_str).collect();
    assert_eq!(set, ["x-granted"]);
    assert_eq!(a.headers["x-granted"], "files:list files:read");
    // Turned off, yet a client-sent `x-mcp-authz-subject` still never reaches the server.
    assert_eq!(
        a.removed,
        [
            "x-mcp-authz-client-id",
            "x-mcp-authz-issuer",
            "x-mcp-authz-scopes",
            "x-mcp-authz-subject"
        ]
    );
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
