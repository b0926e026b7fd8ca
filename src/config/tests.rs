//! Tests of the configuration: defaults, every validation error with its YAML path, and the

use super::*;
use crate::scope::Scopes;

const MIN: &str = r#"
resources:
  - id: files
    uri: https://mcp.example.com/mcp
    issuers:
      - issuer: https://iam.example.com
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::from_yaml(MIN).unwrap();
    let r = &c.resources[0];
    assert_eq!(
        r.prm_url,
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    assert_eq!(r.realm, "https://mcp.example.com/mcp");
    assert_eq!(r.routes.len(), 1);
    assert_eq!(r.authorization_servers, vec!["https://iam.example.com"]);
    assert_eq!(c.issuers[0].source, KeySource::Discovery);
    assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:9191");
    assert_eq!(c.identity.subject.as_deref(), Some("x-mcp-authz-subject"));
    assert_eq!(
        c.identity.client_id.as_deref(),
        Some("x-mcp-authz-client-id")
    );
    // Sent only when configured (scopes) or needed (issuer: several issuers), and metadata
    // only when the rendered access log reads it (`check::tests`).
    assert_eq!(c.identity.scopes, None);
    assert_eq!(c.identity.issuer, None);
    assert!(!c.identity.dynamic_metadata);
    assert!(c.identity.forward_authorization);
}

fn err(yaml: &str) -> String {
    Config::from_yaml(yaml).unwrap_err().to_string()
}

#[test]
fn istio_section_defaults_and_errors() {
    let c = Config::from_yaml(MIN).unwrap();
    assert_eq!(c.istio.provider, "mcp-authz");
    assert_eq!(
        c.istio.service_host,
        "mcp-authz.mcp-authz.svc.cluster.local"
    );
    assert_eq!(c.istio.port, 9191);
    assert!(c.istio.gateways.is_empty() && c.istio.workloads.is_empty());

    let with = |istio: &str| format!("{MIN}istio:\n{istio}");
    let ok = Config::from_yaml(&with(
        "  namespace: authz\n  port: 9000\n  gateways: [istio-ingress/mcp]\n  workloads:\n    files: {namespace: mcp, selector: {app.kubernetes.io/name: files}, destination: files.mcp.svc.cluster.local:8080}\n",
    ))
    .unwrap();
    assert_eq!(ok.istio.service_host, "mcp-authz.authz.svc.cluster.local");
    assert_eq!(ok.istio.port, 9000);
    let w = &ok.istio.workloads["files"];
    assert_eq!(
        w.destination,
        ("files.mcp.svc.cluster.local".to_owned(), 8080)
    );

    let w = "    files: {namespace: mcp, selector: {app: files}, destination: files.mcp:8080}\n";
    let cases: &[(String, &str)] = &[
        (with("  provider: 'a b'\n"), "istio.provider"),
        (
            with(&format!("  provider: {}\n", "p".repeat(59))),
            "istio.provider",
        ),
        (with("  namespace: Auth_Z\n"), "istio.namespace"),
        (with("  service: ''\n"), "istio.service"),
        (with("  port: 0\n"), "istio.port"),
        (with("  gateways: [mesh]\n"), "istio.gateways[0]"),
        (with("  gateways: [a/b, a/b]\n"), "istio.gateways[1]"),
        (with("  bogus: 1\n"), "unknown field `bogus`"),
        (
            with(&format!("  workloads:\n{}", w.replace("files:", "nope:"))),
            "istio.workloads.nope",
        ),
        (
            with(&format!(
                "  workloads:\n{}",
                w.replace("namespace: mcp", "namespace: MCP")
            )),
            "istio.workloads.files.namespace",
        ),
        (
            with(&format!(
                "  workloads:\n{}",
                w.replace("{app: files}", "{}")
            )),
            "istio.workloads.files.selector",
        ),
        (
            with(&format!(
                "  workloads:\n{}",
                w.replace("{app: files}", "{'-x': files}")
            )),
            "istio.workloads.files.selector",
        ),
        (
            with(&format!(
                "  workloads:\n{}",
                w.replace("{app: files}", "{app: 'a b'}")
            )),
            "istio.workloads.files.selector.app",
        ),
        (
            with(&format!(
                "  workloads:\n{}",
                w.replace("files.mcp:8080", "10.0.0.1:8080")
            )),
            "istio.workloads.files.destination",
        ),
        (
            with(&format!(
                "  workloads:\n{}",
                w.replace("files.mcp:8080", "files.mcp")
            )),
            "istio.workloads.files.destination",
        ),
    ];
    for (yaml, want) in cases {
        let e = err(yaml);
        assert!(e.contains(want), "error {e:?} should contain {want:?}");
    }
}

