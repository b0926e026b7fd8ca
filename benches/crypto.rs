//! JWS signature verification cost, as `token.rs` pays it on a cache miss: RS256 (2048-bit),
//! ES256 and EdDSA through `jsonwebtoken::crypto::verify` with the crate's backend
//! (`aws_lc_rs`), next to aws-lc-rs verifying with a key parsed once (what a pre-parsed JWKS
//! key would cost), and ML-DSA-65 (FIPS 204; Hanzo IAM's `MLDSA65`), which jsonwebtoken does
//! not have, so only the parsed-once column. The `rust_crypto` figures in BENCHMARKS.md come from a throwaway crate that
//! runs this same loop against both jsonwebtoken backends in one process.
//!
//! `cargo bench --bench crypto [-- --seconds S]`

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, PqdsaKeyPair,
    PqdsaSigningAlgorithm, PqdsaVerificationAlgorithm,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// A realistic access token's signing input (RFC 9068 claims, ~300 bytes).
fn signing_input(alg: &str) -> String {
    let header = format!(r#"{{"alg":"{alg}","kid":"k1","typ":"at+jwt"}}"#);
    let claims = r#"{"iss":"https://iam.example.com","sub":"8d0b6a3e-2f4b-4a53-9c1e-5b7f0c7d9e21","aud":"https://mcp.example.com/mcp","exp":4102444800,"iat":1700000000,"jti":"0f6c1d7e9b2a4c3d","scope":"files:list files:read","client_id":"mcp-client-1"}"#;
    format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()))
}

struct Case {
    name: &'static str,
    message: String,
    signature_b64: String,
    /// What `jwks.rs` builds from the JWK for jsonwebtoken, when jsonwebtoken has the algorithm.
    jwt: Option<(Algorithm, DecodingKey)>,
    /// The same public key, parsed once by aws-lc-rs.
    parsed: ParsedPublicKey,
}

