//! The mesh binding (issue 13 part 4) over gRPC, with CheckRequests shaped as Istio's sidecar
//! sends them under the `CUSTOM` action: no `context_extensions`, the public host as
//! `:authority`, the caller's SPIFFE id as `source.principal` and the receiving workload's as
//! `destination.principal`, peers' socket addresses, the sidecar's own headers. Two resources
//! on two hosts, each bound to its MCP server's service account.

mod common;

use common::*;
use mcp_authz::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use mcp_authz::pb::envoy::service::auth::v3::{CheckRequest, attribute_context::Peer};
use proptest::prelude::*;
use serde_json::{Value, json};

const FILES_SA: &str = "spiffe://cluster.local/ns/mcp/sa/files-mcp";
const WIKI_SA: &str = "spiffe://cluster.local/ns/mcp/sa/wiki-mcp";
const CALLER_SA: &str = "spiffe://cluster.local/ns/agents/sa/agent";
const FILES_URI: &str = "https://files.example.com/mcp";
const WIKI_URI: &str = "https://wiki.example.com/mcp";

/// Two resources, each with its workload; `bind` adds the service accounts.
fn yaml(issuer: &str, bind: bool) -> String {
    let (files_sa, wiki_sa) = if bind {
        (
            ", service_account: files-mcp",
            ", service_account: wiki-mcp",
        )
    } else {
        ("", "")
    };
    format!(
        r#"
listen: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
jwks: {{min_refresh_seconds: 1, retry_seconds: 1, fetch_timeout_seconds: 2}}
resources:
  - id: files
    uri: {FILES_URI}
    issuers: [{{issuer: {issuer}, algorithms: [RS256]}}]
    routes: [{{path_prefix: /mcp, scopes: [files:list]}}]
  - id: wiki
    uri: {WIKI_URI}
    issuers: [{{issuer: {issuer}, algorithms: [RS256]}}]
    routes: [{{path_prefix: /mcp, scopes: [wiki:read]}}]
istio:
  workloads:
    files: {{namespace: mcp, selector: {{app: files}}, destination: "files-mcp.mcp.svc.cluster.local:8080"{files_sa}}}
    wiki: {{namespace: mcp, selector: {{app: wiki}}, destination: "wiki-mcp.mcp.svc.cluster.local:8080"{wiki_sa}}}
"#
    )
}

async fn harness(bind: bool) -> Harness {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = yaml(&idp.issuer, bind);
    Harness::start(idp, &yaml, true).await
}

fn token(h: &Harness, aud: &str, scope: &str) -> String {
    RSA.mint(&json!({"iss": h.idp.issuer, "sub": "user-1", "aud": aud,
        "exp": now() + 300, "iat": now(), "scope": scope, "client_id": "agent"}))
}

fn peer(ip: &str, port: u32, principal: &str) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                protocol: socket_address::Protocol::Tcp as i32,
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            })),
        }),
        principal: principal.into(),
        ..Peer::default()
    }
}

/// A request to `host` as the sidecar of the workload `destination` (empty: plaintext, no
/// principal) sends it: the caller's identity in `source`, Istio's forwarded headers, no
/// context extensions.
fn istio(req: Req, host: &str, destination: &str) -> CheckRequest {
    let mut req = req
        .host(host)
        .header("x-forwarded-proto", "http")
        .header("x-request-id", "5d9a1c2e-istio")
        .header(
            "x-envoy-peer-metadata-id",
            "sidecar~10.0.0.5~agent-7d9f.agents~agents.svc.cluster.local",
        );
    if !destination.is_empty() {
        req = req.header(
            "x-forwarded-client-cert",
            &format!("By={destination};URI={CALLER_SA}"),
        );
    }
    assert!(req.context.is_empty());
    let mut proto = req.into_proto();
    let attrs = proto.attributes.as_mut().expect("attributes");
    let source = if destination.is_empty() {
        ""
    } else {
        CALLER_SA
    };
    attrs.source = Some(peer("10.0.0.5", 43210, source));
    attrs.destination = Some(peer("10.0.1.7", 8080, destination));
    proto
}

async fn send(h: &mut Harness, req: CheckRequest) -> Answer {
    Answer::from(
        h.client
            .check(req)
            .await
            .expect("Check answers")
            .into_inner(),
    )
}

fn bearer(t: &str) -> Req {
    Req::new("POST", "/mcp").header("authorization", &format!("Bearer {t}"))
}

fn assert_refused(a: &Answer, label: &str) {
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.reason(), label, "{a:?}");
    // No challenge: no token can fix where the request landed.
    assert_eq!(a.www(), None, "{a:?}");
    let body: Value = a.json();
    assert_eq!(body["error"], "forbidden", "{a:?}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{a:?}"
    );
    assert_eq!(a.grpc_code, tonic::Code::PermissionDenied as i32);
}

