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
    // SLH-DSA (FIPS 205): post-quantum too, but not a key type mcp-authz reads.
    let (keys, skipped) = parse_jwks(br#"{"keys":[{"kty":"SLHDSA","kid":"pq"}]}"#).unwrap();
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

/// An ML-DSA-65 key pair (aws-lc-rs) for the parsing tests; tokens signed by an independent
/// implementation are in tests/check.rs.
fn ml_dsa_key() -> signature::PqdsaKeyPair {
    signature::PqdsaKeyPair::generate(&signature::ML_DSA_65_SIGNING).unwrap()
}

fn ml_dsa_sign(k: &signature::PqdsaKeyPair, msg: &[u8]) -> Vec<u8> {
    let mut sig = vec![0; signature::ML_DSA_65_SIGNING.signature_len()];
    assert_eq!(k.sign(msg, &mut sig).unwrap(), 3309, "FIPS 204 Table 2");
    sig
}

fn jwk(v: Value) -> Result<Key, SkipReason> {
    parse_jwk(&v)
}

#[test]
fn ml_dsa_65_keys_in_both_spellings_verify_only_their_own_alg() {
    use signature::KeyPair;
    let pair = ml_dsa_key();
    let x = b64(pair.public_key().as_ref());
    let message = b"header.payload";
    let sig = ml_dsa_sign(&pair, message);
    let hanzo =
        jwk(serde_json::json!({"kty":"MLDSA","alg":"MLDSA65","use":"sig","kid":"pq","x":x}))
            .unwrap();
    let akp = jwk(serde_json::json!({"kty":"AKP","alg":"ML-DSA-65","kid":"pq","pub":x})).unwrap();
    assert_eq!(hanzo.kind, KeyKind::MlDsa65Hanzo);
    assert_eq!(akp.kind, KeyKind::MlDsa65Akp);
    assert!(hanzo.verify(Alg::MLDSA65, message, &sig));
    assert!(akp.verify(Alg::ML_DSA_65, message, &sig));
    // Each spelling only with its own alg; never a classical one.
    for a in Alg::ALL {
        assert_eq!(hanzo.accepts(a), a == Alg::MLDSA65, "{a:?}");
        assert_eq!(akp.accepts(a), a == Alg::ML_DSA_65, "{a:?}");
    }
    assert!(!hanzo.verify(Alg::ML_DSA_65, message, &sig));
    assert!(!akp.verify(Alg::MLDSA65, message, &sig));
    // Another message, a flipped bit, a truncated or empty signature, another key: refused.
    assert!(!hanzo.verify(Alg::MLDSA65, b"header.payloaD", &sig));
    let mut flipped = sig.clone();
    flipped[100] ^= 1;
    assert!(!hanzo.verify(Alg::MLDSA65, message, &flipped));
    assert!(!hanzo.verify(Alg::MLDSA65, message, &sig[..3308]));
    assert!(!hanzo.verify(Alg::MLDSA65, message, &[]));
    let other = ml_dsa_sign(&ml_dsa_key(), message);
    assert!(!hanzo.verify(Alg::MLDSA65, message, &other));
}

/// ML-DSA-44 and ML-DSA-87 (JOSE spelling only): each key verifies its own parameter set's
/// signatures and nothing else; the raw key size is the set's (FIPS 204 Table 2).
#[test]
fn ml_dsa_44_and_87_keys_verify_only_their_own_parameter_set() {
    use signature::KeyPair;
    let message = b"header.payload";
    let sets = [
        (
            Alg::ML_DSA_44,
            &signature::ML_DSA_44_SIGNING,
            KeyKind::MlDsa44Akp,
            1312,
            2420,
        ),
        (
            Alg::ML_DSA_87,
            &signature::ML_DSA_87_SIGNING,
            KeyKind::MlDsa87Akp,
            2592,
            4627,
        ),
    ];
    for (alg, signing, kind, pk_len, sig_len) in sets {
        let pair = signature::PqdsaKeyPair::generate(signing).unwrap();
        assert_eq!(pair.public_key().as_ref().len(), pk_len, "{alg:?}");
        let mut sig = vec![0; signing.signature_len()];
        assert_eq!(pair.sign(message, &mut sig).unwrap(), sig_len, "{alg:?}");
        let x = b64(pair.public_key().as_ref());
        let key = jwk(serde_json::json!({"kty":"AKP","alg":alg.as_str(),"pub":x})).unwrap();
        assert_eq!(key.kind, kind);
        assert!(key.verify(alg, message, &sig), "{alg:?}");
        for a in Alg::ALL {
            assert_eq!(key.accepts(a), a == alg, "{alg:?} accepts {a:?}");
            if a != alg {
                assert!(!key.verify(a, message, &sig), "{alg:?} verifies as {a:?}");
            }
        }
        assert!(!key.verify(alg, b"header.payloaD", &sig));
        assert!(!key.verify(alg, message, &sig[..sig_len - 1]));
        // The same key under another set's name, or Hanzo's spelling: never loaded.
        for other in ["ML-DSA-65", "ML-DSA-44", "ML-DSA-87"] {
            if other != alg.as_str() {
                let skipped = jwk(serde_json::json!({"kty":"AKP","alg":other,"pub":x}));
                assert_eq!(
                    skipped.err(),
                    Some(SkipReason::Malformed),
                    "{alg:?} as {other}"
                );
            }
        }
        let hanzo = jwk(serde_json::json!({"kty":"MLDSA","alg":alg.as_str(),"x":x}));
        assert_eq!(hanzo.err(), Some(SkipReason::UnsupportedAlg), "{alg:?}");
    }
}

#[test]
fn ml_dsa_65_keys_without_their_own_alg_or_raw_key_are_skipped() {
    use aws_lc_rs::encoding::AsDer;
    use signature::KeyPair;
    let pair = ml_dsa_key();
    let x = b64(pair.public_key().as_ref());
    let spki = b64(pair.public_key().as_der().unwrap().as_ref());
    let short = b64(&pair.public_key().as_ref()[..1951]);
    let cases = [
        // `alg` is required (draft-ietf-cose-dilithium: REQUIRED for AKP) and must be the
        // spelling's own.
        (
            serde_json::json!({"kty":"MLDSA","x":x}),
            SkipReason::Malformed,
        ),
        (
            serde_json::json!({"kty":"AKP","pub":x}),
            SkipReason::Malformed,
        ),
        (
            serde_json::json!({"kty":"MLDSA","alg":"ML-DSA-65","x":x}),
            SkipReason::UnsupportedAlg,
        ),
        (
            serde_json::json!({"kty":"AKP","alg":"MLDSA65","pub":x}),
            SkipReason::UnsupportedAlg,
        ),
        (
            serde_json::json!({"kty":"MLDSA","alg":"RS256","x":x}),
            SkipReason::UnsupportedAlg,
        ),
        (
            serde_json::json!({"kty":"AKP","alg":"EdDSA","pub":x}),
            SkipReason::UnsupportedAlg,
        ),
        (
            serde_json::json!({"kty":"MLDSA","alg":"MLDSA44","x":x}),
            SkipReason::UnsupportedAlg,
        ),
        // An ML-DSA-65 key under another parameter set's alg: the size is not that set's.
        (
            serde_json::json!({"kty":"AKP","alg":"ML-DSA-87","pub":x}),
            SkipReason::Malformed,
        ),
        (
            serde_json::json!({"kty":"AKP","alg":"ML-DSA-44","pub":x}),
            SkipReason::Malformed,
        ),
        (
            serde_json::json!({"kty":"RSA","alg":"MLDSA65","n":x,"e":"AQAB"}),
            SkipReason::UnsupportedAlg,
        ),
        (
            serde_json::json!({"kty":"OKP","crv":"Ed25519","alg":"ML-DSA-65","x":b64(&[7; 32])}),
            SkipReason::UnsupportedAlg,
        ),
        // Each spelling's own public-key member, raw (FIPS 204: 1,952 bytes), nothing else.
        (
            serde_json::json!({"kty":"MLDSA","alg":"MLDSA65","pub":x}),
            SkipReason::Malformed,
        ),
        (
            serde_json::json!({"kty":"AKP","alg":"ML-DSA-65","x":x}),
            SkipReason::Malformed,
        ),
        (
            serde_json::json!({"kty":"MLDSA","alg":"MLDSA65","x":spki}),
            SkipReason::Malformed,
        ),
        (
            serde_json::json!({"kty":"MLDSA","alg":"MLDSA65","x":short}),
            SkipReason::Malformed,
        ),
        (
            serde_json::json!({"kty":"MLDSA","alg":"MLDSA65","x":format!("{x}=")}),
            SkipReason::Malformed,
        ),
        (
            serde_json::json!({"kty":"MLDSA","alg":"MLDSA65","x":1952}),
            SkipReason::Malformed,
        ),
        (
            serde_json::json!({"kty":"MLDSA","alg":"MLDSA65","use":"enc","x":x}),
            SkipReason::EncryptionKey,
        ),
        (
            serde_json::json!({"kty":"mldsa","alg":"MLDSA65","x":x}),
            SkipReason::UnsupportedKty,
        ),
    ];
    for (v, want) in cases {
        assert_eq!(jwk(v.clone()).map(|_| ()), Err(want), "{v}");
    }
}

#[test]
fn ml_dsa_65_material_is_in_the_key_set_fingerprint() {
    use signature::KeyPair;
    let set = |pair: &signature::PqdsaKeyPair| {
        let x = b64(pair.public_key().as_ref());
        let doc =
            serde_json::json!({"keys":[{"kty":"MLDSA","alg":"MLDSA65","kid":"cert-1","x":x}]});
        let (keys, skipped) = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert!(skipped.is_empty());
        KeySet {
            keys,
            skipped,
            confirmed_at: std::time::Instant::now(),
            generation: 1,
        }
    };
    let (a, b) = (ml_dsa_key(), ml_dsa_key());
    assert_eq!(set(&a).fingerprint(), set(&a).fingerprint());
    // A regenerated certificate under the same name (kid) is a different key set.
    assert_ne!(set(&a).fingerprint(), set(&b).fingerprint());
}
