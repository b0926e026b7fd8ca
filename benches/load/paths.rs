//! The token paths beyond a bearer RS256 JWT (issue 15), as direct rows: ML-DSA-65 tokens
//! (Hanzo IAM's `alg: "MLDSA65"`, `kty: "MLDSA"`), opaque tokens introspected at an RFC 7662
//! endpoint this process serves on loopback, and DPoP-bound tokens with a fresh ES256 proof
//! per Check (RFC 9449); and the in-process measurements their ceilings are made of: one
//! signature verification alone, through the product's own `jwks::Key::verify` (aws-lc-rs, key
//! parsed once), and one introspection round trip by a bare reqwest client.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, PqdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use mcp_authz::config::Alg;
use mcp_authz::jwks::{Key, parse_public_jwk};
use serde_json::{Value, json};

use crate::envoy;
use crate::fixture::{self, ISSUER, b64, claims_for, signing_input};

/// The ML-DSA-65 issuer (its own JWKS file: Envoy's jwt_authn never sees the key).
pub const PQ_ISSUER: &str = "https://pq.bench.example";
pub const PQ_URI: &str = "https://pq.example.com/mcp";
pub const PQ_HOST: &str = "pq.example.com";
/// The issuer whose opaque tokens are introspected.
pub const OPAQUE_ISSUER: &str = "https://opaque.bench.example";
pub const OPAQUE_URI: &str = "https://opaque.example.com/mcp";
pub const OPAQUE_HOST: &str = "opaque.example.com";
/// The resource with `dpop.mode: required` (tokens from the RS256 issuer).
pub const DPOP_URI: &str = "https://dpop.example.com/mcp";
pub const DPOP_HOST: &str = "dpop.example.com";

const CLIENT_ID: &str = "mcp-authz-bench";
const CLIENT_SECRET: &str = "bench-secret";
const SCOPE: &str = "files:list files:read";

/// Keys, the introspection endpoint and the configuration of the new rows' resources.
pub struct Paths {
    pq: PqdsaKeyPair,
    proof: EcdsaKeyPair,
    proof_jwk: Value,
    pub endpoint: Endpoint,
    /// The three resources, appended to the bench configuration for the new rows only (so
    /// the existing rows and the rendered Envoy config stay as they were).
    pub resources: String,
}

