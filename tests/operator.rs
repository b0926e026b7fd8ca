//! The operator's tools against a local authorization server: `explain` (every step and the
//! exact response) and `doctor` (discovery, keys, algorithms, scopes, RFC 8707 audience).

mod common;

use std::process::Command;

use common::*;
use mcp_authz::config::Config;
use mcp_authz::{doctor, explain};
use serde_json::json;

const TOOLS: &str = r#"
    routes:
      - name: mcp
        path: /mcp
        scopes: [files:list]
        mcp:
          tools: {read_file: [files:read], list_files: [files:list]}
"#;

fn request(token: Option<String>, body: &str) -> explain::Request {
    explain::Request {
        method: "POST".into(),
        path: "/mcp".into(),
        host: "mcp.example.com".into(),
        body: body.as_bytes().to_vec(),
        token,
        ..Default::default()
    }
}

const READ: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file"}}"#;

#[tokio::test]
async fn explain_shows_each_step_and_the_exact_response() {
    let idp = Idp::start(&[&RSA]).await;
    let config = Config::from_yaml(&config_yaml(&idp.issuer, "", TOOLS)).unwrap();
    let claims = json!({"iss": idp.issuer, "sub": "alice", "aud": "https://mcp.example.com/mcp", "exp": now() + 300, "scope": "files:list"});
    let (report, allowed) = explain::run(
        config.clone(),
        request(Some(RSA.mint(&claims)), READ),
        now(),
    )
    .await
    .unwrap();
    assert!(!allowed);
    for line in [
        "ok   path",
        "ok   resource           files (https://mcp.example.com/mcp)",
        "ok   route              mcp: scopes [files:list]; MCP rules for POST bodies",
        "ok   token structure",
        "ok   signature          verified with RS256",
        "ok   aud                includes https://mcp.example.com/mcp",
        "ok   body               JSON-RPC: tools/call read_file",
        "ok   mcp rules          add [files:read]",
        "FAIL scopes             missing [files:read]",
        "decision: deny (insufficient_scope)",
        "HTTP/1.1 403",
        "www-authenticate: Bearer realm=\"MCP Server\", error=\"insufficient_scope\"",
    ] {
        assert!(report.contains(line), "report lacks {line:?}:\n{report}");
    }
    // An expired token fails at exp with a 401.
    let mut old = claims.clone();
    old["exp"] = json!(now() - 600);
    let (report, _) = explain::run(config.clone(), request(Some(RSA.mint(&old)), READ), now())
        .await
        .unwrap();
    assert!(report.contains("FAIL exp"), "{report}");
    assert!(report.contains("HTTP/1.1 401"), "{report}");
    // Allowed: the identity headers that would go upstream.
    let mut full = claims.clone();
    full["scope"] = json!("files:list files:read");
    let (report, allowed) = explain::run(config, request(Some(RSA.mint(&full)), READ), now())
        .await
        .unwrap();
    assert!(allowed, "{report}");
    assert!(report.contains("+ x-mcp-authz-subject: alice"), "{report}");
}