fn cases() -> Vec<Case> {
    let rng = SystemRandom::new();
    let mut out = Vec::new();

    let rsa = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
    let message = signing_input("RS256");
    let mut sig = vec![0u8; rsa.public_modulus_len()];
    rsa.sign(
        &signature::RSA_PKCS1_SHA256,
        &rng,
        message.as_bytes(),
        &mut sig,
    )
    .expect("RSA sign");
    let public = rsa.public_key();
    out.push(Case {
        name: "RS256 (RSA-2048)",
        signature_b64: b64(&sig),
        jwt: Some((
            Algorithm::RS256,
            DecodingKey::from_rsa_raw_components(
                public.modulus().big_endian_without_leading_zero(),
                public.exponent().big_endian_without_leading_zero(),
            ),
        )),
        parsed: ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public.as_ref())
            .expect("parse RSA public key"),
        message,
    });

    let ec = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key");
    let message = signing_input("ES256");
    let sig = ec.sign(&rng, message.as_bytes()).expect("EC sign");
    let point = ec.public_key().as_ref().to_vec();
    out.push(Case {
        name: "ES256 (P-256)",
        signature_b64: b64(sig.as_ref()),
        jwt: Some((
            Algorithm::ES256,
            DecodingKey::from_ec_components(&b64(&point[1..33]), &b64(&point[33..65]))
                .expect("EC JWK"),
        )),
        parsed: ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
            .expect("parse EC public key"),
        message,
    });

    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key");
    let ed = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key");
    let message = signing_input("EdDSA");
    let sig = ed.sign(message.as_bytes());
    let x = ed.public_key().as_ref().to_vec();
    out.push(Case {
        name: "EdDSA (Ed25519)",
        signature_b64: b64(sig.as_ref()),
        jwt: Some((
            Algorithm::EdDSA,
            DecodingKey::from_ed_components(&b64(&x)).expect("Ed25519 JWK"),
        )),
        parsed: ParsedPublicKey::new(&signature::ED25519, &x).expect("parse Ed25519 key"),
        message,
    });

    // ML-DSA-65, pure, empty context (FIPS 204 §5.2/§5.3): the raw 1,952-byte public key, as
    // Hanzo IAM publishes it in `x`, parsed the way `jwks/keys.rs` parses it.
    let pq = PqdsaKeyPair::generate(&signature::ML_DSA_65_SIGNING).expect("ML-DSA-65 key");
    let message = signing_input("MLDSA65");
    let mut sig = vec![0u8; signature::ML_DSA_65_SIGNING.signature_len()];
    pq.sign(message.as_bytes(), &mut sig)
        .expect("ML-DSA-65 sign");
    out.push(Case {
        name: "MLDSA65 (ML-DSA-65)",
        signature_b64: b64(&sig),
        jwt: None,
        parsed: ParsedPublicKey::new(&signature::ML_DSA_65, pq.public_key().as_ref())
            .expect("parse ML-DSA-65 key"),
        message,
    });

    // ML-DSA-44 and ML-DSA-87, the JOSE draft's other parameter sets (`alg: "ML-DSA-44"`,
    // `"ML-DSA-87"`): raw 1,312- and 2,592-byte keys, 2,420- and 4,627-byte signatures.
    let sets: [(
        &str,
        &str,
        &'static PqdsaSigningAlgorithm,
        &'static PqdsaVerificationAlgorithm,
    ); 2] = [
        (
            "ML-DSA-44",
            "ML-DSA-44",
            &signature::ML_DSA_44_SIGNING,
            &signature::ML_DSA_44,
        ),
        (
            "ML-DSA-87",
            "ML-DSA-87",
            &signature::ML_DSA_87_SIGNING,
            &signature::ML_DSA_87,
        ),
    ];
    for (name, alg, signing, verifying) in sets {
        let pair = PqdsaKeyPair::generate(signing).expect("ML-DSA key");
        let message = signing_input(alg);
        let mut sig = vec![0u8; signing.signature_len()];
        pair.sign(message.as_bytes(), &mut sig)
            .expect("ML-DSA sign");
        out.push(Case {
            name,
            signature_b64: b64(&sig),
            jwt: None,
            parsed: ParsedPublicKey::new(verifying, pair.public_key().as_ref())
                .expect("parse ML-DSA key"),
            message,
        });
    }
    out
}

/// Nanoseconds per call: the best of three runs of `seconds / 3` each (robust to a noisy
/// neighbour; verification has no warm-up state to speak of).
fn time(seconds: f64, mut f: impl FnMut() -> bool) -> f64 {
    assert!(f(), "signature must verify");
    let run = Duration::from_secs_f64(seconds / 3.0);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < run {
            for _ in 0..16 {
                black_box(f());
            }
            n += 16;
        }
        best = best.min(started.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn main() {
    if !common::started_by_cargo_bench("crypto") {
        return;
    }
    let mut seconds = 3.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        // `cargo bench` adds `--bench`; anything but `--seconds` is ignored.
        if a == "--seconds" {
            seconds = args
                .next()
                .and_then(|s| s.parse().ok())
                .expect("--seconds N");
        }
    }
    println!(
        "| algorithm | jsonwebtoken::crypto::verify (aws_lc_rs) | aws-lc-rs, key parsed once |"
    );
    println!("|---|---|---|");
    for c in cases() {
        let jwt = c.jwt.as_ref().map(|(alg, decoding)| {
            time(seconds, || {
                jsonwebtoken::crypto::verify(
                    black_box(&c.signature_b64),
                    black_box(c.message.as_bytes()),
                    decoding,
                    *alg,
                )
                .unwrap_or(false)
            })
        });
        let raw = URL_SAFE_NO_PAD
            .decode(&c.signature_b64)
            .expect("signature b64");
        let parsed = time(seconds, || {
            c.parsed
                .verify_sig(black_box(c.message.as_bytes()), black_box(&raw))
                .is_ok()
        });
        let jwt = jwt.map_or("— (no ML-DSA)".to_owned(), |ns| {
            format!("{:.1} µs", ns / 1000.0)
        });
        println!("| {} | {jwt} | {:.1} µs |", c.name, parsed / 1000.0);
    }
}
