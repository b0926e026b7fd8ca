//! What a DPoP proof (RFC 9449) costs one Check, decided in process through
//! `Authorizer::decide` (no gRPC): a bound JWT from the verified-token cache with a fresh
//! ES256 or RS256 proof each Check (parse, key, signature, claims, binding, replay record),
//! the proof check alone (`dpop::proof::verify`), and for comparison the same token's path as
//! a plain bearer token. Proofs are signed before the clock starts.
//!
//! `cargo bench --bench dpop [-- --iterations N]`

mod common;

use std::hint::black_box;
use std::time::Instant;

use arc_swap::ArcSwap;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_authz::cache::TokenCache;
use mcp_authz::check::{Authorizer, CheckInput, Decision};
use mcp_authz::config::Config;
use mcp_authz::dpop::{Dpop, Expected, proof};
use mcp_authz::introspect::Introspector;
use mcp_authz::jwks::JwksManager;
use mcp_authz::metrics::Metrics;
use serde_json::{Value, json};

const URI: &str = "https://mcp.example.com/mcp";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sha(b: &[u8]) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref())
}

/// Signs a JWS signing input.
type Sign = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// A proof signer: its public JWK, its alg, and a signing function.
struct ProofKey {
    jwk: Value,
    alg: &'static str,
    sign: Sign,
}

impl ProofKey {
    fn es256() -> ProofKey {
        let k = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let p = k.public_key().as_ref().to_vec();
        ProofKey {
            jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])}),
            alg: "ES256",
            sign: Box::new(move |m| k.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()),
        }
    }

    fn rs256() -> ProofKey {
        let k = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let p = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
        ProofKey {
            jwk: json!({"kty": "RSA", "n": b64(&p.n), "e": b64(&p.e)}),
            alg: "RS256",
            sign: Box::new(move |m| {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    m,
                    &mut sig,
                )
                .unwrap();
                sig
            }),
        }
    }

    fn jkt(&self) -> String {
        let members: &[&str] = if self.alg == "ES256" {
            &["crv", "kty", "x", "y"]
        } else {
            &["e", "kty", "n"]
        };
        let m: serde_json::Map<String, Value> = members
            .iter()
            .map(|k| ((*k).to_owned(), self.jwk[*k].clone()))
            .collect();
        sha(Value::Object(m).to_string().as_bytes())
    }

    fn proof(&self, token: &str, i: usize, iat: u64) -> String {
        let h = b64(json!({"typ": "dpop+jwt", "alg": self.alg, "jwk": self.jwk})
            .to_string()
            .as_bytes());
        let c = b64(
            json!({"jti": format!("bench-{i}"), "htm": "POST", "htu": URI,
            "iat": iat, "ath": sha(token.as_bytes())})
            .to_string()
            .as_bytes(),
        );
        let input = format!("{h}.{c}");
        format!("{input}.{}", b64(&(self.sign)(input.as_bytes())))
    }
}

fn main() {
    if !common::started_by_cargo_bench("dpop") {
        return;
    }
    let iterations = common::count_arg("iterations", 5_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(iterations));
}

async fn run(iterations: usize) {
    let dir = std::env::temp_dir().join(format!("mcp-authz-bench-dpop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let issuer = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(issuer.public_key());
    let jwk = json!({"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
        "n": b64(&public.n), "e": b64(&public.e)});
    std::fs::write(dir.join("jwks.json"), json!({"keys": [jwk]}).to_string()).unwrap();
    let yaml = format!(
        r#"
resources:
  - id: files
    uri: {URI}
    issuers:
      - issuer: https://iam.example.com
        jwks_file: {jwks}
    routes: [{{path_prefix: /mcp, scopes: [files:list]}}]
    dpop: {{mode: allowed, replay_cache_entries: {entries}}}
"#,
        jwks = dir.join("jwks.json").display(),
        entries = iterations * 4 + 100,
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
        dpop: Dpop::new(metrics.clone()),
    };
    let t = now();
    let mint = |cnf: Option<String>| {
        let mut claims = json!({"iss": "https://iam.example.com", "sub": "u", "aud": URI,
            "exp": t + 3600, "iat": t, "scope": "files:list"});
        if let Some(j) = cnf {
            claims["cnf"] = json!({"jkt": j});
        }
        let h = b64(br#"{"alg":"RS256","kid":"k1","typ":"at+jwt"}"#);
        let input = format!("{h}.{}", b64(claims.to_string().as_bytes()));
        let mut sig = vec![0; issuer.public_modulus_len()];
        issuer
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{input}.{}", b64(&sig))
    };
    let input = |scheme: &str, token: &str, proof: Option<String>| {
        let mut headers = vec![("authorization".to_owned(), format!("{scheme} {token}"))];
        if let Some(p) = proof {
            headers.push(("dpop".to_owned(), p));
        }
        CheckInput {
            method: "POST".into(),
            host: "mcp.example.com".into(),
            path: "/mcp".into(),
            headers: headers.into_iter().collect(),
            ..CheckInput::default()
        }
    };
    let allow = |d: &Decision| assert!(matches!(d, Decision::Allow(_)), "{d:?}");

    // Bearer comparison: the verified-token cache hit.
    let bearer = input("Bearer", &mint(None), None);
    allow(&authorizer.decide(&bearer, t).await);
    let started = Instant::now();
    for _ in 0..iterations {
        black_box(authorizer.decide(&bearer, t).await);
    }
    let bearer_us = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;

    let mut rows = Vec::new();
    for (n, key) in [ProofKey::es256(), ProofKey::rs256()].iter().enumerate() {
        let token = mint(Some(key.jkt()));
        let inputs: Vec<CheckInput> = (0..=iterations)
            .map(|i| {
                input(
                    "DPoP",
                    &token,
                    Some(key.proof(&token, n * 1_000_000 + i, t)),
                )
            })
            .collect();
        allow(&authorizer.decide(&inputs[0], t).await);
        let started = Instant::now();
        for i in &inputs[1..] {
            black_box(authorizer.decide(i, t).await);
        }
        let check = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;
        // The proof check alone (no replay record).
        let resource = &config.resources[0];
        let one = key.proof(&token, 0, t);
        let expected = Expected {
            method: "POST",
            origin: "https://mcp.example.com",
            path: "/mcp",
            token: &token,
            now: t,
        };
        let started = Instant::now();
        for _ in 0..iterations {
            black_box(proof::verify(&one, &expected, &resource.dpop).unwrap());
        }
        let alone = started.elapsed().as_secs_f64() * 1e6 / iterations as f64;
        rows.push((key.alg, check, alone));
    }

    println!("| in-process decision (`Authorizer::decide`) | µs per Check |");
    println!("|---|---|");
    println!("| plain bearer JWT, verified-token cache hit (comparison) | {bearer_us:.2} |");
    for (alg, check, alone) in rows {
        println!(
            "| DPoP request, cached JWT + fresh {alg} proof (verify, bind, replay record) | {check:.2} |"
        );
        println!("| {alg} proof check alone (`dpop::proof::verify`) | {alone:.2} |");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