#[tokio::test]
async fn the_bound_workload_of_the_named_resource_is_allowed() {
    let mut h = harness(true).await;
    let files = token(&h, FILES_URI, "files:list");
    let a = send(&mut h, istio(bearer(&files), "files.example.com", FILES_SA)).await;
    assert_eq!(a.status, 200, "{a:?}");
    let wiki = token(&h, WIKI_URI, "wiki:read");
    let a = send(&mut h, istio(bearer(&wiki), "wiki.example.com", WIKI_SA)).await;
    assert_eq!(a.status, 200, "{a:?}");
    // Still a token check behind the binding: none is a 401 with the resource's challenge.
    let a = send(
        &mut h,
        istio(Req::new("POST", "/mcp"), "files.example.com", FILES_SA),
    )
    .await;
    assert_eq!(a.status, 401, "{a:?}");
}

/// The attack of issue 13 part 4: an in-mesh caller reaches the wiki workload directly with
/// the files host (and a files token), to be judged under the files policy.
#[tokio::test]
async fn another_resources_host_at_a_workload_is_refused() {
    let mut h = harness(true).await;
    let files = token(&h, FILES_URI, "files:list");
    let a = send(&mut h, istio(bearer(&files), "files.example.com", WIKI_SA)).await;
    assert_refused(&a, "destination_mismatch");
    // The other way round, and before the credentials: no token, no 401 either.
    let a = send(
        &mut h,
        istio(Req::new("POST", "/mcp"), "wiki.example.com", FILES_SA),
    )
    .await;
    assert_refused(&a, "destination_mismatch");
    // Public routes are the resource's too: the files PRM is not served by the wiki pods.
    let prm = Req::new("GET", "/.well-known/oauth-protected-resource/mcp");
    let a = send(&mut h, istio(prm.clone(), "files.example.com", WIKI_SA)).await;
    assert_refused(&a, "destination_mismatch");
    let a = send(&mut h, istio(prm, "files.example.com", FILES_SA)).await;
    assert_eq!(a.status, 200, "{a:?}");
}

#[tokio::test]
async fn a_workload_bound_to_nothing_cannot_serve_a_bound_resource() {
    let mut h = harness(true).await;
    let files = token(&h, FILES_URI, "files:list");
    for principal in [
        "spiffe://cluster.local/ns/mcp/sa/other",
        // Byte for byte: a case variant of the path is another id.
        "spiffe://cluster.local/ns/mcp/sa/Files-mcp",
        // Another trust domain with the same namespace and account.
        "spiffe://evil.example/ns/mcp/sa/files-mcp",
    ] {
        let a = send(
            &mut h,
            istio(bearer(&files), "files.example.com", principal),
        )
        .await;
        assert_refused(&a, "destination_mismatch");
    }
}

/// Plaintext (PERMISSIVE mTLS, or a caller outside the mesh): no destination principal, so the
/// workload cannot be told — fail closed.
#[tokio::test]
async fn plaintext_is_refused_while_workloads_are_bound() {
    let mut h = harness(true).await;
    let files = token(&h, FILES_URI, "files:list");
    let a = send(&mut h, istio(bearer(&files), "files.example.com", "")).await;
    assert_refused(&a, "destination_unauthenticated");
    // Without any destination peer at all, too.
    let mut bare = bearer(&files).host("files.example.com").into_proto();
    bare.attributes.as_mut().unwrap().destination = None;
    let a = send(&mut h, bare).await;
    assert_refused(&a, "destination_unauthenticated");
    let m = h.app.metrics.render();
    assert!(
        m.contains("reason=\"destination_unauthenticated\""),
        "the denial is counted: {m}"
    );
}

/// Behind the rendered Envoy a per-route context extension names the resource: the host is
/// not what chose it, so there is nothing to bind.
#[tokio::test]
async fn a_context_extension_naming_the_resource_skips_the_binding() {
    let mut h = harness(true).await;
    let files = token(&h, FILES_URI, "files:list");
    for destination in [WIKI_SA, ""] {
        let req = bearer(&files).context("mcp_authz_resource", "files");
        let mut proto = istio(Req::new("POST", "/mcp"), "files.example.com", destination);
        proto.attributes.as_mut().unwrap().context_extensions = req.context.into_iter().collect();
        let http = proto
            .attributes
            .as_mut()
            .unwrap()
            .request
            .as_mut()
            .unwrap()
            .http
            .as_mut()
            .unwrap();
        http.headers
            .insert("authorization".into(), format!("Bearer {files}"));
        let a = send(&mut h, proto).await;
        assert_eq!(a.status, 200, "{destination:?}: {a:?}");
    }
}

