//! Unit tests of `token.rs`: claims, audience forms, structure, token kinds, claim shapes.

use super::*;
use crate::config::Config;

fn resource() -> Resource {
    Config::from_yaml(
        "resources:\n  - id: a\n    uri: https://MCP.example.com/mcp\n    issuers: [{issuer: https://iam, extra_audiences: [client-1]}]\n",
    )
    .unwrap()
    .resources
    .remove(0)
}

fn claims(json: &str) -> Result<Claims<'_>, serde_json::Error> {
    serde_json::from_str(json)
}

#[test]
fn audience_forms() {
    let r = resource();
    let t = &r.issuers[0];
    let ok = |v: Value| audience_ok(Some(&v), &r, t);
    assert!(ok(Value::from("https://MCP.example.com/mcp")));
    assert!(ok(Value::from("https://mcp.example.com/mcp")));
    assert!(ok(Value::from("HTTPS://mcp.EXAMPLE.com/mcp")));
    assert!(ok(serde_json::json!(["x", "https://mcp.example.com/mcp"])));
    assert!(ok(Value::from("client-1")));
    assert!(!ok(Value::from("https://mcp.example.com/mcp/")));
    assert!(!ok(Value::from("https://mcp.example.com/MCP")));
    assert!(!ok(Value::from("https://mcp.example.com")));
    assert!(!ok(serde_json::json!([])));
    assert!(!ok(Value::Null));
    assert!(!ok(serde_json::json!(42)));
    assert!(!ok(serde_json::json!([42])));
    assert!(!audience_ok(None, &r, t));
}

fn check(json: &str, now: u64) -> Result<Principal, TokenError> {
    let r = resource();
    check_claims(
        &claims(json).unwrap(),
        &r.issuers[0],
        &r,
        now,
        &mut Trace::off(),
    )
}

#[test]
fn time_claims_with_leeway() {
    let base = r#""aud":"https://mcp.example.com/mcp","iss":"https://iam""#;
    // leeway is 30 s by default
    assert_eq!(
        check(&format!("{{{base}}}"), 1000),
        Err(TokenError::MissingExp)
    );
    assert!(check(&format!("{{{base},\"exp\":1000}}"), 1029).is_ok());
    assert_eq!(
        check(&format!("{{{base},\"exp\":1000}}"), 1030),
        Err(TokenError::Expired)
    );
    assert_eq!(
        check(&format!("{{{base},\"exp\":\"2000\"}}"), 1000),
        Err(TokenError::Malformed)
    );
    assert_eq!(
        check(&format!("{{{base},\"exp\":2000,\"nbf\":1031}}"), 1000),
        Err(TokenError::NotYetValid)
    );
    assert!(check(&format!("{{{base},\"exp\":2000,\"nbf\":1030}}"), 1000).is_ok());
    assert_eq!(
        check(&format!("{{{base},\"exp\":2000,\"iat\":1500}}"), 1000),
        Err(TokenError::NotYetValid)
    );
}

#[test]
fn scopes_from_scope_and_scp() {
    let base = r#""aud":"https://mcp.example.com/mcp","exp":9999999999"#;
    let p = check(&format!("{{{base},\"scope\":\"a b\"}}"), 1).unwrap();
    assert_eq!(p.scopes.joined(), "a b");
    let p = check(&format!("{{{base},\"scp\":[\"a\",\"c\"]}}"), 1).unwrap();
    assert_eq!(p.scopes.joined(), "a c");
    let p = check(&format!("{{{base},\"scp\":\"x y\",\"scope\":\"a\"}}"), 1).unwrap();
    assert_eq!(p.scopes.joined(), "a x y");
    let p = check(&format!("{{{base}}}"), 1).unwrap();
    assert!(p.scopes.is_empty());
    assert_eq!(
        check(&format!("{{{base},\"scope\":7}}"), 1),
        Err(TokenError::Malformed)
    );
    assert_eq!(
        check(&format!("{{{base},\"scp\":[7]}}"), 1),
        Err(TokenError::Malformed)
    );
}

