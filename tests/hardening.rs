//! Issue 12 regressions, each tried as an attacker would: a cached token outliving its key
//! (same `kid`, new material), a reload racing an in-flight Check, tokens that say they are
//! not access tokens, undecodable CheckRequests, a member flood in the body, and claim values
//! that would forge log lines. Each test failed on the code before its fix. Issue 13 adds the
//! first for ML-DSA-65 keys (their raw public key is in the key-set fingerprint).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use prost::Message;
use prost::bytes::{Buf, BufMut, Bytes};
use serde_json::json;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Request, Status};

use mcp_authz::pb::envoy::service::auth::v3::CheckResponse;

/// Issue 12, item 1: Casdoor names kids after certificates, so regenerating a certificate
/// publishes new material under the same `kid`. A token verified under the old key must be
/// verified again (and now fail), not served from the cache until its own `exp`.
#[tokio::test]
async fn same_kid_new_material_retires_cached_tokens() {
    same_kid_new_material(TestKey::rsa("cert-1"), TestKey::rsa("cert-1")).await;
}

/// Issue 13: the same for Hanzo IAM's ML-DSA-65 keys: the raw public key is in the key-set
/// fingerprint, so a regenerated MLDSA65 certificate retires the tokens cached under the old one.
#[tokio::test]
async fn same_kid_new_ml_dsa_material_retires_cached_tokens() {
    same_kid_new_material(
        TestKey::mldsa("cert-1", false),
        TestKey::mldsa("cert-1", false),
    )
    .await;
}

async fn same_kid_new_material(old: TestKey, new: TestKey) {
    let idp = Idp::start(&[&old]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES).replace(
        "algorithms: [RS256, ES256, EdDSA]",
        "algorithms: [RS256, MLDSA65]",
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let token = old.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &token).await.status, 200);
    // Cached now: the second answer comes from the cache.
    let hits = |h: &Harness| {
        h.app
            .metrics
            .counter("mcp_authz_token_cache_requests_total", &[("result", "hit")])
    };
    let before = hits(&h);
    assert_eq!(h.bearer("POST", "/mcp", &token).await.status, 200);
    assert_eq!(hits(&h), before + 1, "the token is served from the cache");

    // The certificate is regenerated: same kid, new key.
    h.idp.set_keys(&[&new]);
    for (issuer, r) in h.app.authorizer.jwks.refresh_all().await {
        assert!(r.is_ok(), "{issuer}: {r:?}");
    }
    let a = h.bearer("POST", "/mcp", &token).await;
    assert_eq!(
        (a.status, a.reason()),
        (401, "token_bad_signature"),
        "a token signed by the replaced key must not be allowed from the cache"
    );
    // Tokens of the new key work, and a refetch of identical material keeps the cache.
    let fresh = new.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &fresh).await.status, 200);
    h.app.authorizer.jwks.refresh_all().await;
    let before = hits(&h);
    assert_eq!(h.bearer("POST", "/mcp", &fresh).await.status, 200);
    assert_eq!(hits(&h), before + 1, "same material: same generation");
}

