//! What RFC 7662 introspection costs one Check, decided in process through
//! `Authorizer::decide` (no gRPC): an opaque token whose answer is cached (hit), one whose
//! answer is not (miss: one form POST to an introspection endpoint on loopback, one call at a
//! time, so the row is the call's latency plus mcp-authz's own work), the judging of an
//! answer alone, and for comparison a JWT from the verified-token cache.
//!
//! `cargo bench --bench introspect [-- --iterations N]`

mod common;

use std::hint::black_box;
use std::time::Instant;

use arc_swap::ArcSwap;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_authz::cache::TokenCache;
use mcp_authz::check::{Authorizer, CheckInput, Decision};
use mcp_authz::config::Config;
use mcp_authz::introspect::{Introspector, judge};
use mcp_authz::jwks::JwksManager;
use mcp_authz::metrics::Metrics;
use mcp_authz::trace::Trace;
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

/// An introspection endpoint that says every token is active for the bench resource.
async fn endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = json!({"active": true, "aud": "https://mcp.example.com/mcp",
        "exp": now() + 3600, "scope": "files:list files:read", "token_type": "Bearer",
        "sub": "8d0b6a3e-2f4b-4a53-9c1e-5b7f0c7d9e21", "client_id": "mcp-client-1"})
    .to_string();
    let app = axum::Router::new().route(
        "/introspect",
        axum::routing::post(move || {
            let answer = answer.clone();
            async move { ([("content-type", "application/json")], answer) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/introspect")
}

fn main() {
    if !common::started_by_cargo_bench("introspect") {
        return;
    }
    let iterations = common::count_arg("iterations", 20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(iterations));
}

async fn run(iterations: usize) {
    let dir =
        std::env::temp_dir().join(format!("mcp-authz-bench-introspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rng = SystemRandom::new();
    let key = signature::RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.public_key());
    let jwk = json!({"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
        "n": b64(&public.n), "e": b64(&public.e)});
    std::fs::write(dir.join("jwks.json"), json!({"keys": [jwk]}).to_string()).unwrap();
    std::fs::write(dir.join("secret"), "bench-secret\n").unwrap();
    let endpoint = endpoint().await;
    let yaml = format!(
        r#"
envoy: {{check_timeout_ms: 2000}}
resources:
  - id: files
    uri: https://mcp.example.com/mcp
    issuers:
      - issuer: https://iam.example.com
        jwks_file: {jwks}
        introspection: {{endpoint: "{endpoint}", client_id: rs, client_secret_file: {secret}, cache_entries: {entries}}}
    routes: [{{path_prefix: /mcp, scopes: [files:list]}}]
"#,
        jwks = dir.join("jwks.json").display(),
        secret = dir.join("secret").display(),
        entries = iterations * 2,
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let metrics = Metrics::new();
    let jwks = JwksManager::new(&config, metrics.clone()).unwrap();
    jwks.refresh_all().await;
    let authorizer = Authorizer {
        config: ArcSwap::from_pointee(config.clone()),
        jwks: jwks.clone(),
        cache: TokenCache::new(10_000, metrics.clone()),
        introspect: Introspector::new(metrics.clone()),
        dpop: mcp_authz::dpop::Dpop::new(metrics.clone()),
    };
    let input = |token: &str| CheckInput {
        method: "POST".into(),
        host: "mcp.example.com".into(),
        path: "/mcp".into(),
        headers: [("authorization".to_owned(), format!("Bearer {token}"))].into(),
        ..CheckInput::default()
    };
    let allow = |d: &Decision| assert!(matches!(d, Decision::Allow(_)), "{d:?}");

    // Miss: every Check a new token, so every Check waits for one call.
    let misses = (iterations / 10).max(100);
    let inputs: Vec<CheckInput> = (0..misses)
        .map(|i| input(&format!("opaque-miss-{i:08}-2f4b4a539c1e5b7f0c7d9e21")))
        .collect();
    let started = Instant::now();
    for i in &inputs {
        allow(&authorizer.decide(i, now()).await);
    }
    let miss = started.elapsed().as_secs_f64() * 1e6 / misses as f64;

    // Hit: one token, answered once.
    let hit_input = input("opaque-hit-2f4b4a539c1e5b7f0c7d9e21");
    allow(&authorizer.decide(&hit_input, now()).await);
    let t = now();
    let started = Instant::now();
    for _ in 0..iterations {
        black_box(authorizer.decide(&hit_input, t).await);
    }
    let hit = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;

    // Judging an answer alone (what a hit adds to a cached JWT's path).
    let resource = &config.resources[0];
    let answer = json!({"active": true, "aud": "https://mcp.example.com/mcp", "exp": t + 3600,
        "scope": "files:list files:read", "token_type": "Bearer", "sub": "u", "client_id": "c"});
    let answer = answer.as_object().unwrap().clone();
    let started = Instant::now();
    for _ in 0..iterations {
        black_box(
            judge(
                &answer,
                &resource.issuers[0],
                resource,
                t,
                &mut Trace::off(),
            )
            .unwrap(),
        );
    }
    let judged = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;

    // For comparison: a JWT from the verified-token cache.
    let header = b64(br#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#);
    let claims = b64(
        json!({"iss": "https://iam.example.com", "sub": "u", "aud": "https://mcp.example.com/mcp",
        "exp": t + 3600, "iat": t, "scope": "files:list"})
        .to_string()
        .as_bytes(),
    );
    let signing_input = format!("{header}.{claims}");
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &rng,
        signing_input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let jwt_input = input(&format!("{signing_input}.{}", b64(&sig)));
    allow(&authorizer.decide(&jwt_input, t).await);
    let started = Instant::now();
    for _ in 0..iterations {
        black_box(authorizer.decide(&jwt_input, t).await);
    }
    let jwt = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;

    println!("| in-process decision (`Authorizer::decide`) | µs per Check |");
    println!("|---|---|");
    println!("| JWT, verified-token cache hit (comparison) | {jwt:.2} |");
    println!("| opaque token, introspection cache hit | {hit:.2} |");
    println!("| judging one introspection answer alone | {judged:.2} |");
    println!(
        "| opaque token, introspection miss (one loopback call each, {misses} tokens) | {miss:.1} |"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