/// `istio.trust_domain` and the workload bindings: the service account's Istio SPIFFE id,
/// explicit principals, and a principal bound to two resources refused.
#[test]
fn istio_workload_bindings() {
    const TWO: &str = r#"
resources:
  - id: files
    uri: https://files.example.com/mcp
    issuers: [{issuer: https://iam.example.com}]
  - id: wiki
    uri: https://wiki.example.com/mcp
    issuers: [{issuer: https://iam.example.com}]
istio:
"#;
    let files = "    files: {namespace: mcp, selector: {app: files}, destination: files.mcp:8080";
    let wiki = "    wiki: {namespace: mcp, selector: {app: wiki}, destination: wiki.mcp:8080";
    let with = |istio: &str| format!("{TWO}{istio}");
    let c = Config::from_yaml(&with(&format!(
        "  workloads:\n{files}, service_account: files-mcp}}\n{wiki}, principals: [spiffe://other.td/ns/x/sa/wiki]}}\n"
    )))
    .unwrap();
    assert_eq!(c.istio.trust_domain, "cluster.local");
    assert_eq!(
        c.istio.workloads["files"].principals,
        vec!["spiffe://cluster.local/ns/mcp/sa/files-mcp"]
    );
    assert_eq!(
        c.istio.workloads["wiki"].principals,
        vec!["spiffe://other.td/ns/x/sa/wiki"]
    );
    let c = Config::from_yaml(&with(&format!(
        "  trust_domain: corp.example\n  workloads:\n{files}, service_account: files-mcp, principals: [spiffe://legacy/ns/mcp/sa/files-mcp]}}\n"
    )))
    .unwrap();
    assert_eq!(
        c.istio.workloads["files"].principals,
        vec![
            "spiffe://corp.example/ns/mcp/sa/files-mcp",
            "spiffe://legacy/ns/mcp/sa/files-mcp"
        ]
    );
    assert!(!c.istio.workloads.contains_key("wiki"));
    let cases: Vec<(String, &str)> = vec![
        (
            with("  trust_domain: Cluster.Local\n"),
            "istio.trust_domain",
        ),
        (
            with(&format!(
                "  workloads:\n{files}, service_account: Files_MCP}}\n"
            )),
            "istio.workloads.files.service_account",
        ),
        (
            with(&format!(
                "  workloads:\n{files}, principals: [spiffe://td/ns/a/sa/b/]}}\n"
            )),
            "istio.workloads.files.principals[0]",
        ),
        (
            with(&format!(
                "  workloads:\n{files}, principals: ['https://td/ns/a']}}\n"
            )),
            "istio.workloads.files.principals[0]",
        ),
        (
            with(&format!(
                "  workloads:\n{files}, service_account: s, principals: [spiffe://cluster.local/ns/mcp/sa/s]}}\n"
            )),
            "istio.workloads.files.principals[0]",
        ),
        (
            with(&format!(
                "  workloads:\n{files}, service_account: shared}}\n{wiki}, service_account: shared}}\n"
            )),
            "already bound to resource \"files\"",
        ),
        (
            with(&format!(
                "  workloads:\n{files}, principals: [spiffe://td/x]}}\n{wiki}, principals: [spiffe://td/x]}}\n"
            )),
            "istio.workloads.wiki",
        ),
    ];
    for (yaml, want) in cases {
        let e = err(&yaml);
        assert!(e.contains(want), "error {e:?} should contain {want:?}");
    }
}

#[test]
fn errors_name_the_yaml_path() {
    let cases: &[(&str, &str)] = &[
        (
            "resources:\n  - id: a\n    uri: https://x/mcp/\n    issuers: [{issuer: https://i}]\n",
            "resources[0].uri",
        ),
        (
            "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i, algorithms: [HS256]}]\n",
            "resources[0].issuers[0].algorithms[0]",
        ),
        (
            "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: http://iam.example.com}]\n",
            "resources[0].issuers[0].issuer",
        ),
        (
            "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    routes: [{path_prefix: /mcp/../x, scopes: []}]\n",
            "resources[0].routes[0].path_prefix",
        ),
        (
            "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    routes: [{path: /mcp}]\n",
            "resources[0].routes[0]",
        ),
        (
            "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    routes: [{path: /mcp, scopes: [\"a b\"]}]\n",
            "resources[0].routes[0].scopes[0]",
        ),
        ("listen: {grpc: nope}\nresources: []\n", "listen.grpc"),
        (
            "envoy: {max_request_bytes: 4096}\nlimits: {max_body_bytes: 8192}\nresources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n",
            "envoy.max_request_bytes",
        ),
        (
            "envoy: {max_stream_seconds: 0}\nresources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n",
            "envoy.max_stream_seconds",
        ),
        ("listen: {workers: 0}\nresources: []\n", "listen.workers"),
        (
            "listen: {workers: 100000}\nresources: []\n",
            "listen.workers",
        ),
        (
            "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i, bogus: 1}]\n",
            "unknown field `bogus`",
        ),
        (
            "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n  - id: a\n    uri: https://y/mcp\n    issuers: [{issuer: https://i}]\n",
            "resources[1].id",
        ),
        (
            "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    scopes_supported: [offline_access]\n",
            "resources[0].scopes_supported",
        ),
    ];
    for (yaml, want) in cases {
        let e = err(yaml);
        assert!(e.contains(want), "error {e:?} should contain {want:?}");
    }
}

#[test]
fn prefix_matches_on_segment_boundaries() {
    let p = PathMatch::Prefix("/mcp".into());
    assert!(p.matches("/mcp"));
    assert!(p.matches("/mcp/x"));
    assert!(!p.matches("/mcpx"));
    assert!(!p.matches("/MCP"));
    assert!(PathMatch::Prefix("/".into()).matches("/anything"));
    assert!(PathMatch::Exact("/mcp".into()).matches("/mcp"));
    assert!(!PathMatch::Exact("/mcp".into()).matches("/mcp/"));
}

#[test]
fn implications_close_transitively() {
    let c = Config::from_yaml(
        "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    scope_implications:\n      files:admin: [files:write]\n      files:write: [files:read]\n",
    )
    .unwrap();
    let got = expand_scopes(&c.resources[0], &Scopes::parse_space("files:admin"));
    assert!(got.contains("files:read") && got.contains("files:write"));
    let got = expand_scopes(&c.resources[0], &Scopes::parse_space("files"));
    assert_eq!(got.len(), 1);
}

#[test]
fn issuer_claim_lists() {
    let c = Config::from_yaml(MIN).unwrap();
    let t = &c.resources[0].issuers[0];
    assert_eq!(t.scope_claims, vec![ScopeClaim::Scope, ScopeClaim::Scp]);
    assert_eq!(
        t.client_id_claims,
        vec![ClientIdClaim::ClientId, ClientIdClaim::Azp]
    );
    let with = |extra: &str| {
        MIN.replace(
            "https://iam.example.com\n",
            &format!("https://iam.example.com\n        {extra}\n"),
        )
    };
    let c = Config::from_yaml(&with("scope_claims: [roles, scp, roles]")).unwrap();
    assert_eq!(
        c.resources[0].issuers[0].scope_claims,
        vec![ScopeClaim::Roles, ScopeClaim::Scp]
    );
    let c = Config::from_yaml(&with("client_id_claims: [appid, cid]")).unwrap();
    assert_eq!(
        c.resources[0].issuers[0].client_id_claims,
        vec![ClientIdClaim::Appid, ClientIdClaim::Cid]
    );
    let e = err(&with("scope_claims: [scope, groups]"));
    assert!(
        e.contains("resources[0].issuers[0].scope_claims[1]")
            && e.contains("\"groups\" is not a claim")
            && e.contains("scope scp roles permissions"),
        "{e}"
    );
    let e = err(&with("scope_claims: []"));
    assert!(
        e.contains("resources[0].issuers[0].scope_claims: list at least one"),
        "{e}"
    );
    let e = err(&with("client_id_claims: [sub]"));
    assert!(
        e.contains("resources[0].issuers[0].client_id_claims[0]")
            && e.contains("client_id azp cid appid"),
        "{e}"
    );
    let e = err(&with("client_id_claims: []"));
    assert!(e.contains("client_id_claims: list at least one"), "{e}");
}
