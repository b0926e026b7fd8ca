//! MCP-aware authorization through gRPC Check: per-tool, per-resource and per-prompt scopes,
//! step-up challenges, strict JSON-RPC inspection and the Mcp-Method/Mcp-Name headers.

mod common;

use common::*;

const MCP_ROUTES: &str = r#"
    scope_implications:
      files:admin: [files:read, files:write, files:list]
    routes:
      - name: mcp
        path: /mcp
        methods: [GET, POST, DELETE]
        scopes: [files:list]
        mcp:
          methods: {sampling/createMessage: deny}
          tools: {list_files: [files:list], read_file: [files:read], write_file: [files:write]}
          resources: {"file:///": [files:read]}
          prompts: {summarize: [files:read]}
"#;

async fn harness() -> Harness {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", MCP_ROUTES);
    Harness::start(idp, &yaml, true).await
}

fn call(tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"path":"hello.txt"}}}}}}"#
    )
}

impl Harness {
    async fn post(&mut self, token: &str, body: &str) -> Answer {
        self.check(
            Req::new("POST", "/mcp")
                .header("authorization", &format!("Bearer {token}"))
                .body(body),
        )
        .await
    }
}

#[tokio::test]
async fn per_tool_scopes_and_step_up() {
    let mut h = harness().await;
    let list_only = RSA.mint(&h.claims("files:list"));
    // Listing and lifecycle need only the baseline.
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"server/discover"}"#,
        &call("list_files"),
    ] {
        assert_eq!(h.post(&list_only, body).await.status, 200, "{body}");
    }
    // read_file needs files:read: 403 step-up naming granted + required.
    let a = h.post(&list_only, &call("read_file")).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.reason(), "insufficient_scope");
    let www = a.www().unwrap();
    assert!(www.contains("error=\"insufficient_scope\""), "{www}");
    assert!(www.contains("scope=\"files:list files:read\""), "{www}");
    assert!(
        www.ends_with(&format!("resource_metadata=\"{PRM_URL}\"")),
        "{www}"
    );
    // After re-authorizing with the challenged scopes the call passes.
    let stepped = RSA.mint(&h.claims("files:list files:read"));
    assert_eq!(h.post(&stepped, &call("read_file")).await.status, 200);
    // write_file without files:write is refused, naming all three.
    let a = h.post(&stepped, &call("write_file")).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["scope"], "files:list files:read files:write");
    // Implications apply to tool scopes too.
    let admin = RSA.mint(&h.claims("files:admin"));
    assert_eq!(h.post(&admin, &call("write_file")).await.status, 200);
    // The body may arrive as a string (no pack_as_bytes).
    let a = h
        .check(
            Req::new("POST", "/mcp")
                .header("authorization", &format!("Bearer {stepped}"))
                .body_as_string(&call("read_file")),
        )
        .await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn denied_tools_methods_resources_prompts() {
    let mut h = harness().await;
    let admin = RSA.mint(&h.claims("files:admin"));
    for (body, reason) in [
        (call("format_disk"), "tool_denied"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#.to_owned(), "tool_denied"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}"#.to_owned(), "method_denied"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"https://evil/x"}}"#.to_owned(), "resource_denied"),
        (r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"other"}}"#.to_owned(), "prompt_denied"),
    ] {
        let a = h.post(&admin, &body).await;
        assert_eq!(a.status, 403, "{body}");
        assert_eq!(a.reason(), reason, "{body}");
        assert_eq!(a.www(), None, "policy denials carry no challenge");
    }
    let ok = r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///hello.txt"}}"#;
    assert_eq!(h.post(&admin, ok).await.status, 200);
    let ok = r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"summarize"}}"#;
    assert_eq!(h.post(&admin, ok).await.status, 200);
}

