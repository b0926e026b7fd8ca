//! What a first-seen RS256 token costs in process, without gRPC (issue 15): the signature
//! check alone (aws-lc-rs, key parsed once, signature already decoded), `token::validate`
//! (decode, parse, key lookup, signature, claims), and `Authorizer::decide` for a new token
//! each Check (validate + cache insert) and for one token from the verified-token cache.
//! Every row goes over the same distinct tokens, so first-seen minus cached is what a new
//! token adds to a Check, and validate minus the signature is the token code's own share.
//!
//! `cargo bench --bench firstseen [-- --tokens N]`

mod common;

use std::hint::black_box;
use std::time::Instant;

use arc_swap::ArcSwap;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_authz::cache::TokenCache;
use mcp_authz::check::{Authorizer, CheckInput, Decision};
use mcp_authz::config::Config;
use mcp_authz::introspect::Introspector;
use mcp_authz::jwks::JwksManager;
use mcp_authz::metrics::Metrics;
use mcp_authz::token;
use serde_json::json;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn main() {
    if !common::started_by_cargo_bench("firstseen") {
        return;
    }
    let tokens = common::count_arg("tokens", 10_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(tokens));
}

async fn run(n: usize) {
    let dir =
        std::env::temp_dir().join(format!("mcp-authz-bench-firstseen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rng = SystemRandom::new();
    let key = signature::RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
    let jwk = json!({"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
        "n": b64(&public.n), "e": b64(&public.e)});
    std::fs::write(dir.join("jwks.json"), json!({"keys": [jwk]}).to_string()).unwrap();
    let yaml = format!(
        r#"
resources:
  - id: files
    uri: https://mcp.example.com/mcp
    issuers:
      - issuer: https://iam.example.com
        jwks_file: {jwks}
    routes: [{{path_prefix: /mcp, scopes: [files:list]}}]
"#,
        jwks = dir.join("jwks.json").display(),
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let metrics = Metrics::new();
    let jwks = JwksManager::new(&config, metrics.clone()).unwrap();
    jwks.refresh_all().await;
    let authorizer = Authorizer {
        config: ArcSwap::from_pointee(config.clone()),
        jwks: jwks.clone(),
        cache: TokenCache::new(50_000, metrics.clone()),
        introspect: Introspector::new(metrics.clone()),
        dpop: mcp_authz::dpop::Dpop::new(metrics.clone()),
    };

    // RFC 9068-shaped tokens like the load bench's (distinct `jti` and `sub`).
    let t = now();
    let header = b64(br#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#);
    eprintln!("signing {n} tokens...");
    let minted: Vec<(String, String, Vec<u8>)> = (0..n)
        .map(|i| {
            let claims = json!({"iss": "https://iam.example.com",
                "sub": format!("user-{i:08}-2f4b-4a53-9c1e-5b7f0c7d9e21"),
                "aud": "https://mcp.example.com/mcp", "exp": t + 3600, "iat": t,
                "jti": format!("{i:016x}"), "scope": "files:list files:read",
                "client_id": "mcp-client-1"});
            let input = format!("{header}.{}", b64(claims.to_string().as_bytes()));
            let mut sig = vec![0; key.public_modulus_len()];
            key.sign(
                &signature::RSA_PKCS1_SHA256,
                &rng,
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
            let token = format!("{input}.{}", b64(&sig));
            (token, input, sig)
        })
        .collect();
    let resource = &config.resources[0];
    let input = |token: &str| CheckInput {
        method: "POST".into(),
        host: "mcp.example.com".into(),
        path: "/mcp".into(),
        headers: [("authorization".to_owned(), format!("Bearer {token}"))].into(),
        ..CheckInput::default()
    };
    let inputs: Vec<CheckInput> = minted.iter().map(|(tok, _, _)| input(tok)).collect();
    let allow = |d: &Decision| assert!(matches!(d, Decision::Allow(_)), "{d:?}");

    let parsed = ParsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        key.public_key().as_ref(),
    )
    .unwrap();
    let started = Instant::now();
    for (_, signing_input, sig) in &minted {
        parsed.verify_sig(signing_input.as_bytes(), sig).unwrap();
    }
    let verify = started.elapsed().as_secs_f64() * 1e6 / n as f64;

    let started = Instant::now();
    for (tok, _, _) in &minted {
        black_box(
            token::validate(tok, resource, &jwks, t, 8192)
                .await
                .unwrap(),
        );
    }
    let validate = started.elapsed().as_secs_f64() * 1e6 / n as f64;

    let started = Instant::now();
    for i in &inputs {
        allow(&authorizer.decide(i, t).await);
    }
    let first = started.elapsed().as_secs_f64() * 1e6 / n as f64;

    // The same tokens again: every one is now in the cache.
    let started = Instant::now();
    for i in &inputs {
        allow(&authorizer.decide(i, t).await);
    }
    let cached = started.elapsed().as_secs_f64() * 1e6 / n as f64;

    println!("| in process, {n} distinct RS256 tokens | µs per token |");
    println!("|---|---|");
    println!("| signature alone (aws-lc-rs, key parsed once) | {verify:.2} |");
    println!("| `token::validate` | {validate:.2} |");
    println!("| `Authorizer::decide`, first-seen token | {first:.2} |");
    println!("| `Authorizer::decide`, token from the cache | {cached:.2} |");
    println!(
        "| first-seen minus cached | {:.2} |\n| validate minus signature | {:.2} |",
        first - cached,
        validate - verify
    );
    let _ = std::fs::remove_dir_all(&dir);
}