impl Paths {
    pub fn new(dir: &Path, jwks_file: &Path) -> Paths {
        let pq = PqdsaKeyPair::generate(&signature::ML_DSA_65_SIGNING).expect("ML-DSA-65 key");
        let pq_jwks = dir.join("pq-jwks.json");
        let jwk = json!({"kty": "MLDSA", "alg": "MLDSA65", "use": "sig", "kid": "pq-1",
            "x": b64(pq.public_key().as_ref())});
        std::fs::write(&pq_jwks, json!({"keys": [jwk]}).to_string()).expect("write pq jwks");
        let secret = dir.join("introspection-secret");
        std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).expect("write secret");
        let proof =
            EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key");
        let p = proof.public_key().as_ref();
        let proof_jwk =
            json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])});
        let endpoint = Endpoint::start();
        let upstream = fixture::free_port();
        let routes = "    routes:\n      - {name: mcp, path: /mcp, methods: [GET, POST, DELETE], scopes: [files:list]}\n";
        let resources = format!(
            r#"  - id: pq
    uri: {PQ_URI}
    upstream: 127.0.0.1:{upstream}
    issuers:
      - issuer: {PQ_ISSUER}
        jwks_file: {pq_jwks}
        algorithms: [MLDSA65]
{routes}  - id: opaque
    uri: {OPAQUE_URI}
    upstream: 127.0.0.1:{upstream}
    issuers:
      - issuer: {OPAQUE_ISSUER}
        jwks_file: {jwks}
        algorithms: [RS256, EdDSA]
        introspection: {{endpoint: "{url}", client_id: {CLIENT_ID}, client_secret_file: {secret}}}
{routes}  - id: dpop
    uri: {DPOP_URI}
    upstream: 127.0.0.1:{upstream}
    issuers:
      - issuer: {ISSUER}
        jwks_file: {jwks}
        algorithms: [RS256, EdDSA]
    dpop: {{mode: required}}
{routes}"#,
            pq_jwks = pq_jwks.display(),
            jwks = jwks_file.display(),
            url = endpoint.url,
            secret = secret.display(),
        );
        Paths {
            pq,
            proof,
            proof_jwk,
            endpoint,
            resources,
        }
    }

    /// An ML-DSA-65 access token (3,309-byte signature) for the `pq` resource.
    pub fn mldsa(&self, n: u64) -> String {
        let claims = claims_for(n, SCOPE, PQ_ISSUER, &[PQ_URI]);
        let input = signing_input("MLDSA65", "pq-1", &claims);
        let mut sig = vec![0u8; signature::ML_DSA_65_SIGNING.signature_len()];
        self.pq
            .sign(input.as_bytes(), &mut sig)
            .expect("ML-DSA-65 sign");
        format!("{input}.{}", b64(&sig))
    }

    /// An opaque access token (what ZITADEL or Keycloak hand out: no dots, ~50 characters).
    pub fn opaque(n: u64) -> String {
        format!("opaque-{n:016x}-2f4b4a539c1e5b7f0c7d9e21")
    }

    /// The RS256 claims of a token bound to the proof key (`cnf.jkt`, RFC 9449 §6.1).
    pub fn dpop_claims(&self) -> Value {
        let mut claims = claims_for(0, SCOPE, ISSUER, &[DPOP_URI]);
        claims["cnf"] = json!({"jkt": self.jkt()});
        claims
    }

    /// RFC 7638 thumbprint of the proof key: SHA-256 of its required members, sorted.
    fn jkt(&self) -> String {
        let j = &self.proof_jwk;
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            j["x"].as_str().expect("x"),
            j["y"].as_str().expect("y")
        );
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// A fresh ES256 proof for `POST DPOP_URI` with `token` (RFC 9449 §4.2), `jti` unique by `n`.
    pub fn proof(&self, token: &str, n: usize, iat: u64) -> String {
        let ath =
            b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref());
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.proof_jwk});
        let claims = json!({"jti": format!("bench-proof-{n:012}"), "htm": "POST",
            "htu": DPOP_URI, "iat": iat, "ath": ath});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .proof
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("ES256 sign");
        format!("{input}.{}", b64(sig.as_ref()))
    }

    /// CPU µs of one ML-DSA-65 token verification alone.
    pub fn mldsa_alone(&self, seconds: f64) -> f64 {
        let jwk = json!({"kty": "MLDSA", "alg": "MLDSA65", "kid": "pq-1",
            "x": b64(self.pq.public_key().as_ref())});
        verify_alone(&jwk, Alg::MLDSA65, &self.mldsa(0), seconds)
    }

    /// CPU µs of one ES256 proof signature verification alone.
    pub fn es256_alone(&self, seconds: f64) -> f64 {
        let mut jwk = self.proof_jwk.clone();
        jwk["alg"] = "ES256".into();
        let proof = self.proof("token", 0, fixture::unix_now());
        verify_alone(&jwk, Alg::ES256, &proof, seconds)
    }
}

/// CPU time per `Key::verify` (what `token.rs` and `dpop::proof` call once the JWS is split
/// and its signature decoded), on this thread for `seconds`.
pub fn verify_alone(jwk: &Value, alg: Alg, jws: &str, seconds: f64) -> f64 {
    let key: Key = parse_public_jwk(jwk).expect("bench JWK parses");
    let (input, sig) = jws.rsplit_once('.').expect("a JWS");
    let sig = URL_SAFE_NO_PAD.decode(sig).expect("signature b64");
    assert!(key.verify(alg, input.as_bytes(), &sig), "{alg:?} verifies");
    let stat = fixture::thread_stat_path();
    let cpu0 = fixture::stat_cpu_us(&stat);
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        for _ in 0..16 {
            std::hint::black_box(key.verify(
                alg,
                std::hint::black_box(input.as_bytes()),
                std::hint::black_box(&sig),
            ));
        }
        n += 16;
    }
    (fixture::stat_cpu_us(&stat) - cpu0) as f64 / n as f64
}

/// An RFC 7662 endpoint on its own thread and runtime (so its CPU time is its own): every token
/// is active for the `opaque` resource, answered at once.
pub struct Endpoint {
    pub url: String,
    stat: String,
    calls: Arc<AtomicU64>,
}

/// The endpoint's CPU time and calls so far.
#[derive(Clone, Copy)]
pub struct Usage {
    cpu_us: u64,
    calls: u64,
}