#[tokio::test]
async fn tampered_and_unusable_bodies_are_400() {
    let mut h = harness().await;
    let admin = RSA.mint(&h.claims("files:admin"));
    for (body, reason) in [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_files","name":"format_disk"}}"#,
            "body_duplicate_key",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"format_disk"}}"#,
            "body_duplicate_key",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"par\u0061ms":{"name":"b"}}"#,
            "body_duplicate_key",
        ),
        ("not json", "body_not_jsonrpc"),
        (r#"{"jsonrpc":"2.0","method":7}"#, "body_not_jsonrpc"),
        ("[]", "body_bad_batch"),
    ] {
        let a = h.post(&admin, body).await;
        assert_eq!(a.status, 400, "{body}");
        assert_eq!(a.reason(), reason, "{body}");
    }
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{}{}}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(h.post(&admin, &deep).await.reason(), "body_too_deep");
    // Missing body on a POST that needs it.
    let a = h
        .check(Req::new("POST", "/mcp").header("authorization", &format!("Bearer {admin}")))
        .await;
    assert_eq!((a.status, a.reason()), (400, "body_missing"));
    // Truncated by Envoy (allow_partial_message) or over our cap: 413.
    let a = h
        .check(
            Req::new("POST", "/mcp")
                .header("authorization", &format!("Bearer {admin}"))
                .header("x-envoy-auth-partial-body", "true")
                .body(&call("read_file")),
        )
        .await;
    assert_eq!((a.status, a.reason()), (413, "body_too_large"));
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{{"x":"{}"}}}}}}"#,
        "a".repeat(70_000)
    );
    assert_eq!(h.post(&admin, &big).await.status, 413);
    // Non-UTF-8 body bytes.
    let mut raw = Req::new("POST", "/mcp").header("authorization", &format!("Bearer {admin}"));
    raw.body =
        b"{\"jsonrpc\":\"2.0\",\"method\":\"tools/call\",\"params\":{\"name\":\"\xff\"}}".to_vec();
    assert_eq!(h.check(raw).await.status, 400);
    // Without a token the 401 comes first: discovery never depends on the body.
    let a = h.check(Req::new("POST", "/mcp").body("not json")).await;
    assert_eq!(a.status, 401);
}

#[tokio::test]
async fn batches_require_every_element() {
    let mut h = harness().await;
    let list_only = RSA.mint(&h.claims("files:list"));
    let batch = format!(
        "[{},{}]",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        call("write_file")
    );
    let a = h.post(&list_only, &batch).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["scope"], "files:list files:write");
    let batch = format!("[{},{}]", call("list_files"), call("format_disk"));
    assert_eq!(
        h.post(&RSA.mint(&h.claims("files:admin")), &batch)
            .await
            .reason(),
        "tool_denied"
    );
}

#[tokio::test]
async fn mcp_headers_must_agree_with_the_body() {
    let mut h = harness().await;
    let t = RSA.mint(&h.claims("files:admin"));
    let req = |m: &str, n: Option<&str>| {
        let mut r = Req::new("POST", "/mcp")
            .header("authorization", &format!("Bearer {t}"))
            .header("mcp-method", m)
            .body(&call("read_file"));
        if let Some(n) = n {
            r = r.header("mcp-name", n);
        }
        r
    };
    assert_eq!(
        h.check(req("tools/call", Some("read_file"))).await.status,
        200
    );
    assert_eq!(
        h.check(req("tools/call", Some("=?base64?cmVhZF9maWxl?=")))
            .await
            .status,
        200
    );
    let a = h.check(req("tools/call", Some("list_files"))).await;
    assert_eq!((a.status, a.reason()), (400, "mcp_header_mismatch"));
    let a = h.check(req("tools/list", None)).await;
    assert_eq!((a.status, a.reason()), (400, "mcp_header_mismatch"));
    let a = h.check(req("tools/call", Some("=?base64?***?="))).await;
    assert_eq!((a.status, a.reason()), (400, "mcp_header_malformed"));
}

#[tokio::test]
async fn non_post_requests_get_route_scopes_only() {
    let mut h = harness().await;
    let list_only = RSA.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("GET", "/mcp", &list_only).await.status, 200);
    assert_eq!(h.bearer("DELETE", "/mcp", &list_only).await.status, 200);
    let none = RSA.mint(&h.claims(""));
    let a = h.bearer("GET", "/mcp", &none).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["scope"], "files:list");
}

#[test]
fn seed_example_configs_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples");
    for (file, tool, scope) in [
        ("file-server.yaml", "read_file", "files:read"),
        ("database-server.yaml", "drop_table", "db:admin"),
    ] {
        let c = mcp_authz::config::Config::from_file(&dir.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let rules = c.resources[0].routes[0].mcp.as_ref().expect("mcp rules");
        assert_eq!(
            rules.tools[tool],
            mcp_authz::config::Rule::Scopes(mcp_authz::scope::Scopes::parse_space(scope)),
            "{file}"
        );
    }
}

