//! RFC 7662 introspection through gRPC Check: opaque tokens judged by an in-test endpoint
//! (`common/introspection_server.rs`), answers judged like JWT claims, the answer cache (hits,
//! never past `exp`, short negatives), single-flight, the concurrency bound, timeouts and an
//! endpoint that is down (503 for the tokens that need it, nothing else), client
//! authentication on the wire, and `introspect: always` refusing a revoked JWT.

mod common;
#[path = "common/introspection_server.rs"]
mod introspection_server;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use introspection_server::{Behaviour, IntrospectionServer};
use serde_json::{Value, json};

const AUD: &str = "https://mcp.example.com/mcp";

fn secret_file(secret: &str) -> std::path::PathBuf {
    let p = tempdir().join("introspection-secret");
    std::fs::write(&p, format!("{secret}\n")).unwrap();
    p
}

/// The test config: the IdP's JWTs, the in-test endpoint for opaque tokens (Basic auth with a
/// secret file), a generous check timeout so timing on a shared machine does not decide.
fn yaml(idp: &Idp, endpoint: &str, introspection_extra: &str, resource_extra: &str) -> String {
    let secret = secret_file("s3cret:&");
    config_yaml(
        &idp.issuer,
        "envoy: {check_timeout_ms: 4000}",
        &format!(
            "        introspection: {{endpoint: \"{endpoint}\", client_id: \"rs:1\", client_secret_file: {}{introspection_extra}}}\n{resource_extra}",
            secret.display()
        ),
    )
}

const ROUTES: &str = r#"
    routes:
      - {name: health, path: /mcp/health, public: true}
      - {name: admin, path_prefix: /mcp/admin, scopes: [files:list], introspect: always}
      - {name: mcp, path_prefix: /mcp, scopes: [files:list]}
"#;

async fn harness(extra: &str) -> (Harness, IntrospectionServer) {
    let server = IntrospectionServer::start().await;
    let idp = Idp::start(&[&RSA]).await;
    let y = yaml(&idp, &server.endpoint(), extra, ROUTES);
    (Harness::start(idp, &y, true).await, server)
}

fn active(scope: &str) -> Value {
    json!({"active": true, "aud": AUD, "exp": now() + 300, "scope": scope,
        "sub": "user-9", "client_id": "client-9", "token_type": "Bearer"})
}

fn calls(h: &Harness, result: &str) -> u64 {
    h.app.metrics.counter(
        "mcp_authz_introspection_requests_total",
        &[("result", result)],
    )
}

fn opaque(name: &str) -> String {
    format!("opaque-{name}-{}", std::process::id())
}

#[tokio::test]
async fn opaque_token_is_judged_by_introspection() {
    let (mut h, server) = harness("").await;
    let t = opaque("ok");
    server.answer(&t, active("files:list"));
    let a = h.bearer("POST", "/mcp", &t).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.headers["x-mcp-authz-subject"], "user-9");
    assert_eq!(a.headers["x-mcp-authz-client-id"], "client-9");
    // One issuer: `sub` is unambiguous, so no issuer header by default (its name reserved).
    assert!(!a.headers.contains_key("x-mcp-authz-issuer"), "{a:?}");
    assert!(a.removed.iter().any(|r| r == "x-mcp-authz-issuer"), "{a:?}");
    assert_eq!(server.calls(), 1);
    assert_eq!(calls(&h, "active"), 1);
    // Scopes from `scope`: a route needing more is a 403 step-up, not a 401.
    server.answer(&t, active("files:read"));
    let t2 = opaque("few-scopes");
    server.answer(&t2, active("files:read"));
    let a = h.bearer("POST", "/mcp", &t2).await;
    assert_eq!(a.status, 403);
    assert!(a.www().unwrap().contains("insufficient_scope"));
    // The request the endpoint saw: RFC 7662 §2.1 form, token and hint.
    let seen = server.seen();
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(seen[0].form["token"], t);
    assert_eq!(seen[0].form["token_type_hint"], "access_token");
}

