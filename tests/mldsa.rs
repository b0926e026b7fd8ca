//! Integration tests of post-quantum tokens (issue 13): ML-DSA-44/65/87 access tokens signed by
//! an independent implementation (@noble/post-quantum via tests/e2e/mldsa.mjs), checked over gRPC.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use common::*;
use serde_json::json;

/// Issue 13: Hanzo IAM's ML-DSA-65 access tokens (FIPS 204, pure, empty context), signed here
/// by an independent implementation (@noble/post-quantum via tests/e2e/mldsa.mjs), in Hanzo's
/// spelling (`alg: "MLDSA65"`, `kty: "MLDSA"`) and the JOSE draft's (`alg: "ML-DSA-65"`,
/// `kty: "AKP"`), beside an RSA key; each spelling verifies only with its own keys.
#[tokio::test]
async fn ml_dsa_65_tokens_verify_with_their_own_keys_only() {
    let idp = Idp::start(&[&RSA, &PQ, &AKP]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES).replace(
        "algorithms: [RS256, ES256, EdDSA]",
        "algorithms: [RS256, MLDSA65, ML-DSA-65]",
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let good = h.claims("files:list");

    let hanzo = PQ.mint(&good);
    // 3,309-byte signature: ~4.5 KB, within the default limits.max_token_bytes (8192).
    assert!((4400..8192).contains(&hanzo.len()), "{}", hanzo.len());
    let a = h.bearer("POST", "/mcp", &hanzo).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.headers["x-mcp-authz-subject"], "user-1");
    let a = h.bearer("POST", "/mcp", &AKP.mint(&good)).await;
    assert_eq!(a.status, 200, "JOSE draft spelling: {a:?}");
    // Without a kid: tried against the keys that accept the alg.
    let kidless = PQ.mint_with_header(&json!({"alg":"MLDSA65","typ":"at+jwt"}), &good);
    assert_eq!(h.bearer("POST", "/mcp", &kidless).await.status, 200);

    let (hp, sig) = hanzo.rsplit_once('.').unwrap();
    let payload = hp.split_once('.').unwrap().1;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "another ML-DSA key under the published kid",
            PQ2.mint_with_header(&json!({"alg":"MLDSA65","kid":"cert-pq"}), &good),
            "token_bad_signature",
        ),
        (
            "truncated signature",
            format!("{hp}.{}", &sig[..sig.len() - 8]),
            "token_bad_signature",
        ),
        (
            "signature of the right length, one bit flipped",
            {
                let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
                raw[1000] ^= 0x10;
                format!("{hp}.{}", b64(&raw))
            },
            "token_bad_signature",
        ),
        (
            "signature over another payload",
            format!(
                "{}.{payload}.{sig}",
                b64(br#"{"alg":"MLDSA65","kid":"cert-pq","x":1}"#)
            ),
            "token_bad_signature",
        ),
        (
            "MLDSA65 against an RSA kid",
            PQ.mint_with_header(&json!({"alg":"MLDSA65","kid":"rsa-1"}), &good),
            "token_unknown_kid",
        ),
        (
            "RS256 against an ML-DSA kid",
            RSA.mint_with_header(&json!({"alg":"RS256","kid":"cert-pq"}), &good),
            "token_unknown_kid",
        ),
        (
            "Hanzo's alg against a JOSE-spelled key",
            AKP.mint_with_header(&json!({"alg":"MLDSA65","kid":"akp-1"}), &good),
            "token_unknown_kid",
        ),
        (
            "the JOSE draft's alg against a Hanzo-spelled key",
            PQ.mint_with_header(&json!({"alg":"ML-DSA-65","kid":"cert-pq"}), &good),
            "token_unknown_kid",
        ),
        (
            "other ML-DSA parameter sets are not accepted",
            PQ.mint_with_header(&json!({"alg":"ML-DSA-87","kid":"cert-pq"}), &good),
            "token_disallowed_alg",
        ),
        (
            "a lowercase spelling is not an alias",
            PQ.mint_with_header(&json!({"alg":"mldsa65","kid":"cert-pq"}), &good),
            "token_disallowed_alg",
        ),
    ];
    for (name, token, reason) in cases {
        let a = h.bearer("POST", "/mcp", &token).await;
        assert_eq!(a.status, 401, "{name}: {a:?}");
        assert_eq!(a.reason(), reason, "{name}");
        assert_eq!(a.json()["error"], "invalid_token", "{name}");
    }
    assert_eq!(
        h.idp.fetches(),
        1,
        "every kid above is published: no refetch"
    );
}