/// Issue 12, item 2: a Check that began under the old configuration (here: waiting for an
/// unknown-kid refetch) finishes after a reload that removed the audience it relied on. Its
/// cache entry must not let the next Check, under the new configuration, through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_spanning_a_reload_leaves_no_usable_cache_entry() {
    let idp = Idp::start(&[&RSA]).await;
    // A Check waits for a refetch at most half of Envoy's timeout: give it the longest.
    let envoy = "envoy: {check_timeout_ms: 10000}\n";
    let with_extra = config_yaml(&idp.issuer, "", ROUTES).replace(
        "algorithms: [RS256, ES256, EdDSA]",
        "algorithms: [RS256, ES256, EdDSA]\n        extra_audiences: [client-1]",
    ) + envoy;
    let without = config_yaml(&idp.issuer, "", ROUTES) + envoy;
    let dir = tempdir();
    let path = dir.join("config.yaml");
    std::fs::write(&path, &with_extra).unwrap();
    let h = Harness::start(idp, &with_extra, true).await;
    // Signed by a key the running set does not have yet: the Check waits for a refetch.
    let mut claims = h.claims("files:list");
    claims["aud"] = json!("client-1");
    let token = RSA2.mint(&claims);
    h.idp.set_keys(&[&RSA, &RSA2]);
    // Slower than the reload below, well inside fetch_timeout_seconds (2).
    h.idp.set_mode(Mode::Slow(Duration::from_millis(1500)));
    let started = || {
        h.app.metrics.counter(
            "mcp_authz_jwks_unknown_kid_refetches_total",
            &[("result", "started")],
        )
    };
    let mut client = h.client.clone();
    let in_flight = tokio::spawn(async move {
        let req = Req::new("POST", "/mcp").header("authorization", &format!("Bearer {token}"));
        let a = Answer::from(
            client
                .check(req.clone().into_proto())
                .await
                .unwrap()
                .into_inner(),
        );
        (a, req)
    });
    // Wait until the Check has started its refetch (it is past its configuration load), then
    // reload while the refetch is still at the IdP.
    for _ in 0..400 {
        if started() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(started(), 1, "the unknown kid triggered a refetch");
    std::fs::write(&path, &without).unwrap();
    h.app.reload(&path).unwrap();
    h.idp.set_mode(Mode::Ok);
    let (first, req) = in_flight.await.unwrap();
    assert_eq!(first.status, 200, "decided under the old configuration");
    let mut client = h.client.clone();
    let again = Answer::from(client.check(req.into_proto()).await.unwrap().into_inner());
    assert_eq!(
        (again.status, again.reason()),
        (401, "token_wrong_audience"),
        "the new configuration decides, not the entry of a Check that began before it"
    );
}

/// Issue 12, item 3: through the whole Check, Keycloak's refresh/offline/ID tokens and
/// malformed kind declarations are `invalid_token`, not allowed.
#[tokio::test]
async fn tokens_that_declare_another_kind_are_refused() {
    let mut h = Harness::standard().await;
    let with = |h: &Harness, k: &str, v: serde_json::Value| {
        let mut c = h.claims("files:list");
        c[k] = v;
        RSA.mint(&c)
    };
    for (k, v) in [
        ("typ", json!("Refresh")),
        ("typ", json!("Offline")),
        ("typ", json!("ID")),
        ("token_type", json!("refresh_token")),
        ("tokenType", json!("refresh-token ")),
        ("tokenType", json!(["access-token"])),
        ("TokenType", json!("Refresh-Token")),
        ("token_use", json!("id")),
    ] {
        let t = with(&h, k, v.clone());
        let a = h.bearer("POST", "/mcp", &t).await;
        assert_eq!(
            (a.status, a.reason()),
            (401, "token_not_access_token"),
            "{k}: {v}"
        );
        assert!(a.www().unwrap().contains("error=\"invalid_token\""));
    }
    for (k, v) in [
        ("typ", json!("Bearer")),
        ("tokenType", json!("access-token")),
    ] {
        let t = with(&h, k, v.clone());
        assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200, "{k}: {v}");
    }
}

/// Sends pre-encoded CheckRequest bytes, decodes the CheckResponse.
#[derive(Clone, Copy)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = CheckResponse;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = CheckResponse;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CheckResponse>, Status> {
        let b = src.copy_to_bytes(src.remaining());
        CheckResponse::decode(b)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

async fn raw_check(h: &Harness, bytes: Vec<u8>) -> Result<Answer, Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", h.app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = PathAndQuery::from_static("/envoy.service.auth.v3.Authorization/Check");
    grpc.unary(Request::new(Bytes::from(bytes)), path, RawCodec)
        .await
        .map(|r| Answer::from(r.into_inner()))
}