#[test]
fn refresh_tokens_are_not_access_tokens() {
    let base = r#""aud":"https://mcp.example.com/mcp","exp":9999999999"#;
    assert_eq!(
        check(&format!("{{{base},\"tokenType\":\"refresh-token\"}}"), 1),
        Err(TokenError::NotAccessToken)
    );
    assert_eq!(
        check(
            &format!("{{{base},\"tokenType\":\"access-token\",\"TokenType\":\"refresh-token\"}}"),
            1
        ),
        Err(TokenError::NotAccessToken)
    );
    assert!(check(&format!("{{{base},\"tokenType\":\"access-token\"}}"), 1).is_ok());
}

#[test]
fn every_kind_claim_must_say_access_token() {
    let base = r#""aud":"https://mcp.example.com/mcp","exp":9999999999"#;
    let kind = |extra: &str| check(&format!("{{{base},{extra}}}"), 1);
    for ok in [
        r#""typ":"Bearer""#,
        r#""tokenType":"access-token""#,
        r#""TokenType":"ACCESS-TOKEN""#,
        r#""token_type":"access_token""#,
        r#""token_use":"access""#,
        r#""typ":"Bearer","tokenType":"access-token""#,
        r#""typ":null"#,
    ] {
        assert!(kind(ok).is_ok(), "{ok}");
    }
    for bad in [
        // Keycloak's other kinds
        r#""typ":"Refresh""#,
        r#""typ":"Offline""#,
        r#""typ":"ID""#,
        // other claims and spellings
        r#""token_type":"refresh_token""#,
        r#""token_use":"id""#,
        r#""tokenType":"refresh-token ""#,
        r#""tokenType":" refresh-token""#,
        r#""tokenType":"refresh-token\n""#,
        r#""TokenType":"Refresh_Token""#,
        r#""tokenType":"id-token""#,
        // malformed declarations
        r#""tokenType":["access-token"]"#,
        r#""tokenType":["refresh-token"]"#,
        r#""typ":["Bearer","Refresh"]"#,
        r#""tokenType":1"#,
        r#""token_type":{"v":"access_token"}"#,
        r#""tokenType":"""#,
        r#""typ":"Bearer ""#,
        // one access declaration does not outvote another kind
        r#""tokenType":"access-token","typ":"Refresh""#,
    ] {
        assert_eq!(kind(bad), Err(TokenError::NotAccessToken), "{bad}");
    }
}

#[test]
fn client_id_from_azp() {
    let base = r#""aud":"https://mcp.example.com/mcp","exp":9999999999"#;
    assert_eq!(
        check(&format!("{{{base},\"azp\":\"c\"}}"), 1)
            .unwrap()
            .client_id
            .as_deref(),
        Some("c")
    );
    assert_eq!(
        check(&format!("{{{base},\"azp\":\"c\",\"client_id\":\"d\"}}"), 1)
            .unwrap()
            .client_id
            .as_deref(),
        Some("d")
    );
}

/// Split, decode and parse `token` (what `validate` does before any key is looked at).
fn parse(token: &str, max_len: usize) -> Result<(), TokenError> {
    decode(token, max_len)?.parse().map(|_| ())
}