/// ML-DSA-44 and ML-DSA-87 (FIPS 204), in the JOSE draft's spelling only, signed by
/// @noble/post-quantum: each parameter set verifies only with keys of its own set, and a key
/// whose size is not its `alg`'s is never loaded.
#[tokio::test]
async fn ml_dsa_44_and_87_tokens_verify_with_their_own_parameter_set_only() {
    let akp44 = TestKey::mldsa_level("akp-44", 44, true);
    let akp87 = TestKey::mldsa_level("akp-87", 87, true);
    let idp = Idp::start(&[&RSA, &AKP, &akp44, &akp87]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES).replace(
        "algorithms: [RS256, ES256, EdDSA]",
        "algorithms: [RS256, ML-DSA-44, ML-DSA-65, ML-DSA-87]",
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let good = h.claims("files:list");

    let t44 = akp44.mint(&good);
    let t87 = akp87.mint(&good);
    // 2,420- and 4,627-byte signatures: both within the default limits.max_token_bytes (8192).
    assert!(
        t44.len() < t87.len() && t87.len() < 8192,
        "{} {}",
        t44.len(),
        t87.len()
    );
    for (name, token) in [("ML-DSA-44", &t44), ("ML-DSA-87", &t87)] {
        let a = h.bearer("POST", "/mcp", token).await;
        assert_eq!(a.status, 200, "{name}: {a:?}");
    }

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "ML-DSA-44 against an ML-DSA-87 kid",
            akp44.mint_with_header(&json!({"alg":"ML-DSA-44","kid":"akp-87"}), &good),
            "token_unknown_kid",
        ),
        (
            "ML-DSA-87 against an ML-DSA-65 kid",
            akp87.mint_with_header(&json!({"alg":"ML-DSA-87","kid":"akp-1"}), &good),
            "token_unknown_kid",
        ),
        (
            "ML-DSA-65 named in the header, signed by the ML-DSA-44 key of that kid",
            akp44.mint_with_header(&json!({"alg":"ML-DSA-65","kid":"akp-44"}), &good),
            "token_unknown_kid",
        ),
        (
            "Hanzo's MLDSA65 (not in this issuer's algorithms) against an ML-DSA-44 kid",
            akp44.mint_with_header(&json!({"alg":"MLDSA65","kid":"akp-44"}), &good),
            "token_disallowed_alg",
        ),
    ];
    for (name, token, reason) in cases {
        let a = h.bearer("POST", "/mcp", &token).await;
        assert_eq!(a.status, 401, "{name}: {a:?}");
        assert_eq!(a.reason(), reason, "{name}");
    }
    // A signature of the other set's length under the right kid and alg: bad signature.
    let (hp, _) = t44.rsplit_once('.').unwrap();
    let (_, sig87) = t87.rsplit_once('.').unwrap();
    let a = h.bearer("POST", "/mcp", &format!("{hp}.{sig87}")).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.reason(), "token_bad_signature");
}

/// ML-DSA is opt-in: an issuer with the default `algorithms` (RS256, ES256) refuses an
/// ML-DSA-65 token from a key it has loaded, and says the algorithm is the reason.
#[tokio::test]
async fn ml_dsa_65_is_not_allowed_unless_configured() {
    let idp = Idp::start(&[&RSA, &PQ]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES)
        .replace("        algorithms: [RS256, ES256, EdDSA]\n", "");
    let mut h = Harness::start(idp, &yaml, true).await;
    let good = h.claims("files:list");
    assert_eq!(h.bearer("POST", "/mcp", &RSA.mint(&good)).await.status, 200);
    let a = h.bearer("POST", "/mcp", &PQ.mint(&good)).await;
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.reason(), "token_disallowed_alg");
}