#[tokio::test]
async fn inactive_token_is_refused_with_the_challenge() {
    let (mut h, server) = harness("").await;
    let t = opaque("revoked");
    server.answer(&t, json!({"active": false}));
    let a = h.bearer("POST", "/mcp", &t).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.reason(), "token_inactive");
    let www = a.www().unwrap();
    assert!(www.contains("error=\"invalid_token\""), "{www}");
    assert!(
        www.contains("error_description=\"The access token is not active\""),
        "{www}"
    );
    assert!(www.contains(&format!("resource_metadata=\"{PRM_URL}\"")));
    assert_eq!(calls(&h, "inactive"), 1);
    // `active` must be literally true.
    let t = opaque("string-true");
    let mut v = active("files:list");
    v["active"] = json!("true");
    server.answer(&t, v);
    assert_eq!(
        h.bearer("POST", "/mcp", &t).await.reason(),
        "token_inactive"
    );
}

#[tokio::test]
async fn active_answers_are_judged_like_jwt_claims() {
    let (mut h, server) = harness("").await;
    let cases = [
        (
            "aud",
            json!({"aud": "https://other.example/mcp"}),
            "token_wrong_audience",
        ),
        (
            "iss",
            json!({"iss": "https://evil.example"}),
            "token_unknown_issuer",
        ),
        ("exp", json!({"exp": now() - 120}), "token_expired"),
        ("nbf", json!({"nbf": now() + 600}), "token_not_yet_valid"),
        (
            "kind",
            json!({"token_type": "refresh_token"}),
            "token_not_access_token",
        ),
        // A DPoP-bound token presented as a bearer token (RFC 9449 §7.2; tests/dpop.rs).
        (
            "cnf",
            json!({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}),
            "dpop_bearer_downgrade",
        ),
    ];
    for (name, patch, reason) in cases {
        let t = opaque(name);
        let mut v = active("files:list");
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        server.answer(&t, v);
        let a = h.bearer("POST", "/mcp", &t).await;
        assert_eq!((a.status, a.reason()), (401, reason), "{name}");
        assert!(a.www().unwrap().contains("invalid_token"), "{name}");
    }
    // `iss` equal to the configured issuer and `aud` in an array pass.
    let t = opaque("iss-ok");
    let mut v = active("files:list");
    v["iss"] = json!(h.idp.issuer);
    v["aud"] = json!(["other", AUD]);
    server.answer(&t, v);
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
}

#[tokio::test]
async fn answers_are_cached_by_token_and_never_past_exp() {
    let (mut h, server) = harness("").await;
    let hits = |h: &Harness| {
        h.app.metrics.counter(
            "mcp_authz_introspection_cache_requests_total",
            &[("result", "hit")],
        )
    };
    let t = opaque("cached");
    server.answer(&t, active("files:list"));
    for _ in 0..3 {
        assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    }
    assert_eq!(server.calls(), 1, "one call, then the cache");
    assert_eq!(hits(&h), 2);
    // The answer changes at the endpoint (revoked): the cached one stands until its time.
    server.answer(&t, json!({"active": false}));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    // An answer expiring in 4 s is reused for 4 s, not `cache_seconds` (60).
    let short = opaque("short");
    let mut v = active("files:list");
    v["exp"] = json!(now() + 4);
    server.answer(&short, v);
    assert_eq!(h.bearer("POST", "/mcp", &short).await.status, 200);
    assert_eq!(h.bearer("POST", "/mcp", &short).await.status, 200);
    assert_eq!(server.calls(), 2);
    tokio::time::sleep(Duration::from_millis(5100)).await;
    // Past its exp the answer is asked for again (the token's leeway still lets it pass).
    assert_eq!(h.bearer("POST", "/mcp", &short).await.status, 200);
    assert_eq!(server.calls(), 3, "the cache must not outlive exp");
}

#[tokio::test]
async fn negative_answers_are_cached_briefly() {
    let (mut h, server) = harness(", negative_cache_seconds: 3, cache_seconds: 60").await;
    let t = opaque("neg");
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 401);
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 401);
    assert_eq!(server.calls(), 1);
    // The token becomes active (e.g. it had not yet replicated): seen after the short TTL.
    server.answer(&t, active("files:list"));
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    assert_eq!(server.calls(), 2);
}