/// Issue 12, item 4: what tonic cannot decode was a gRPC `INTERNAL` error, which a fail-open
/// Envoy or Istio turns into an allow. Every request reaching the service gets a denial.
#[tokio::test]
async fn undecodable_check_requests_are_denied_not_errors() {
    let h = Harness::standard().await;
    let token = RSA.mint(&h.claims("files:list"));
    let valid = Req::new("POST", "/mcp")
        .header("authorization", &format!("Bearer {token}"))
        .header("x-custom", "PLACEHOLDER-VALUE")
        .into_proto()
        .encode_to_vec();
    // The allowed request, sent raw, is allowed: the wrapper changes nothing that decodes.
    assert_eq!(raw_check(&h, valid.clone()).await.unwrap().status, 200);

    // A header value that is not UTF-8 (proto3 `string`), same length so the framing holds.
    let at = valid
        .windows(17)
        .position(|w| w == b"PLACEHOLDER-VALUE")
        .unwrap();
    let mut bad = valid.clone();
    bad[at..at + 17].copy_from_slice(b"\xff\xfe\xfdPLACEHOLDER-VA");
    // Bytes that are no protobuf at all, and a message over the decode limit.
    let garbage = vec![0xff; 64];
    let huge = Req::new("POST", "/mcp")
        .header("authorization", &format!("Bearer {token}"))
        .body(&"x".repeat(mcp_authz::authz::MAX_CHECK_MESSAGE_BYTES + 1))
        .into_proto()
        .encode_to_vec();
    for (what, bytes) in [
        ("non-UTF-8 header", bad),
        ("garbage", garbage),
        ("huge", huge),
    ] {
        let a = raw_check(&h, bytes)
            .await
            .unwrap_or_else(|s| panic!("{what}: gRPC error {s:?} instead of a denial"));
        assert_eq!(
            (a.status, a.grpc_code, a.reason()),
            (400, 7, "undecodable_request"),
            "{what}"
        );
    }
    assert_eq!(
        h.app.metrics.counter(
            "mcp_authz_checks_total",
            &[("decision", "deny"), ("reason", "undecodable_request")]
        ),
        3
    );
}

/// `envoy.max_request_bytes` cannot exceed what fits in a decodable CheckRequest.
#[test]
fn max_request_bytes_is_bounded_by_the_decode_limit() {
    let at = |n: usize| {
        mcp_authz::config::Config::from_yaml(&format!(
            "envoy: {{max_request_bytes: {n}}}\nresources:\n  - id: a\n    uri: https://mcp.example.com/mcp\n    issuers: [{{issuer: https://iam}}]\n"
        ))
    };
    assert!(at(mcp_authz::config::MAX_ENVOY_REQUEST_BYTES).is_ok());
    let err = at(mcp_authz::config::MAX_ENVOY_REQUEST_BYTES + 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("envoy.max_request_bytes"), "{err}");
    assert!(at(1 << 30).is_err());
}

/// Issue 12, item 5: a 64 KiB body of ~7,000 members was hashed through member by member
/// (quadratically); now the member count is bounded and the request gets a clear 400.
#[tokio::test]
async fn member_flood_gets_a_clear_400() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(
        &idp.issuer,
        "",
        r#"
    routes:
      - name: mcp
        path: /mcp
        scopes: [files:list]
        mcp:
          tools: {list_files: [files:list]}
"#,
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let token = RSA.mint(&h.claims("files:list"));
    let d = |x: usize| char::from_digit((x % 36) as u32, 36).unwrap();
    let members: Vec<String> = (0..7000)
        .map(|i| format!("\"{}{}{}\":0", d(i / 1296), d(i / 36), d(i)))
        .collect();
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"list_files",{}}}}}"#,
        members.join(",")
    );
    assert!(body.len() <= 65536);
    let a = h
        .check(
            Req::new("POST", "/mcp")
                .header("authorization", &format!("Bearer {token}"))
                .body(&body),
        )
        .await;
    assert_eq!((a.status, a.reason()), (400, "body_too_many_members"));
    let ok = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_files","arguments":{}}}"#;
    let a = h
        .check(
            Req::new("POST", "/mcp")
                .header("authorization", &format!("Bearer {token}"))
                .body(ok),
        )
        .await;
    assert_eq!(a.status, 200);
}