#[tokio::test]
async fn explain_offline_claims_and_no_token() {
    let config = Config::from_yaml(&config_yaml("https://iam.example.com", "", TOOLS)).unwrap();
    let mut req = request(None, READ);
    req.claims = Some(json!({"iss": "https://iam.example.com", "aud": "https://mcp.example.com/mcp", "exp": now() + 60, "scope": "files:list files:read"}).to_string().into_bytes());
    let (report, allowed) = explain::run(config.clone(), req, now()).await.unwrap();
    assert!(allowed, "{report}");
    assert!(
        report.contains("signature, key and algorithm not checked"),
        "{report}"
    );
    let (report, allowed) = explain::run(config, request(None, READ), now())
        .await
        .unwrap();
    assert!(!allowed);
    assert!(report.contains("HTTP/1.1 401"), "{report}");
    assert!(
        report.contains(
            "resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        ),
        "{report}"
    );
}

#[tokio::test]
async fn doctor_reports_a_healthy_issuer() {
    let idp = Idp::start(&[&RSA]).await;
    let config = Config::from_yaml(&config_yaml(&idp.issuer, "", TOOLS)).unwrap();
    let probe = doctor::Probe {
        client_id: Some("c".into()),
        client_secret: Some("s".into()),
    };
    let (report, worst) = doctor::run(&config, &probe).await.unwrap();
    assert!(worst < doctor::Level::Error, "{report}");
    for line in [
        "issuer matches",
        "key rsa-1: Rsa, alg RS256",
        "algorithms with a key: RS256",
        "advertises every scope",
        "tokens carry aud https://mcp.example.com/mcp",
    ] {
        assert!(report.contains(line), "lacks {line:?}:\n{report}");
    }
    let (report, worst) = doctor::run(&config, &doctor::Probe::default())
        .await
        .unwrap();
    assert_eq!(worst, doctor::Level::Warn, "{report}");
    assert!(report.contains("token audience not checked"), "{report}");
}

/// Issue 13: Hanzo IAM's ML-DSA-65 key (and the JOSE draft's spelling) are usable keys; while
/// `algorithms` leaves them out, doctor says their tokens will be refused.
#[tokio::test]
async fn doctor_reports_ml_dsa_keys_as_usable() {
    let idp = Idp::start(&[&RSA, &PQ, &AKP]).await;
    let yaml = config_yaml(&idp.issuer, "", TOOLS);
    let (report, worst) = doctor::run(
        &Config::from_yaml(&yaml).unwrap(),
        &doctor::Probe::default(),
    )
    .await
    .unwrap();
    assert_eq!(worst, doctor::Level::Warn, "{report}");
    for line in [
        "key cert-pq: MlDsa65Hanzo, alg MLDSA65",
        "key akp-1: MlDsa65Akp, alg ML-DSA-65",
        "key cert-pq verifies only MLDSA65, not in algorithms: its tokens will be refused",
        "key akp-1 verifies only ML-DSA-65, not in algorithms",
        "algorithms with a key: RS256",
    ] {
        assert!(report.contains(line), "lacks {line:?}:\n{report}");
    }
    assert!(!report.contains("skipped"), "{report}");
    let yaml = yaml.replace(
        "algorithms: [RS256, ES256, EdDSA]",
        "algorithms: [RS256, MLDSA65, ML-DSA-65]",
    );
    let (report, _) = doctor::run(
        &Config::from_yaml(&yaml).unwrap(),
        &doctor::Probe::default(),
    )
    .await
    .unwrap();
    assert!(
        report.contains("algorithms with a key: RS256 MLDSA65 ML-DSA-65"),
        "{report}"
    );
    assert!(!report.contains("not in algorithms"), "{report}");
}

#[tokio::test]
async fn doctor_finds_problems() {
    // Keys of a kind we cannot use, a scope the AS does not know, no RFC 8707 support.
    let idp = Idp::start_with(
        json!({"keys": [{"kty":"SLHDSA","kid":"pq"}, {"kty":"MLDSA","kid":"pq-no-alg","x":"AA"}, {"kty":"oct","kid":"h","k":"c2VjcmV0"}]}),
    )
    .await;
    idp.state
        .resource_indicators
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let yaml =
        config_yaml(&idp.issuer, "", TOOLS).replace("files:read]", "files:read, files:admin]");
    let config = Config::from_yaml(&yaml).unwrap();
    let probe = doctor::Probe {
        client_id: Some("c".into()),
        client_secret: Some("s".into()),
    };
    let (report, worst) = doctor::run(&config, &probe).await.unwrap();
    assert_eq!(worst, doctor::Level::Error, "{report}");
    for line in [
        "key pq skipped (unsupported_kty)",
        "key pq-no-alg skipped (malformed)",
        "key h skipped (symmetric)",
        "no usable signing key",
        "does not advertise files:admin",
        "the token's aud is [\"client-1\"]",
    ] {
        assert!(report.contains(line), "lacks {line:?}:\n{report}");
    }
    // Issuer mismatch in the metadata.
    *idp.state.issuer.lock().unwrap() = "https://impostor.example".into();
    let (report, _) = doctor::run(&config, &doctor::Probe::default())
        .await
        .unwrap();
    assert!(
        report.contains("names issuer \"https://impostor.example\""),
        "{report}"
    );
}

/// Issue 13: what doctor can see of the IdP claim shapes — a token whose `aud` is the client id,
/// scopes or the client id in a claim the issuer's settings do not read, and an issuer that
/// differs from the discovery document's by a trailing slash or by the host (Casdoor without
/// `origin`).
#[tokio::test]
async fn doctor_points_out_claim_shape_misconfigurations() {
    let idp = Idp::start(&[&RSA]).await;
    idp.state
        .resource_indicators
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let probe = doctor::Probe {
        client_id: Some("c".into()),
        client_secret: Some("s".into()),
    };
    let yaml = config_yaml(&idp.issuer, "", TOOLS);
    let with = |settings: &str| {
        yaml.replace(
            "algorithms: [RS256, ES256, EdDSA]",
            &format!("algorithms: [RS256, ES256, EdDSA]\n        {settings}"),
        )
    };
    // Defaults: the probe token (scope string, client_id) is read as configured.
    let (report, worst) = doctor::run(&Config::from_yaml(&yaml).unwrap(), &probe)
        .await
        .unwrap();
    assert_eq!(worst, doctor::Level::Error, "{report}");
    assert!(
        report.contains(
            "the token's aud is [\"client-1\"], the client id, not https://mcp.example.com/mcp"
        ),
        "{report}"
    );
    assert!(!report.contains("scope_claims does not read"), "{report}");
    assert!(
        !report.contains("client_id_claims does not read"),
        "{report}"
    );
    // Settings for another IdP's shape: the scopes and the client id are in claims not read.
    let config = Config::from_yaml(&with(
        "scope_claims: [scp, permissions]\n        client_id_claims: [cid, appid]",
    ))
    .unwrap();
    let (report, _) = doctor::run(&config, &probe).await.unwrap();
    for line in [
        "resource files: the token carries scopes in `scope` (files:list), which scope_claims does not read",
        "resource files: the token names its client in `client_id`, which client_id_claims does not read",
    ] {
        assert!(report.contains(line), "lacks {line:?}:\n{report}");
    }
    // With RFC 8707 support the aud is right and the "client id" remark goes.
    idp.state
        .resource_indicators
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (report, _) = doctor::run(&config, &probe).await.unwrap();
    assert!(report.contains("tokens carry aud"), "{report}");
    assert!(!report.contains("the client id, not"), "{report}");
    // The discovery document's issuer differs by a trailing slash, then by the host.
    let config = Config::from_yaml(&yaml).unwrap();
    *idp.state.metadata_issuer.lock().unwrap() = Some(format!("{}/", idp.issuer));
    let (report, worst) = doctor::run(&config, &doctor::Probe::default())
        .await
        .unwrap();
    assert_eq!(worst, doctor::Level::Error, "{report}");
    assert!(
        report.contains("differ only in a trailing slash"),
        "{report}"
    );
    let port = idp.addr.port();
    *idp.state.metadata_issuer.lock().unwrap() = Some(format!("http://localhost:{port}"));
    let (report, _) = doctor::run(&config, &doctor::Probe::default())
        .await
        .unwrap();
    assert!(
        report.contains(&format!("names issuer \"http://localhost:{port}\"")),
        "{report}"
    );
    assert!(report.contains("unless `origin` is set"), "{report}");
}

#[test]
fn cli_explain_and_doctor_exit_codes() {
    let dir = std::env::temp_dir().join(format!("mcp-authz-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.yaml");
    // An issuer nobody answers for: doctor must fail, explain still explains.
    std::fs::write(
        &cfg,
        config_yaml("http://127.0.0.1:9", "  fetch_timeout_seconds: 1", TOOLS)
            .replace("  fetch_timeout_seconds: 2\n", ""),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_mcp-authz");
    let out = Command::new(bin)
        .args(["doctor", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ERROR"));
    let claims = dir.join("claims.json");
    std::fs::write(&claims, json!({"iss": "http://127.0.0.1:9", "aud": "https://mcp.example.com/mcp", "exp": now() + 60}).to_string()).unwrap();
    let out = Command::new(bin)
        .args(["explain", "--config"])
        .arg(&cfg)
        .arg("--claims")
        .arg(&claims)
        .args(["--body", READ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("decision: deny (insufficient_scope)"),
        "{text}"
    );
}