/// The challenged scopes of a 403, as a sorted list.
fn challenged(a: &Answer) -> Vec<String> {
    let mut v: Vec<String> = a.json()["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

fn rpc(method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#)
}

#[tokio::test]
async fn step_up_required_from_yaml_names_only_the_required_scopes() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(
        &idp.issuer,
        "",
        &format!("    step_up: required\n{MCP_ROUTES}"),
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    // Granted files:list and files:write; read_file needs files:list (route) + files:read.
    let granted = RSA.mint(&h.claims("files:list files:write"));
    let a = h.post(&granted, &call("read_file")).await;
    assert_eq!((a.status, a.reason()), (403, "insufficient_scope"));
    assert_eq!(
        a.json()["scope"],
        "files:list files:read",
        "only what the operation needs, not the granted files:write"
    );
    let www = a.www().unwrap();
    assert!(www.contains("scope=\"files:list files:read\""), "{www}");
    // The default (union) on the same request, for contrast: granted + required.
    let mut h = harness().await;
    let granted = RSA.mint(&h.claims("files:list files:write"));
    let a = h.post(&granted, &call("read_file")).await;
    assert_eq!(a.json()["scope"], "files:list files:write files:read");
}

const DEFAULT_RULES: &str = r#"
    routes:
      - name: mcp
        path: /mcp
        scopes: [files:list]
        mcp:
          methods: {tools/list: [], tools/call: [], resources/read: [], resources/subscribe: [], prompts/get: []}
          default_method: [files:meta]
          tools: {read_file: [files:read]}
          default_tool: [files:tools]
          resources: {"file:///": [files:read], "file:///secret/": [files:admin]}
          default_resource: [files:res]
          prompts: {summarize: [files:read]}
          default_prompt: [files:prompts]
"#;

#[tokio::test]
async fn default_rules_as_scope_lists_and_resources_subscribe() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", DEFAULT_RULES);
    let mut h = Harness::start(idp, &yaml, true).await;
    let list_only = RSA.mint(&h.claims("files:list"));
    let read = r#"{"uri":"file:///a.txt"}"#;
    let web = r#"{"uri":"https://example.com/x"}"#;
    let secret = r#"{"uri":"file:///secret/key"}"#;
    // (message, the scope beyond files:list it needs)
    for (body, extra) in [
        (rpc("ping", "{}"), "files:meta"),
        (call("read_file"), "files:read"),
        (call("unlisted_tool"), "files:tools"),
        (rpc("resources/read", read), "files:read"),
        (rpc("resources/read", web), "files:res"),
        (rpc("resources/subscribe", read), "files:read"),
        (rpc("resources/subscribe", web), "files:res"),
        // Longest prefix wins: file:///secret/ over file:///.
        (rpc("resources/subscribe", secret), "files:admin"),
        (rpc("prompts/get", r#"{"name":"summarize"}"#), "files:read"),
        (rpc("prompts/get", r#"{"name":"other"}"#), "files:prompts"),
    ] {
        let a = h.post(&list_only, &body).await;
        assert_eq!(
            (a.status, a.reason()),
            (403, "insufficient_scope"),
            "{body}"
        );
        let mut want = vec!["files:list", extra];
        want.sort_unstable();
        assert_eq!(challenged(&a), want, "{body}");
        let granted = RSA.mint(&h.claims(&format!("files:list {extra}")));
        assert_eq!(
            h.post(&granted, &body).await.status,
            200,
            "{body} with {extra}"
        );
    }
    assert_eq!(
        h.post(&list_only, &rpc("tools/list", "{}")).await.status,
        200
    );
}

#[tokio::test]
async fn non_default_body_limits_are_applied() {
    let deep = |n: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{{"x":{}{}}}}}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    let sized = |n: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{{"x":"{}"}}}}}}"#,
            "a".repeat(n)
        )
    };
    // Under the defaults (64 levels, 64 KiB) all of these pass.
    let mut h = harness().await;
    let t = RSA.mint(&h.claims("files:admin"));
    for body in [deep(2), deep(12), sized(1000), sized(3000)] {
        assert_eq!(h.post(&t, &body).await.status, 200, "default limits");
    }
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", MCP_ROUTES).replace(
        "listen:",
        "limits: {max_json_depth: 8, max_body_bytes: 2048}\nlisten:",
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let t = RSA.mint(&h.claims("files:admin"));
    assert_eq!(h.post(&t, &deep(2)).await.status, 200);
    assert_eq!(h.post(&t, &sized(1000)).await.status, 200);
    let a = h.post(&t, &deep(12)).await;
    assert_eq!((a.status, a.reason()), (400, "body_too_deep"));
    let a = h.post(&t, &sized(3000)).await;
    assert_eq!((a.status, a.reason()), (413, "body_too_large"));
}