/// Issue 12, item 6: claim values and request fields with newlines, terminal escapes or bidi
/// controls are escaped in both log formats of the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_values_cannot_forge_log_lines() {
    for format in ["text", "json"] {
        let idp = Idp::start(&[&RSA]).await;
        let dir = tempdir();
        let grpc = free_port();
        let admin = free_port();
        let yaml = config_yaml(&idp.issuer, "", ROUTES)
            .replace(
                "grpc: \"127.0.0.1:0\"",
                &format!("grpc: \"127.0.0.1:{grpc}\""),
            )
            .replace(
                "admin: \"127.0.0.1:0\"",
                &format!("admin: \"127.0.0.1:{admin}\""),
            );
        let path = dir.join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
            .args(["--log-format", format, "serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info,mcp_authz::access=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            stderr.read_to_string(&mut s).unwrap();
            s
        });
        let forged = "FORGED mcp_authz::access: decision=\"allow\"";
        let evil = format!("alice\n{forged}\r\n{forged}\u{2028}\u{1b}[2J\u{202e}x\"y\\");
        let claims = json!({"iss": idp.issuer, "sub": evil, "client_id": evil,
            "aud": "https://mcp.example.com/mcp", "exp": now() + 300,
            // A control character in a scope makes the token malformed (scope::ClaimValue);
            // U+2028 is not one, so the scope list still reaches the logs and must be escaped.
            "scope": format!("files:read\u{2028}{forged}")});
        // Valid but lacking files:list: a 403 whose access and audit events carry the claims.
        let token = RSA.mint(&claims);
        let mut client = None;
        for _ in 0..200 {
            if let Ok(mut c) = mcp_authz::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(format!("http://127.0.0.1:{grpc}")).await {
                let req = Req::new("POST", "/mcp")
                    .header("authorization", &format!("Bearer {token}"))
                    .header("x-request-id", &format!("r1\n{forged}"));
                if let Ok(a) = c.check(req.into_proto()).await
                    && Answer::from(a.into_inner()).status == 403
                {
                    client = Some(c);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(client.is_some(), "{format}: the service answered 403");
        let _ = child.kill();
        let _ = child.wait();
        let logs = reader.join().unwrap();
        assert!(logs.contains("insufficient_scope"), "{format}: {logs}");
        let mut escaped_subs = 0;
        for line in logs.lines() {
            assert!(
                !line.trim_start().starts_with("FORGED"),
                "{format}: a forged line: {line:?}"
            );
            assert!(
                !line.contains('\u{2028}'),
                "{format}: raw U+2028 in {line:?}"
            );
            assert!(
                !line.contains("\u{1b}[2J"),
                "{format}: raw escape in {line:?}"
            );
            assert!(
                !line.contains('\u{202e}'),
                "{format}: raw bidi control in {line:?}"
            );
            if format == "json" {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("json: {e} in {line:?}"));
                if let Some(sub) = v.get("token.sub").and_then(|s| s.as_str())
                    && sub != "-"
                {
                    assert!(sub.starts_with("alice\\u{a}FORGED"), "{sub}");
                    assert!(!sub.contains('\n') && !sub.contains('\u{1b}'), "{sub:?}");
                    escaped_subs += 1;
                }
            } else if strip_sgr(line).contains("token.sub=\"alice\\u{a}FORGED") {
                // Quoted: the value holds spaces and `=`, which would otherwise read as fields.
                escaped_subs += 1;
            }
        }
        assert!(
            escaped_subs >= 2,
            "{format}: the escaped sub is in the access and audit events: {logs}"
        );
    }
}

/// `line` without ANSI SGR sequences (`ESC [ … m`), which the text format uses for colours.
fn strip_sgr(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("\u{1b}[") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        match tail.find('m') {
            Some(j) if tail[..j].bytes().all(|b| b.is_ascii_digit() || b == b';') => {
                rest = &tail[j + 1..];
            }
            _ => {
                out.push_str("\u{1b}[");
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Found while building the soak: a Check waited for an unknown-kid refetch up to twice the
/// fetch timeout plus a second (11 s by default), far past Envoy's ext_authz timeout (500 ms by
/// default). With a slow IdP, a flood of unknown kids became ext_authz errors — allows under
/// `failure_mode_allow`. The Check now answers within half of `envoy.check_timeout_ms`.
#[tokio::test]
async fn an_unknown_kid_check_answers_within_envoys_deadline() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES) + "envoy: {check_timeout_ms: 1000}\n";
    let h = Harness::start(idp, &yaml, true).await;
    h.idp.set_keys(&[&RSA, &RSA2]);
    h.idp.set_mode(Mode::Slow(Duration::from_secs(4)));
    let token = RSA2.mint(&h.claims("files:list"));
    let mut req = tonic::Request::new(
        Req::new("POST", "/mcp")
            .header("authorization", &format!("Bearer {token}"))
            .into_proto(),
    );
    // What Envoy does: a gRPC deadline of `check_timeout_ms`.
    req.set_timeout(Duration::from_millis(1000));
    let mut client = h.client.clone();
    let a = client
        .check(req)
        .await
        .map(|r| Answer::from(r.into_inner()))
        .unwrap_or_else(|s| panic!("an ext_authz error instead of a denial: {s:?}"));
    assert_eq!((a.status, a.reason()), (401, "token_unknown_kid"));
}