#[tokio::test]
async fn concurrent_misses_for_one_token_make_one_call() {
    let (h, server) = harness("").await;
    server.set_delay(Duration::from_millis(400));
    let t = opaque("flight");
    server.answer(&t, active("files:list"));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = h.client.clone();
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let req = Req::new("POST", "/mcp").header("authorization", &format!("Bearer {t}"));
            Answer::from(client.check(req.into_proto()).await.unwrap().into_inner()).status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(server.calls(), 1, "single-flight per token");
}

#[tokio::test]
async fn concurrent_calls_are_bounded_per_issuer() {
    let (h, server) = harness(", max_concurrent: 2").await;
    server.set_delay(Duration::from_millis(150));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let t = opaque(&format!("bound-{i}"));
        server.answer(&t, active("files:list"));
        let mut client = h.client.clone();
        tasks.push(tokio::spawn(async move {
            let req = Req::new("POST", "/mcp").header("authorization", &format!("Bearer {t}"));
            Answer::from(client.check(req.into_proto()).await.unwrap().into_inner()).status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(server.calls(), 8);
    assert!(server.max_in_flight() <= 2, "{}", server.max_in_flight());
    assert_eq!(
        server.max_in_flight(),
        2,
        "the bound is used, not serialised"
    );
}

#[tokio::test]
async fn slow_endpoint_is_a_503_in_time() {
    let (mut h, server) = harness(", timeout_ms: 300").await;
    server.set_delay(Duration::from_millis(2000));
    let t = opaque("slow");
    server.answer(&t, active("files:list"));
    let started = std::time::Instant::now();
    let a = h.bearer("POST", "/mcp", &t).await;
    assert_eq!((a.status, a.reason()), (503, "introspection_unavailable"));
    assert_eq!(a.headers.get("retry-after").map(String::as_str), Some("30"));
    assert!(a.www().is_none());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    eventually(
        "the timeout is counted",
        Duration::from_secs(5),
        async || calls(&h, "timeout") == 1,
    )
    .await;
}

#[tokio::test]
async fn endpoint_down_fails_closed_only_for_tokens_that_need_it() {
    let (mut h, server) = harness("").await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = opaque("down");
    let a = h.bearer("POST", "/mcp", &t).await;
    assert_eq!((a.status, a.reason()), (503, "introspection_unavailable"));
    // A JWT on an `opaque` route never needs the endpoint.
    let jwt = RSA.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &jwt).await.status, 200);
    // On an `introspect: always` route it does.
    let a = h.bearer("POST", "/mcp/admin", &jwt).await;
    assert_eq!((a.status, a.reason()), (503, "introspection_unavailable"));
    assert!(calls(&h, "error") >= 2);
}

#[tokio::test]
async fn garbage_answers_are_endpoint_failures() {
    let (mut h, server) = harness("").await;
    for (i, b) in [
        Behaviour::Status(500),
        Behaviour::Status(401),
        Behaviour::Html,
        Behaviour::NotObject,
        Behaviour::Huge,
    ]
    .into_iter()
    .enumerate()
    {
        server.set_behaviour(b.clone());
        let t = opaque(&format!("garbage-{i}"));
        server.answer(&t, active("files:list"));
        let a = h.bearer("POST", "/mcp", &t).await;
        assert_eq!(
            (a.status, a.reason()),
            (503, "introspection_unavailable"),
            "{b:?}"
        );
    }
    // Failures are not cached: the endpoint recovers, the next Check is allowed.
    server.set_behaviour(Behaviour::Answer);
    let t = opaque("garbage-0");
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
}

#[tokio::test]
async fn client_secret_basic_on_the_wire() {
    let (mut h, server) = harness("").await;
    let t = opaque("basic");
    server.answer(&t, active("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    let seen = &server.seen()[0];
    // RFC 6749 §2.3.1: id and secret form-urlencoded, then Basic.
    let expected = format!("Basic {}", STANDARD.encode("rs%3A1:s3cret%3A%26"));
    assert_eq!(seen.authorization.as_deref(), Some(expected.as_str()));
    assert!(!seen.form.contains_key("client_secret"));
    assert!(!seen.form.contains_key("client_id"));
}

#[tokio::test]
async fn client_secret_post_on_the_wire_with_the_secret_from_the_environment() {
    let server = IntrospectionServer::start().await;
    let idp = Idp::start(&[&RSA]).await;
    // An environment variable cargo sets for every test process (no unsafe set_var).
    let y = config_yaml(
        &idp.issuer,
        "envoy: {check_timeout_ms: 4000}",
        &format!(
            "        introspection: {{endpoint: \"{}\", client_id: rs, client_secret_env: CARGO_PKG_NAME, auth_method: client_secret_post}}\n{ROUTES}",
            server.endpoint()
        ),
    );
    let mut h = Harness::start(idp, &y, true).await;
    let t = opaque("post");
    server.answer(&t, active("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    let seen = &server.seen()[0];
    assert_eq!(seen.authorization, None);
    assert_eq!(seen.form["client_id"], "rs");
    assert_eq!(seen.form["client_secret"], env!("CARGO_PKG_NAME"));
    assert_eq!(seen.form["token"], t);
}

#[tokio::test]
async fn introspect_always_refuses_a_revoked_jwt() {
    let (mut h, server) = harness("").await;
    let jwt = RSA.mint(&h.claims("files:list"));
    // Not on the `opaque` route: verified locally, the endpoint is not asked.
    assert_eq!(h.bearer("POST", "/mcp", &jwt).await.status, 200);
    assert_eq!(server.calls(), 0);
    // On the `always` route the issuer says it is revoked.
    server.answer(&jwt, json!({"active": false}));
    let a = h.bearer("POST", "/mcp/admin", &jwt).await;
    assert_eq!((a.status, a.reason()), (401, "token_inactive"));
    assert_eq!(server.calls(), 1);
    // A JWT the issuer still vouches for passes, with the JWT's own identity.
    let mut claims = h.claims("files:list");
    claims["jti"] = json!("live");
    let live = RSA.mint(&claims);
    let mut v = active("files:list");
    v["sub"] = json!("user-1");
    server.answer(&live, v);
    let a = h.bearer("POST", "/mcp/admin", &live).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.headers["x-mcp-authz-subject"], "user-1");
    // A JWT that fails verification is refused before any introspection.
    let before = server.calls();
    let bad = RSA2.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp/admin", &bad).await.status, 401);
    assert_eq!(server.calls(), before);
}

#[tokio::test]
async fn endpoint_is_discovered_from_the_issuer_metadata() {
    let server = IntrospectionServer::start().await;
    let idp = Idp::start(&[&RSA]).await;
    let dir = tempdir();
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [RSA.jwk()]}).to_string()).unwrap();
    let secret = secret_file("x");
    // The introspection server is the issuer here; its keys come from a file.
    let y = format!(
        r#"
listen: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
envoy: {{check_timeout_ms: 4000}}
resources:
  - id: files
    uri: {AUD}
    issuers:
      - issuer: {}
        jwks_file: {}
        introspection: {{client_id: rs, client_secret_file: {}}}
"#,
        server.url,
        jwks.display(),
        secret.display()
    );
    let mut h = Harness::start(idp, &y, true).await;
    let t = opaque("discovered");
    server.answer(&t, active(""));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    assert_eq!(server.calls(), 1);
    // Metadata naming another issuer is not trusted.
    *server.state.issuer.lock().unwrap() = "https://elsewhere.example".into();
    let server2 = IntrospectionServer::start().await;
    *server2.state.issuer.lock().unwrap() = "https://elsewhere.example".into();
    let y2 = y.replace(&server.url, &server2.url);
    let mut h2 = Harness::start(Idp::start(&[&RSA]).await, &y2, true).await;
    let a = h2.bearer("POST", "/mcp", &t).await;
    assert_eq!((a.status, a.reason()), (503, "introspection_unavailable"));
    assert_eq!(server2.calls(), 0);
}

#[tokio::test]
async fn explain_and_doctor_show_introspection() {
    let server = IntrospectionServer::start().await;
    let idp = Idp::start(&[&RSA]).await;
    let y = yaml(&idp, &server.endpoint(), "", ROUTES);
    let config = mcp_authz::config::Config::from_yaml(&y).unwrap();
    let t = opaque("explain");
    server.answer(&t, active("files:list"));
    let req = mcp_authz::explain::Request {
        method: "POST".into(),
        path: "/mcp".into(),
        host: "mcp.example.com".into(),
        token: Some(t.clone()),
        ..Default::default()
    };
    let (out, allowed) = mcp_authz::explain::run(config.clone(), req, now())
        .await
        .unwrap();
    assert!(allowed, "{out}");
    assert!(out.contains("introspection:"), "{out}");
    assert!(out.contains("client_secret_basic"), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
    assert!(!out.contains(&t), "the token is never printed: {out}");
    // doctor probes with a made-up token, never a real one.
    let before = server.calls();
    let (out, _) = mcp_authz::doctor::run(&config, &mcp_authz::doctor::Probe::default())
        .await
        .unwrap();
    assert!(out.contains("answers a made-up token as inactive"), "{out}");
    assert_eq!(server.calls(), before + 1);
    let probe = &server.seen()[before];
    assert!(probe.form["token"].starts_with("mcp-authz-doctor-probe"));
    assert!(!out.contains("s3cret"), "{out}");
    server.stop();
    let (out, level) = mcp_authz::doctor::run(&config, &mcp_authz::doctor::Probe::default())
        .await
        .unwrap();
    assert!(
        out.contains("introspection: the introspection endpoint could not be reached"),
        "{out}"
    );
    assert_eq!(level, mcp_authz::doctor::Level::Error);
}

/// The introspection metrics, once they have series, pass `promtool check metrics` (as the
/// whole exposition does in tests/prometheus.rs; a missing promtool is a failure).
#[tokio::test]
async fn introspection_metrics_pass_promtool() {
    let (mut h, server) = harness("").await;
    // The call series exist at 0 from the start, so the first failure shows in increase().
    let line = format!(
        "mcp_authz_introspection_requests_total{{issuer=\"{}\",result=\"error\"}} 0",
        h.idp.issuer
    );
    assert!(h.app.metrics.render().contains(&line), "{line}");
    let t = opaque("metrics");
    server.answer(&t, active("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    let scrape = h.app.metrics.render();
    for family in [
        "mcp_authz_introspection_requests_total{",
        "mcp_authz_introspection_duration_seconds_bucket{",
        "mcp_authz_introspection_cache_requests_total{result=\"hit\"} 1",
    ] {
        assert!(scrape.contains(family), "{family} missing:\n{scrape}");
    }
    let promtool = std::env::var_os("MCP_AUTHZ_PROMTOOL")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("promtool"))
                .find(|p| p.is_file())
        })
        .expect("promtool not found: set MCP_AUTHZ_PROMTOOL or apt-get install prometheus");
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `explain --claims` checks a claims document offline: nothing is sent to the endpoint.
#[tokio::test]
async fn explain_offline_claims_never_introspect() {
    let server = IntrospectionServer::start().await;
    let idp = Idp::start(&[&RSA]).await;
    let y = yaml(&idp, &server.endpoint(), "", ROUTES);
    let config = mcp_authz::config::Config::from_yaml(&y).unwrap();
    for path in ["/mcp", "/mcp/admin"] {
        let claims = json!({"iss": idp.issuer, "aud": AUD, "exp": now() + 300,
            "scope": "files:list", "sub": "offline"});
        let req = mcp_authz::explain::Request {
            method: "POST".into(),
            path: path.into(),
            host: "mcp.example.com".into(),
            claims: Some(claims.to_string().into_bytes()),
            ..Default::default()
        };
        let (out, allowed) = mcp_authz::explain::run(config.clone(), req, now())
            .await
            .unwrap();
        assert!(allowed, "{path}: {out}");
    }
    assert_eq!(server.calls(), 0);
}

/// A reload that changes an issuer's introspection settings takes effect at once: the new
/// endpoint is asked, not the old answers reused.
#[tokio::test]
async fn reload_switches_endpoint_and_forgets_old_answers() {
    let (mut h, a) = harness("").await;
    let b = IntrospectionServer::start().await;
    let t = opaque("reload");
    a.answer(&t, active("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    // B says the token was revoked.
    let path = tempdir().join("mcp-authz.yaml");
    std::fs::write(&path, yaml(&h.idp, &b.endpoint(), "", ROUTES)).unwrap();
    h.app.reload(&path).expect("reload");
    let r = h.bearer("POST", "/mcp", &t).await;
    assert_eq!((r.status, r.reason()), (401, "token_inactive"));
    assert_eq!((a.calls(), b.calls()), (1, 1));
}