impl Usage {
    /// CPU µs per call since `before`.
    pub fn per_call_since(self, before: Usage) -> f64 {
        (self.cpu_us - before.cpu_us) as f64 / (self.calls - before.calls).max(1) as f64
    }

    pub fn calls_since(self, before: Usage) -> u64 {
        self.calls - before.calls
    }
}

impl Endpoint {
    fn start() -> Endpoint {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind introspection");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let answer = json!({"active": true, "iss": OPAQUE_ISSUER, "aud": OPAQUE_URI,
            "exp": fixture::unix_now() + 24 * 3600, "scope": SCOPE, "token_type": "Bearer",
            "sub": "user-00000000-2f4b-4a53-9c1e-5b7f0c7d9e21", "client_id": "mcp-bench-client"})
        .to_string();
        let stat = envoy::spawn_thread("introspection", move || async move {
            let app = axum::Router::new().route(
                "/introspect",
                axum::routing::post(move || {
                    counted.fetch_add(1, Ordering::Relaxed);
                    let answer = answer.clone();
                    async move { ([("content-type", "application/json")], answer) }
                }),
            );
            let l = tokio::net::TcpListener::from_std(l).expect("listener");
            axum::serve(l, app).await.expect("introspection endpoint");
        });
        Endpoint {
            url: format!("http://{addr}/introspect"),
            stat,
            calls,
        }
    }

    pub fn usage(&self) -> Usage {
        Usage {
            cpu_us: fixture::stat_cpu_us(&self.stat),
            calls: self.calls.load(Ordering::Relaxed),
        }
    }

    /// A bare client's introspection round trip to this endpoint, on its own thread and
    /// runtime: the same request mcp-authz sends (form POST, HTTP Basic, reqwest built the same
    /// way), `in_flight` calls at once (the default `max_concurrent`) for `seconds`.
    pub fn bare_client(&self, in_flight: usize, seconds: f64) -> BareClient {
        let url = self.url.clone();
        let before = self.usage();
        let (cpu_us, calls, wall) = std::thread::spawn(move || {
            let stat = fixture::thread_stat_path();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async move {
                    let http = reqwest::Client::builder()
                        .redirect(reqwest::redirect::Policy::none())
                        .user_agent("mcp-authz/0.1.0")
                        .build()
                        .expect("reqwest client");
                    let basic = format!(
                        "Basic {}",
                        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
                    );
                    let call = |n: u64| {
                        http.post(&url)
                            .header("content-type", "application/x-www-form-urlencoded")
                            .header("accept", "application/json")
                            .header("authorization", &basic)
                            .body(format!(
                                "token={}&token_type_hint=access_token",
                                Paths::opaque(n)
                            ))
                            .send()
                    };
                    // Warm the connections up before the clock starts.
                    for n in 0..in_flight as u64 {
                        let r = call(n).await.expect("introspection answers");
                        assert_eq!(r.status(), 200);
                        r.bytes().await.expect("body");
                    }
                    let cpu0 = fixture::stat_cpu_us(&stat);
                    let started = Instant::now();
                    let end = started + Duration::from_secs_f64(seconds);
                    let next = AtomicU64::new(1_000_000);
                    let (call, next) = (&call, &next);
                    let one = |_| async move {
                        let mut n = 0u64;
                        while Instant::now() < end {
                            let r = call(next.fetch_add(1, Ordering::Relaxed))
                                .await
                                .expect("introspection answers");
                            std::hint::black_box(r.bytes().await.expect("body"));
                            n += 1;
                        }
                        n
                    };
                    let counts = futures_util::future::join_all((0..in_flight).map(one)).await;
                    let calls: u64 = counts.iter().sum();
                    let wall = started.elapsed();
                    (fixture::stat_cpu_us(&stat) - cpu0, calls, wall)
                })
        })
        .join()
        .expect("bare client thread");
        BareClient {
            client_cpu_us: cpu_us as f64 / calls.max(1) as f64,
            wall_us: wall.as_secs_f64() * 1e6 * in_flight as f64 / calls.max(1) as f64,
            endpoint_cpu_us: self.usage().per_call_since(before),
            in_flight,
        }
    }
}

/// What one introspection round trip costs a bare client.
pub struct BareClient {
    /// The client's CPU µs per call.
    pub client_cpu_us: f64,
    /// Wall µs per call (one call's latency, averaged).
    pub wall_us: f64,
    /// The endpoint's CPU µs per call meanwhile.
    pub endpoint_cpu_us: f64,
    pub in_flight: usize,
}