/// Without `service_account` or `principals` nothing is bound: the destination is not read,
/// and plaintext keeps working as before.
#[tokio::test]
async fn unbound_workloads_leave_the_decision_as_it_was() {
    let mut h = harness(false).await;
    let files = token(&h, FILES_URI, "files:list");
    for destination in [WIKI_SA, FILES_SA, ""] {
        let a = send(
            &mut h,
            istio(bearer(&files), "files.example.com", destination),
        )
        .await;
        assert_eq!(a.status, 200, "{destination:?}: {a:?}");
    }
}

/// `explain --destination`: the binding step and its answer, for the operator.
#[tokio::test]
async fn explain_shows_the_destination_step() {
    use mcp_authz::config::Config;
    use mcp_authz::explain;
    let config = Config::from_yaml(&yaml("https://iam.example.com", true)).unwrap();
    let claims = json!({"iss": "https://iam.example.com", "aud": FILES_URI, "exp": now() + 60,
        "scope": "files:list"});
    let req = |destination: Option<&str>| explain::Request {
        method: "POST".into(),
        path: "/mcp".into(),
        host: "files.example.com".into(),
        claims: Some(claims.to_string().into_bytes()),
        destination: destination.map(str::to_owned),
        ..Default::default()
    };
    let (report, allowed) = explain::run(config.clone(), req(Some(FILES_SA)), now())
        .await
        .unwrap();
    assert!(allowed, "{report}");
    assert!(
        report.contains(&format!(
            "destination        {FILES_SA:?} is bound to files"
        )),
        "{report}"
    );
    let (report, allowed) = explain::run(config.clone(), req(Some(WIKI_SA)), now())
        .await
        .unwrap();
    assert!(!allowed, "{report}");
    assert!(
        report.contains(&format!(
            "{WIKI_SA:?} is bound to wiki, the host names files"
        )),
        "{report}"
    );
    assert!(
        report.contains("decision: deny (destination_mismatch)"),
        "{report}"
    );
    assert!(report.contains("HTTP/1.1 403"), "{report}");
    let (report, allowed) = explain::run(config.clone(), req(None), now())
        .await
        .unwrap();
    assert!(!allowed, "{report}");
    assert!(
        report.contains("decision: deny (destination_unauthenticated)"),
        "{report}"
    );
    // `--resource` is Envoy's per-route context extension: nothing to bind.
    let mut named = req(Some(WIKI_SA));
    named.resource = Some("files".into());
    let (report, allowed) = explain::run(config, named, now()).await.unwrap();
    assert!(allowed, "{report}");
    assert!(
        report.contains("not checked: a context extension names the resource"),
        "{report}"
    );

    // The CLI flag.
    let dir = tempdir();
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, yaml("https://iam.example.com", true)).unwrap();
    let claims_file = dir.join("claims.json");
    std::fs::write(&claims_file, claims.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
        .arg("explain")
        .arg("--config")
        .arg(&cfg)
        .arg("--claims")
        .arg(&claims_file)
        .args(["--host", "files.example.com", "--path", "/mcp"])
        .args(["--destination", WIKI_SA])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("decision: deny (destination_mismatch)"),
        "{text}"
    );

    // `check-config` names each resource's bound workload identities.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
        .arg("check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("mesh binding (destination principal): {WIKI_SA}")),
        "{text}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Over arbitrary destination principals (near misses of the bound ids included) and hosts:
    /// a public PRM request is allowed exactly when the principal is the bound id of the
    /// resource the host names — never for another workload, a variant, or plaintext.
    #[test]
    fn only_the_bound_workload_serves_its_resource(
        host in prop::sample::select(vec![
            "files.example.com",
            "wiki.example.com",
            "files-mcp.mcp.svc.cluster.local:8080",
        ]),
        principal in prop_oneof![
            prop::sample::select(vec![FILES_SA, WIKI_SA, "", CALLER_SA]).prop_map(str::to_owned),
            "spiffe://cluster\\.local/ns/mcp/sa/(files|wiki)-mc[pP]/?",
            "spiffe://[a-z.]{0,14}/ns/mcp/sa/(files|wiki)-mcp",
            "\\PC{0,40}",
        ],
    ) {
        use mcp_authz::config::Config;
        use mcp_authz::explain;
        let config = Config::from_yaml(&yaml("https://iam.example.com", true)).unwrap();
        let req = explain::Request {
            method: "GET".into(),
            path: "/.well-known/oauth-protected-resource/mcp".into(),
            host: host.into(),
            destination: Some(principal.clone()),
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (report, allowed) = rt.block_on(explain::run(config, req, now())).unwrap();
        // The in-mesh Service name names no resource of two: refused whatever the workload.
        let bound = match host {
            "files.example.com" => Some(FILES_SA),
            "wiki.example.com" => Some(WIKI_SA),
            _ => None,
        };
        prop_assert_eq!(allowed, bound == Some(principal.as_str()), "{}", report);
    }
}
