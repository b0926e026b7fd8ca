use serde_json::json;

use super::*;

/// RFC 9449 §4.1's example key and §6.1's `jkt` for it.
#[test]
fn thumbprint_matches_rfc9449_example() {
    let jwk = json!({"kty": "EC", "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
        "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA", "crv": "P-256"});
    assert_eq!(
        thumbprint(jwk.as_object().unwrap()).as_deref(),
        Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
    );
    // Members beside the required ones do not change it (RFC 7638 §3.2).
    let mut more = jwk.as_object().unwrap().clone();
    more.insert("alg".into(), "ES256".into());
    more.insert("kid".into(), "k".into());
    assert_eq!(
        thumbprint(&more).as_deref(),
        Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
    );
    assert_eq!(
        thumbprint(json!({"kty": "oct", "k": "x"}).as_object().unwrap()),
        None
    );
}

#[test]
fn ath_is_base64url_sha256() {
    // RFC 9449 §7.1's example token and `ath`.
    assert_eq!(
        token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

#[test]
fn htu_normalization_table() {
    let origin = origin("https://MCP.example.com:443/mcp").unwrap();
    assert_eq!(origin, "https://mcp.example.com");
    for (htu, ok) in [
        ("https://mcp.example.com/mcp", true),
        ("HTTPS://MCP.Example.COM/mcp", true),
        ("https://mcp.example.com:443/mcp", true),
        ("https://mcp.example.com/mcp?x=1#f", true),
        ("https://mcp.example.com/a/../mcp", true),
        ("https://mcp.example.com/MCP", false),
        ("http://mcp.example.com/mcp", false),
        ("https://mcp.example.com:8443/mcp", false),
        ("https://evil.example.com/mcp", false),
        ("https://user@mcp.example.com/mcp", false),
        ("https://mcp.example.com/mcp/other", false),
        ("/mcp", false),
        ("ftp://mcp.example.com/mcp", false),
    ] {
        assert_eq!(same_target(htu, &origin, "/mcp"), ok, "{htu}");
    }
    assert_eq!(
        super::origin("http://127.0.0.1:8080/mcp").as_deref(),
        Some("http://127.0.0.1:8080")
    );
    assert_eq!(super::origin("http://h:80").as_deref(), Some("http://h"));
}

#[test]
fn single_proof_header() {
    assert_eq!(single_proof(None), Err(DpopError::ProofMissing));
    assert_eq!(single_proof(Some(" ")), Err(DpopError::ProofMissing));
    assert_eq!(
        single_proof(Some("a.b.c,d.e.f")),
        Err(DpopError::ProofMultiple)
    );
    assert_eq!(single_proof(Some("a.b.c")), Ok("a.b.c"));
}

mod props {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
    use proptest::prelude::*;
    use serde_json::json;

    use super::super::*;
    use crate::config::DpopSettings;

    const TOKEN: &str = "the.access.token";

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    /// A valid ES256 proof for POST https://mcp.example.com/mcp at `NOW`.
    fn valid() -> String {
        let k = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let p = k.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65])});
        let h = b64(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk})
            .to_string()
            .as_bytes());
        let c = b64(
            json!({"jti": "j", "htm": "POST", "htu": "https://mcp.example.com/mcp",
            "iat": NOW, "ath": token_hash(TOKEN)})
            .to_string()
            .as_bytes(),
        );
        let input = format!("{h}.{c}");
        let sig = k.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }

    const NOW: u64 = 1_800_000_000;

    fn expected() -> Expected<'static> {
        Expected {
            method: "POST",
            origin: "https://mcp.example.com",
            path: "/mcp",
            token: TOKEN,
            now: NOW,
        }
    }

    static VALID: std::sync::LazyLock<String> = std::sync::LazyLock::new(valid);

    #[test]
    fn the_fixture_is_accepted() {
        assert!(verify(&VALID, &expected(), &DpopSettings::default()).is_ok());
    }

    proptest! {
        /// Any one byte of a valid proof changed: refused, never a panic. (Fails when the
        /// signature is not checked, or checked over less than header and claims.)
        #[test]
        fn a_changed_byte_is_refused(i in 0usize..4096, b in 0u8..128) {
            let mut bytes = VALID.clone().into_bytes();
            let i = i % bytes.len();
            prop_assume!(bytes[i] != b);
            bytes[i] = b;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(verify(&changed, &expected(), &DpopSettings::default()).is_err());
        }

        /// Arbitrary text is refused without a panic.
        #[test]
        fn arbitrary_text_is_refused(s in "[A-Za-z0-9_.=-]{0,300}") {
            prop_assert!(verify(&s, &expected(), &DpopSettings::default()).is_err());
        }
    }
}