#[test]
fn structure() {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
    let c = URL_SAFE_NO_PAD.encode(br#"{"iss":"x"}"#);
    assert!(parse(&format!("{h}.{c}.sig"), 8192).is_ok());
    assert!(matches!(
        parse(&format!("{h}.{c}"), 8192),
        Err(TokenError::Malformed)
    ));
    assert!(matches!(
        parse(&format!("{h}.{c}.sig.x"), 8192),
        Err(TokenError::Malformed)
    ));
    assert!(matches!(
        parse(&".".repeat(5000), 8192),
        Err(TokenError::Malformed)
    ));
    assert!(matches!(
        parse(&format!("{h}.{c}."), 8192),
        Err(TokenError::Malformed)
    ));
    assert!(matches!(
        parse(&format!("{h}.{c}.sig"), 10),
        Err(TokenError::TooLong)
    ));
    let dup = URL_SAFE_NO_PAD.encode(br#"{"iss":"x","iss":"y"}"#);
    assert!(matches!(
        parse(&format!("{h}.{dup}.sig"), 8192),
        Err(TokenError::Malformed)
    ));
    let duph = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","alg":"none"}"#);
    assert!(matches!(
        parse(&format!("{duph}.{c}.sig"), 8192),
        Err(TokenError::Malformed)
    ));
    let crit = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","crit":["exp"]}"#);
    assert!(matches!(
        parse(&format!("{crit}.{c}.sig"), 8192),
        Err(TokenError::Malformed)
    ));
    // Deep nesting in a claim we read hits serde_json's recursion limit; in one we skip it
    // is consumed without recursion. Neither can overflow the stack.
    let deep = URL_SAFE_NO_PAD.encode(format!(
        "{{\"aud\":{}{}}}",
        "[".repeat(500),
        "]".repeat(500)
    ));
    assert!(matches!(
        parse(&format!("{h}.{deep}.sig"), 8192),
        Err(TokenError::Malformed)
    ));
    let deep = URL_SAFE_NO_PAD.encode(format!(
        "{{\"x\":{}{}}}",
        "[".repeat(2000),
        "]".repeat(2000)
    ));
    assert!(parse(&format!("{h}.{deep}.sig"), 8192).is_ok());
    let bin = URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x00]);
    assert!(matches!(
        parse(&format!("{h}.{bin}.sig"), 8192),
        Err(TokenError::Malformed)
    ));
    let padded = format!("{}=", URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}x"#));
    assert!(matches!(
        parse(&format!("{padded}.{c}.sig"), 8192),
        Err(TokenError::Malformed)
    ));
}

#[test]
fn typ_values() {
    assert!(check_typ(None).is_ok());
    assert!(check_typ(Some("JWT")).is_ok());
    assert!(check_typ(Some("at+JWT")).is_ok());
    assert_eq!(check_typ(Some("dpop+jwt")), Err(TokenError::NotAccessToken));
}

fn check_with(issuer_extra: &str, json: &str) -> Result<Principal, TokenError> {
    let r = Config::from_yaml(&format!(
        "resources:\n  - id: a\n    uri: https://mcp.example.com/mcp\n    issuers: [{{issuer: https://iam, {issuer_extra}}}]\n"
    ))
    .unwrap()
    .resources
    .remove(0);
    let base = r#""aud":"https://mcp.example.com/mcp","exp":9999999999"#;
    let json = format!("{{{base},{json}}}");
    check_claims(
        &claims(&json).unwrap(),
        &r.issuers[0],
        &r,
        1,
        &mut Trace::off(),
    )
}

