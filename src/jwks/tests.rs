//! Tests of key parsing, key sets, Cache-Control and discovery.

use super::keys::{parse_jwk, rsa_bits};
use super::*;
use crate::config::Alg;
use aws_lc_rs::signature;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn rsa_jwk(bits: usize, extra: &str) -> String {
    let mut n = vec![0u8; bits / 8];
    n[0] = 0x80;
    n[bits / 8 - 1] = 1;
    format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB"{extra}}}"#, b64(&n))
}

#[test]
fn rsa_keys_verify_each_algorithm_they_accept_and_no_other() {
    use aws_lc_rs::signature::KeyPair;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let public = pair.public_key();
    let jwk = |extra: &str| {
        let v: Value = serde_json::from_str(&format!(
            r#"{{"kty":"RSA","n":"{}","e":"{}"{extra}}}"#,
            b64(public.modulus().big_endian_without_leading_zero()),
            b64(public.exponent().big_endian_without_leading_zero()),
        ))
        .unwrap();
        parse_jwk(&v).unwrap()
    };
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let message = b"header.payload";
    let sign = |params: &'static dyn signature::RsaEncoding| {
        let mut sig = vec![0u8; pair.public_modulus_len()];
        pair.sign(params, &rng, message, &mut sig).unwrap();
        sig
    };
    let signed = [
        (Alg::RS256, sign(&signature::RSA_PKCS1_SHA256)),
        (Alg::RS512, sign(&signature::RSA_PKCS1_SHA512)),
        (Alg::PS256, sign(&signature::RSA_PSS_SHA256)),
        (Alg::PS384, sign(&signature::RSA_PSS_SHA384)),
    ];
    let any = jwk("");
    for (alg, sig) in &signed {
        assert!(any.verify(*alg, message, sig), "{alg:?}");
        assert!(
            !any.verify(*alg, b"header.payloaD", sig),
            "{alg:?} tampered"
        );
        for (other, _) in signed.iter().filter(|(a, _)| a != alg) {
            assert!(!any.verify(*other, message, sig), "{alg:?} as {other:?}");
        }
        assert!(!any.verify(Alg::ES256, message, sig));
    }
    // A JWK naming its algorithm verifies with that one only.
    let only = jwk(r#","alg":"PS256""#);
    assert!(only.verify(Alg::PS256, message, &signed[2].1));
    assert!(!only.verify(Alg::RS256, message, &signed[0].1));
}

#[test]
fn parse_skips_bad_keys_and_keeps_good_ones() {
    let doc = format!(
        r#"{{"keys":[
                {},
                {{"kty":"MLDSA","kid":"pq","pub":"xyz","alg":"ML-DSA-65"}},
                {{"kty":"oct","kid":"sym","k":"c2VjcmV0"}},
                {},
                {},
                {{"kty":"EC","kid":"p521","crv":"P-521","x":"AA","y":"AA"}},
                {{"kty":"EC","kid":"p256bad","crv":"P-256","x":"AA","y":"AA"}},
                {},
                "not an object",
                {{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"{}"}}
            ]}}"#,
        rsa_jwk(2048, r#","kid":"good","alg":"RS256","use":"sig""#),
        rsa_jwk(2048, r#","kid":"enc","use":"enc""#),
        rsa_jwk(1024, r#","kid":"weak""#),
        rsa_jwk(2048, r#","kid":"rsa-es","alg":"ES256""#),
        b64(&[7u8; 32]),
    );
    let (keys, skipped) = parse_jwks(doc.as_bytes()).unwrap();
    let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
    assert_eq!(kids, vec!["good", "ed"]);
    let reasons: Vec<_> = skipped
        .iter()
        .map(|(k, r)| (k.clone().unwrap_or_default(), *r))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("pq".into(), SkipReason::UnsupportedAlg),
            ("sym".into(), SkipReason::Symmetric),
            ("enc".into(), SkipReason::EncryptionKey),
            ("weak".into(), SkipReason::WeakRsa),
            ("p521".into(), SkipReason::UnsupportedCurve),
            ("p256bad".into(), SkipReason::Malformed),
            ("rsa-es".into(), SkipReason::UnsupportedAlg),
            ("".into(), SkipReason::Malformed),
        ]
    );
    assert!(keys[0].accepts(Alg::RS256));
    assert!(!keys[0].accepts(Alg::PS256), "JWK alg pins the algorithm");
    assert!(!keys[0].accepts(Alg::ES256));
    assert!(keys[1].accepts(Alg::EdDSA));
}

#[test]
fn unknown_kty_without_alg_is_skipped() {
    let (keys, skipped) = parse_jwks(br#"{"keys":[{"kty":"MLDSA","kid":"pq"}]}"#).unwrap();
    assert!(keys.is_empty());
    assert_eq!(skipped[0].1, SkipReason::UnsupportedKty);
}

#[test]
fn not_a_key_set() {
    assert!(parse_jwks(b"<html>").is_err());
    assert!(parse_jwks(br#"{"keys":"x"}"#).is_err());
    assert!(parse_jwks(br#"{"keys":[{"kty":"RSA"}]"#).is_err());
}

#[test]
fn rsa_bit_length() {
    assert_eq!(rsa_bits(&[0, 0, 0x80, 0]), 16);
    assert_eq!(rsa_bits(&[0x01, 0]), 9);
    assert_eq!(rsa_bits(&[]), 0);
}

#[test]
fn cache_control_parsing() {
    assert_eq!(
        cache_max_age("public, max-age=600"),
        Some(Duration::from_secs(600))
    );
    assert_eq!(cache_max_age("no-store"), Some(Duration::ZERO));
    assert_eq!(cache_max_age("max-age=abc"), None);
    assert_eq!(cache_max_age("private"), None);
}

#[test]
fn discovery_url_forms() {
    let u = discovery_urls("https://iam.example.com").unwrap();
    assert_eq!(
        u[0].as_str(),
        "https://iam.example.com/.well-known/oauth-authorization-server"
    );
    assert_eq!(
        u[1].as_str(),
        "https://iam.example.com/.well-known/openid-configuration"
    );
    let u = discovery_urls("https://iam.example.com/tenant/1").unwrap();
    assert_eq!(
        u[0].as_str(),
        "https://iam.example.com/.well-known/oauth-authorization-server/tenant/1"
    );
    assert_eq!(
        u[1].as_str(),
        "https://iam.example.com/tenant/1/.well-known/openid-configuration"
    );
}