/// Issue 11: resource rules on the URI the SDK servers resolve, completion refs held to their
/// targets' rules, content-encoded bodies refused.
const URI_ROUTES: &str = r#"
    routes:
      - name: mcp
        path: /mcp
        scopes: [files:list]
        mcp:
          resources:
            "file:///public/": [files:list]
            "file:///secret/": [files:admin]
          prompts: {greet: [files:list], admin_report: [files:admin]}
"#;

async fn uri_harness() -> Harness {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", URI_ROUTES);
    Harness::start(idp, &yaml, true).await
}

fn read(uri: &str) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}})
        .to_string()
}

#[tokio::test]
async fn resource_uris_are_matched_as_the_server_resolves_them() {
    let mut h = uri_harness().await;
    let list = RSA.mint(&h.claims("files:list"));
    assert_eq!(h.post(&list, &read("file:///public/a")).await.status, 200);
    // `new URL()` (TS SDK) resolves these to file:///secret/k: refused, never read as public.
    for uri in [
        "file:///public/../secret/k",
        "file:///public/%2e%2e/secret/k",
        "file:///public/%2E%2E/secret/k",
        "file:///public/.%2e/secret/k",
        "file:///public\\..\\secret\\k",
        "file:///public/%2fsecret",
    ] {
        let a = h.post(&list, &read(uri)).await;
        assert_eq!(a.status, 400, "{uri}");
        assert_eq!(a.reason(), "resource_uri_ambiguous", "{uri}");
        assert_eq!(a.www(), None, "{uri}");
    }
    // Canonicalised forms of a protected URI get the protected rule (403 step-up), and an
    // unlisted one stays denied by default.
    for uri in [
        "FILE:///secret/k",
        "file://localhost/secret/k",
        "file://LocalHost/secret/k",
    ] {
        let a = h.post(&list, &read(uri)).await;
        assert_eq!(a.status, 403, "{uri}");
        assert_eq!(a.reason(), "insufficient_scope", "{uri}");
    }
    let a = h.post(&list, &read("file:///publicity")).await;
    assert_eq!(a.reason(), "resource_denied");
}

#[tokio::test]
async fn completion_refs_need_their_targets_scopes() {
    let mut h = uri_harness().await;
    let list = RSA.mint(&h.claims("files:list"));
    let admin = RSA.mint(&h.claims("files:admin files:list"));
    let complete = |r: serde_json::Value| {
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "completion/complete",
            "params": {"ref": r, "argument": {"name": "x", "value": ""}}})
        .to_string()
    };
    let secret =
        complete(serde_json::json!({"type": "ref/resource", "uri": "file:///secret/{name}"}));
    let a = h.post(&list, &secret).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.reason(), "insufficient_scope");
    assert_eq!(h.post(&admin, &secret).await.status, 200);
    let prompt = complete(serde_json::json!({"type": "ref/prompt", "name": "admin_report"}));
    assert_eq!(h.post(&list, &prompt).await.reason(), "insufficient_scope");
    assert_eq!(h.post(&admin, &prompt).await.status, 200);
    let greet = complete(serde_json::json!({"type": "ref/prompt", "name": "greet"}));
    assert_eq!(h.post(&list, &greet).await.status, 200);
    for r in [
        serde_json::json!({"type": "ref/prompt", "name": "unlisted"}),
        serde_json::json!({"type": "ref/resource", "uri": "file:///other/{x}"}),
        serde_json::json!({"type": "ref/other", "name": "greet"}),
    ] {
        let a = h.post(&admin, &complete(r.clone())).await;
        assert_eq!(a.status, 403, "{r}");
    }
    // A repeated member inside `ref` is a parser differential: 400.
    let dup = r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet","name":"admin_report"},"argument":{"name":"x","value":""}}}"#;
    assert_eq!(h.post(&list, dup).await.reason(), "body_duplicate_key");
}

