//! Unit tests of `check.rs`: preflights, identity headers, step-up scopes.

use super::request::is_cors_preflight;
use super::*;
use crate::config::{PREFLIGHT_CONTEXT_KEY, PREFLIGHTS_BY_PROXY};

#[test]
fn preflight_is_the_fetch_definition() {
    let preflight = |headers: &[(&str, &str)], body: &[u8], ext: &[(&str, &str)]| {
        is_cors_preflight(&CheckInput {
            method: "OPTIONS".into(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            context_extensions: ext
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.to_vec(),
            ..CheckInput::default()
        })
    };
    let o = ("origin", "https://app.example");
    let m = ("access-control-request-method", "POST");
    assert!(preflight(&[o, m], b"", &[]));
    assert!(preflight(&[o, m, ("content-length", "0")], b"", &[]));
    // Present is not enough: both non-empty (the issue-17 look-alike had `Origin: `).
    assert!(!preflight(&[("origin", ""), m], b"", &[]));
    assert!(!preflight(&[("origin", " "), m], b"", &[]));
    assert!(!preflight(
        &[o, ("access-control-request-method", "")],
        b"",
        &[]
    ));
    assert!(!preflight(&[o], b"", &[]));
    assert!(!preflight(&[m], b"", &[]));
    // A preflight has no body, buffered or declared.
    assert!(!preflight(&[o, m], b"{}", &[]));
    assert!(!preflight(&[o, m, ("content-length", "2")], b"", &[]));
    assert!(!preflight(
        &[o, m, ("transfer-encoding", "chunked")],
        b"",
        &[]
    ));
    // Behind the rendered Envoy its CORS filter answered every real preflight.
    let by_proxy = (PREFLIGHT_CONTEXT_KEY, PREFLIGHTS_BY_PROXY);
    assert!(!preflight(&[o, m], b"", &[by_proxy]));
    assert!(preflight(&[o, m], b"", &[(PREFLIGHT_CONTEXT_KEY, "other")]));
}

#[test]
fn identity_headers_set_or_removed_never_both() {
    let mut id = IdentityHeaders {
        subject: Some("x-sub".into()),
        client_id: Some("x-client".into()),
        scopes: Some("x-scopes".into()),
        issuer: Some("x-iss".into()),
        forward_authorization: false,
        dynamic_metadata: true,
    };
    let p = Principal {
        issuer: "https://iam".into(),
        subject: Some("user\r\nx-admin: 1".into()),
        client_id: None,
        scopes: Scopes::parse_space("a b"),
        expires_at: 0,
        cnf_jkt: None,
    };
    let (set, remove) = upstream_headers(&id, Some(&p));
    assert_eq!(
        set,
        vec![
            ("x-scopes".into(), "a b".into()),
            ("x-iss".into(), "https://iam".into())
        ]
    );
    assert_eq!(remove, vec!["x-sub", "x-client", "authorization"]);
    let (set, remove) = upstream_headers(&id, None);
    assert!(set.is_empty());
    assert_eq!(remove, vec!["x-sub", "x-client", "x-scopes", "x-iss"]);
    // Headers configured as null are neither set nor stripped.
    (id.subject, id.scopes) = (None, None);
    let (set, remove) = upstream_headers(&id, Some(&p));
    assert_eq!(set, vec![("x-iss".into(), "https://iam".into())]);
    assert_eq!(remove, vec!["x-client", "authorization"]);
    let (set, remove) = upstream_headers(&id, None);
    assert!(set.is_empty());
    assert_eq!(remove, vec!["x-client", "x-iss"]);
}

#[test]
fn step_up_strategies() {
    let mut c = Config::from_yaml(
        "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    routes: [{path: /mcp, scopes: [files:list]}, {path: /r, scopes: [files:read]}]\n",
    )
    .unwrap();
    let r = &mut c.resources[0];
    let granted = Scopes::parse_space("openid offline_access files:list other:x");
    let required = Scopes::parse_space("files:read");
    assert_eq!(
        step_up_scope(r, &granted, &required),
        "files:list files:read"
    );
    r.step_up = StepUpStrategy::Required;
    assert_eq!(step_up_scope(r, &granted, &required), "files:read");
}