#[test]
fn scope_claims_are_the_configured_union() {
    let scopes = |extra: &str, json: &str| check_with(extra, json).map(|p| p.scopes.joined());
    let entra_app = r#""roles":["Files.Read","Files.Write"],"azp":"app""#;
    // Default [scope, scp]: Entra's app-only roles are not scopes.
    assert_eq!(scopes("leeway_seconds: 30", entra_app), Ok(String::new()));
    assert_eq!(
        scopes("scope_claims: [roles]", entra_app),
        Ok("Files.Read Files.Write".into())
    );
    // Auth0: scope string and permissions array, union in configured order.
    let auth0 = r#""scope":"openid read:files","permissions":["read:files","write:files"]"#;
    assert_eq!(
        scopes("scope_claims: [scope, permissions]", auth0),
        Ok("openid read:files write:files".into())
    );
    assert_eq!(
        scopes("scope_claims: [permissions]", auth0),
        Ok("read:files write:files".into())
    );
    // An unconfigured claim is never read, whatever its shape; a configured one must be a list.
    assert_eq!(
        scopes("scope_claims: [scope]", r#""scope":"a","scp":7"#),
        Ok("a".into())
    );
    assert_eq!(
        scopes("leeway_seconds: 30", r#""scope":"a","roles":{"x":1}"#),
        Ok("a".into())
    );
    for bad in [
        r#""scp":7"#,
        r#""scope":"a  b""#,
        r#""scp":["a",""]"#,
        r#""scope":"a\tb""#,
    ] {
        assert_eq!(
            scopes("leeway_seconds: 30", bad),
            Err(TokenError::Malformed),
            "{bad}"
        );
    }
    assert_eq!(
        scopes("scope_claims: [roles]", r#""roles":[{"v":"a"}]"#),
        Err(TokenError::Malformed)
    );
}

#[test]
fn client_id_claims_first_present_wins() {
    let id = |extra: &str, json: &str| check_with(extra, json).map(|p| p.client_id);
    let okta = r#""cid":"0oa1","azp":"other""#;
    assert_eq!(id("leeway_seconds: 30", okta), Ok(Some("other".into())));
    assert_eq!(
        id("client_id_claims: [cid, azp]", okta),
        Ok(Some("0oa1".into()))
    );
    assert_eq!(id("client_id_claims: [appid]", okta), Ok(None));
    assert_eq!(
        id(
            "client_id_claims: [appid, azp]",
            r#""appid":"guid","azp":null"#
        ),
        Ok(Some("guid".into()))
    );
    assert_eq!(
        id("leeway_seconds: 30", r#""client_id":null,"azp":"c""#),
        Ok(Some("c".into()))
    );
    // A configured claim of another type is malformed, even behind the one that wins.
    assert_eq!(
        id("leeway_seconds: 30", r#""client_id":"c","azp":5"#),
        Err(TokenError::Malformed)
    );
    assert_eq!(
        id("client_id_claims: [cid]", r#""cid":"c","azp":5"#),
        Ok(Some("c".into()))
    );
}

/// Header and claims strings are borrowed from the decoded text when they hold no JSON
/// escapes and decoded when they do: an escaped `iss`, `sub`, `alg`, `kid` or `typ` reads
/// exactly as its unescaped spelling (some encoders write `\/` for `/`).
#[test]
fn escaped_strings_read_as_unescaped() {
    let r = resource();
    let c = claims(r#"{"iss":"https:\/\/iam","sub":"a\u0062c","aud":"client-1","exp":4102444800}"#)
        .unwrap();
    let t = trusted_issuer(&c, &r).unwrap();
    assert_eq!(t.issuer, "https://iam");
    let p = check_claims(&c, t, &r, 1_700_000_000, &mut Trace::off()).unwrap();
    assert_eq!(p.subject.as_deref(), Some("abc"));

    let h = URL_SAFE_NO_PAD
        .encode(br#"{"alg":"RS\u0032\u0035\u0036","kid":"k\/1","typ":"at+\u006Awt"}"#);
    let c = URL_SAFE_NO_PAD.encode(br#"{"iss":"x"}"#);
    let token = format!("{h}.{c}.sig");
    let decoded = decode(&token, 8192).unwrap();
    let parsed = decoded.parse().unwrap();
    assert_eq!(parsed.header.alg, "RS256");
    assert_eq!(parsed.header.kid.as_deref(), Some("k/1"));
    assert!(check_typ(parsed.header.typ.as_deref()).is_ok());
    // A non-string where a string is read is still malformed.
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":7}"#);
    assert!(matches!(
        parse(&format!("{h}.{c}.sig"), 8192),
        Err(TokenError::Malformed)
    ));
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
    let c7 = URL_SAFE_NO_PAD.encode(br#"{"iss":["x"]}"#);
    assert!(parse(&format!("{h}.{c}.sig"), 8192).is_ok());
    assert!(matches!(
        parse(&format!("{h}.{c7}.sig"), 8192),
        Err(TokenError::Malformed)
    ));
}
