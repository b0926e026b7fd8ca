//! Inputs the fuzz targets (fuzz/, `fuzz/run.sh`) found, kept as plain tests so a regression
//! fails `cargo test` without a fuzzing run: each asserts the refusal the fix introduced and
//! that the nearest legitimate input is still accepted.
#![forbid(unsafe_code)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use mcp_authz::config::Config;
use mcp_authz::jwks::JwksManager;
use mcp_authz::mcp::{BodyError, Limits, parse_body};
use mcp_authz::metrics::Metrics;
use mcp_authz::normalize::{UriError, canonical_resource_uri};
use mcp_authz::token::{TokenError, validate};

/// fuzz target `normalize`: `https:..//x` has no `..` segment as written, but its WHATWG
/// serialization `https://..//x` does, so the "canonical" form was not canonical (a second
/// pass refused it). Refused on the first pass now.
#[test]
fn a_uri_whose_serialization_has_a_dot_segment_is_refused() {
    let crash = String::from_utf8_lossy(b"https:..//)\xc5\x8fttps:\x88\xbf\x97x");
    // Refused as soon as a check sees it: the empty segment after `..` (tests/props.rs found
    // the same class) or the dot segment of its serialization.
    let refused = |uri: &str| {
        matches!(
            canonical_resource_uri(uri),
            Err(UriError::DotSegment | UriError::EmptySegment)
        )
    };
    assert!(refused(&crash));
    for uri in ["https:..//x", "https:../a?b"] {
        assert!(refused(uri), "{uri}: {:?}", canonical_resource_uri(uri));
    }
    // Dots that are not whole segments stay fine.
    assert_eq!(
        canonical_resource_uri("https://a..b/c.d").as_deref(),
        Ok("https://a..b/c.d")
    );
}

/// fuzz targets `jsonrpc` and `decision`: invalid UTF-8 inside a member we skip (an unknown
/// message member's value, a key inside `clientInfo`) was accepted, because serde_json skips
/// ignored strings without validating them; Python's `json` refuses that body and body-parser
/// reads replacement characters, so the gate and the server read different requests.
#[test]
fn a_body_that_is_not_utf8_is_refused() {
    let mut jsonrpc = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"meth\\u023fd\":\"tools/cal".to_vec();
    jsonrpc.extend([0x91; 58]);
    jsonrpc.extend(b"l\",\"params\":{\"n\\u0061me\":\"write_file\"}}");
    let decision: &[u8] = b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"initialize\", \
        \"params\": {\"protocolVersion\": \"2025-06-18\", \"capabilities\": {}, \
        \"clientInfo\": {\"name\": \"c\", \"versi\xefn\": \"1\"}}}";
    for body in [&jsonrpc[..], decision] {
        assert_eq!(
            parse_body(body, Limits::default()),
            Err(BodyError::NotJsonRpc),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // The same messages in valid UTF-8 are read.
    let fixed = String::from_utf8_lossy(decision).into_owned();
    let calls = parse_body(fixed.as_bytes(), Limits::default()).expect("valid UTF-8 is read");
    assert_eq!(calls[0].method.as_deref(), Some("initialize"));
}

/// fuzz target `token`: a correctly signed token whose payload held invalid UTF-8 in a member
/// we do not read (`"client=_id"`) validated; RFC 7519 §7.2 requires UTF-8 JSON. Refused as
/// malformed now, while the same claims in valid UTF-8 still validate.
#[tokio::test]
async fn a_signed_token_whose_payload_is_not_utf8_is_refused() {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let dir =
        std::env::temp_dir().join(format!("mcp-authz-fuzz-regression-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let jwks = dir.join("jwks.json");
    let jwk = format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"ed-1","alg":"EdDSA","x":"{}"}}]}}"#,
        b64(key.public_key().as_ref())
    );
    std::fs::write(&jwks, jwk).unwrap();
    let yaml = format!(
        "listen: {{grpc: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}}\n\
         resources:\n  - id: files\n    uri: https://mcp.example.com/mcp\n    issuers:\n\
         \x20     - issuer: https://idp.fuzz.invalid\n        jwks_file: {}\n\
         \x20       algorithms: [EdDSA]\n",
        jwks.display()
    );
    let config = Config::from_yaml(&yaml).expect("config");
    let manager = JwksManager::new(&config, Metrics::new()).unwrap();
    for (issuer, loaded) in manager.refresh_all().await {
        assert!(matches!(loaded, Ok(1)), "{issuer}: {loaded:?}");
    }
    let mint = |claims: &[u8]| {
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"EdDSA","kid":"ed-1"}"#),
            b64(claims)
        );
        format!("{input}.{}", b64(key.sign(input.as_bytes()).as_ref()))
    };
    let claims = |filler: &[u8]| {
        let mut c = br#"{"iss":"https://idp.fuzz.invalid","sub":"user-1","aud":"https://mcp.example.com/mcp","exp":4102444800,"scope":"files:list","client=_id":"cl"#.to_vec();
        c.extend(filler);
        c.extend(br#"ent-1"}"#);
        c
    };
    let resource = &config.resources[0];
    let now = 1_800_000_000;
    let good = validate(&mint(&claims(b"")), resource, &manager, now, 8192).await;
    assert!(good.is_ok(), "{good:?}");
    let bad = validate(&mint(&claims(&[0xbd; 32])), resource, &manager, now, 8192).await;
    assert_eq!(bad.err(), Some(TokenError::Malformed));
    manager.shutdown();
    std::fs::remove_dir_all(&dir).unwrap();
}