#[tokio::test]
async fn content_encoded_bodies_are_415() {
    let mut h = uri_harness().await;
    let list = RSA.mint(&h.claims("files:list"));
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    for enc in [
        "gzip",
        "deflate",
        "br",
        "GZIP",
        "identity, gzip",
        "x-custom",
    ] {
        let a = h
            .check(
                Req::new("POST", "/mcp")
                    .header("authorization", &format!("Bearer {list}"))
                    .header("content-encoding", enc)
                    .body(body),
            )
            .await;
        assert_eq!(a.status, 415, "{enc}");
        assert_eq!(a.reason(), "unsupported_encoding", "{enc}");
        assert_eq!(a.json()["error"], "unsupported_media_type", "{enc}");
        assert_eq!(a.www(), None, "{enc}");
    }
    for enc in ["identity", "Identity"] {
        let a = h
            .check(
                Req::new("POST", "/mcp")
                    .header("authorization", &format!("Bearer {list}"))
                    .header("content-encoding", enc)
                    .body(body),
            )
            .await;
        assert_eq!(a.status, 200, "{enc}");
    }
}

#[tokio::test]
async fn mcp_2026_07_28_requests_through_check() {
    // MCP 2026-07-28: Mcp-Method (and Mcp-Name for tools/call) are required once
    // MCP-Protocol-Version names a non-handshake revision; subscriptions/listen is baseline and
    // each resource it subscribes to needs that resource's scope.
    let mut h = harness().await;
    let list = RSA.mint(&h.claims("files:list"));
    let read = RSA.mint(&h.claims("files:list files:read"));
    let req = |t: &str, version: &str, headers: &[(&str, &str)], body: &str| {
        let mut r = Req::new("POST", "/mcp")
            .header("authorization", &format!("Bearer {t}"))
            .header("mcp-protocol-version", version)
            .body(body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r
    };
    let discover = rpc("server/discover", "{}");
    let a = h.check(req(&list, "2026-07-28", &[], &discover)).await;
    assert_eq!((a.status, a.reason()), (400, "mcp_header_mismatch"));
    let m = [("mcp-method", "server/discover")];
    assert_eq!(
        h.check(req(&list, "2026-07-28", &m, &discover))
            .await
            .status,
        200
    );
    // The same body from a 2025-11-25 client needs no header.
    assert_eq!(
        h.check(req(&list, "2025-11-25", &[], &rpc("tools/list", "{}")))
            .await
            .status,
        200
    );
    let tool = [("mcp-method", "tools/call")];
    let a = h
        .check(req(&read, "2026-07-28", &tool, &call("read_file")))
        .await;
    assert_eq!((a.status, a.reason()), (400, "mcp_header_mismatch"));
    let both = [("mcp-method", "tools/call"), ("mcp-name", "read_file")];
    assert_eq!(
        h.check(req(&read, "2026-07-28", &both, &call("read_file")))
            .await
            .status,
        200
    );
    let listen = [("mcp-method", "subscriptions/listen")];
    let quiet = rpc(
        "subscriptions/listen",
        r#"{"notifications":{"toolsListChanged":true}}"#,
    );
    assert_eq!(
        h.check(req(&list, "2026-07-28", &listen, &quiet))
            .await
            .status,
        200
    );
    let secret = rpc(
        "subscriptions/listen",
        r#"{"notifications":{"resourceSubscriptions":["file:///etc/passwd"]}}"#,
    );
    let a = h.check(req(&list, "2026-07-28", &listen, &secret)).await;
    assert_eq!((a.status, a.reason()), (403, "insufficient_scope"));
    assert_eq!(challenged(&a), ["files:list", "files:read"]);
    assert_eq!(
        h.check(req(&read, "2026-07-28", &listen, &secret))
            .await
            .status,
        200
    );
}
