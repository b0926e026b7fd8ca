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
        reserved: [
            "x-client",
            "x-iss",
            "x-mcp-authz-subject",
            "x-scopes",
            "x-sub",
        ]
        .map(String::from)
        .to_vec(),
    };
    let p = Principal {
        issuer: "https://iam".into(),
        subject: Some("user\r\nx-admin: 1".into()),
        client_id: None,
        scopes: Scopes::parse_space("a b"),
        expires_at: 0,
        cnf_jkt: None,
    };
    let (set, remove) = upstream_headers(&id, Some(&p), false);
    assert_eq!(
        set,
        vec![
            ("x-scopes".into(), "a b".into()),
            ("x-iss".into(), "https://iam".into())
        ]
    );
    // An unsafe or missing claim is not sent and the client's copy goes, as does every
    // reserved name not set.
    assert_eq!(
        remove,
        vec!["x-client", "x-mcp-authz-subject", "x-sub", "authorization"]
    );
    let (set, remove) = upstream_headers(&id, None, false);
    assert!(set.is_empty());
    assert_eq!(remove, id.reserved);
    // Behind a proxy that strips the reserved names itself the answer only sets.
    let (set, remove) = upstream_headers(&id, Some(&p), true);
    assert_eq!(set.len(), 2);
    assert_eq!(remove, vec!["authorization"]);
    assert!(upstream_headers(&id, None, true).1.is_empty());
    // A header turned off is not sent, yet its name stays reserved.
    (id.subject, id.scopes) = (None, None);
    let (set, remove) = upstream_headers(&id, Some(&p), false);
    assert_eq!(set, vec![("x-iss".into(), "https://iam".into())]);
    assert_eq!(
        remove,
        vec![
            "x-client",
            "x-mcp-authz-subject",
            "x-scopes",
            "x-sub",
            "authorization"
        ]
    );
}

#[test]
fn identity_defaults_follow_the_configuration() {
    let one = "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n";
    let c = Config::from_yaml(one).unwrap();
    let names: Vec<_> = c.identity.names().collect();
    assert_eq!(names, ["x-mcp-authz-subject", "x-mcp-authz-client-id"]);
    assert!(!c.identity.dynamic_metadata);
    assert_eq!(
        c.identity.reserved,
        crate::config::DEFAULT_IDENTITY_HEADERS
            .map(String::from)
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    // Two issuers for one resource: `sub` alone is ambiguous (OIDC Core §2), so the issuer
    // is sent too; `null` still turns it off.
    let two = "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}, {issuer: https://j}]\n";
    let c = Config::from_yaml(two).unwrap();
    assert_eq!(c.identity.issuer.as_deref(), Some("x-mcp-authz-issuer"));
    let c = Config::from_yaml(&format!("identity: {{issuer_header: null}}\n{two}")).unwrap();
    assert_eq!(c.identity.issuer, None);
    assert!(
        c.identity
            .reserved
            .iter()
            .any(|r| r == "x-mcp-authz-issuer")
    );
    // A renamed header is reserved as well as the default name.
    let c = Config::from_yaml(&format!("identity: {{subject_header: x-user}}\n{one}")).unwrap();
    assert!(c.identity.reserved.iter().any(|r| r == "x-user"));
    assert!(
        c.identity
            .reserved
            .iter()
            .any(|r| r == "x-mcp-authz-subject")
    );
    // The rendered access log reads the metadata: on by default with it, never off.
    let log = format!("envoy: {{access_log: true}}\n{one}");
    assert!(Config::from_yaml(&log).unwrap().identity.dynamic_metadata);
    let off = format!("identity: {{dynamic_metadata: false}}\n{log}");
    let err = Config::from_yaml(&off).unwrap_err().to_string();
    assert!(err.contains("identity.dynamic_metadata"), "{err}");
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
