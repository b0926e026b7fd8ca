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
