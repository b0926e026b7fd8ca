//! Tests of resource and route selection and of the MCP rules.

use super::*;

const TWO: &str = r#"
resources:
  - id: files
    uri: https://mcp.example.com/files
    issuers: [{issuer: https://iam.example.com}]
    routes:
      - {path: /files, methods: [POST], scopes: [files:list]}
      - {path_prefix: /files/public, public: true}
      - {path_prefix: /files, scopes: []}
  - id: db
    uri: https://mcp.example.com/db
    issuers: [{issuer: https://iam.example.com}]
    default_scopes: [db:query]
    routes:
      - {path: /db, host: internal.example.com, scopes: [db:admin]}
"#;

#[test]
fn resource_and_route_selection() {
    let c = Config::from_yaml(TWO).unwrap();
    let none = HashMap::new();
    let files = select_resource(&c, &none, "mcp.example.com", "/files").unwrap();
    assert_eq!(files.id, "files");
    let db = select_resource(&c, &none, "mcp.example.com", "/db/x").unwrap();
    assert_eq!(db.id, "db");
    assert_eq!(
        select_resource(&c, &none, "mcp.example.com", "/other").map(|r| r.id.as_str()),
        Err(ResourceMiss::NoMatch)
    );
    assert_eq!(
        select_resource(&c, &none, "other.example.com", "/files").map(|r| r.id.as_str()),
        Err(ResourceMiss::NoMatch)
    );
    let mut ext = HashMap::new();
    ext.insert(RESOURCE_CONTEXT_KEY.to_owned(), "db".to_owned());
    assert_eq!(select_resource(&c, &ext, "x", "/files").unwrap().id, "db");
    ext.insert(RESOURCE_CONTEXT_KEY.to_owned(), "nope".to_owned());
    assert_eq!(
        select_resource(&c, &ext, "x", "/files").map(|r| r.id.as_str()),
        Err(ResourceMiss::UnknownId)
    );

    let route = |r: &Resource, host: &str, m: &str, p: &str| match match_route(r, host, m, p) {
        Requirement::Public { route } => format!("public:{route}"),
        Requirement::Scopes { route, scopes, .. } => format!("{route}:{}", scopes.joined()),
        Requirement::Deny => "deny".into(),
        Requirement::Ambiguous => "ambiguous".into(),
    };
    assert_eq!(route(files, "h", "POST", "/files"), "route-0:files:list");
    assert_eq!(route(files, "h", "GET", "/files"), "route-2:");
    assert_eq!(
        route(files, "h", "GET", "/files/public/a"),
        "public:route-1"
    );
    assert_eq!(route(files, "h", "GET", "/filesx"), "deny");
    assert_eq!(
        route(db, "internal.example.com", "GET", "/db"),
        "route-0:db:admin"
    );
    assert_eq!(
        route(db, "mcp.example.com", "GET", "/db"),
        "default:db:query"
    );
}

#[test]
fn mcp_rules_per_method_tool_resource_prompt() {
    let c = Config::from_yaml(
        r#"
resources:
  - id: files
    uri: https://mcp.example.com/mcp
    issuers: [{issuer: https://iam.example.com}]
    routes:
      - path: /mcp
        scopes: [files:list]
        mcp:
          methods: {tools/list: [files:list], sampling/createMessage: deny}
          tools: {read_file: [files:read], write_file: [files:write], nuke: deny}
          resources: {"file:///": [files:read], "file:///secret/": [files:admin]}
          prompts: {summarize: [files:read]}
"#,
    )
    .unwrap();
    let rules = c.resources[0].routes[0].mcp.as_ref().unwrap();
    let call = |m: &str, name: Option<&str>, uri: Option<&str>| Call {
        method: Some(m.into()),
        name: name.map(Into::into),
        uri: uri.map(Into::into),
        reference: None,
        subscriptions: Vec::new(),
    };
    let req = |calls: &[Call]| mcp_requirement(rules, calls).map(|s| s.joined());
    assert_eq!(req(&[call("initialize", None, None)]), Ok("".into()));
    assert_eq!(
        req(&[call("tools/list", None, None)]),
        Ok("files:list".into())
    );
    assert_eq!(
        req(&[call("tools/call", Some("read_file"), None)]),
        Ok("files:read".into())
    );
    assert_eq!(
        req(&[call("tools/call", Some("nuke"), None)]),
        Err(McpDenial::Tool)
    );
    assert_eq!(
        req(&[call("tools/call", Some("unlisted"), None)]),
        Err(McpDenial::Tool)
    );
    assert_eq!(req(&[call("tools/call", None, None)]), Err(McpDenial::Tool));
    assert_eq!(
        req(&[call("sampling/createMessage", None, None)]),
        Err(McpDenial::Method)
    );
    assert_eq!(
        req(&[call("resources/read", None, Some("file:///a"))]),
        Ok("files:read".into())
    );
    assert_eq!(
        req(&[call("resources/read", None, Some("file:///secret/k"))]),
        Ok("files:admin".into())
    );
    assert_eq!(
        req(&[call("resources/read", None, Some("https://x"))]),
        Err(McpDenial::Resource)
    );
    assert_eq!(
        req(&[call("prompts/get", Some("summarize"), None)]),
        Ok("files:read".into())
    );
    assert_eq!(
        req(&[call("prompts/get", Some("other"), None)]),
        Err(McpDenial::Prompt)
    );
    // A batch needs everything its messages need.
    assert_eq!(
        req(&[
            call("tools/call", Some("read_file"), None),
            call("tools/call", Some("write_file"), None)
        ]),
        Ok("files:read files:write".into())
    );
    assert_eq!(
        req(&[
            call("tools/list", None, None),
            call("tools/call", Some("nuke"), None)
        ]),
        Err(McpDenial::Tool)
    );
    // Responses carry no method.
    assert_eq!(req(&[Call::default()]), Ok("".into()));
    // PRM scopes_supported defaults to the baseline: route scopes plus the list methods'.
    assert_eq!(c.resources[0].scopes_supported, vec!["files:list"]);
    assert!(c.resources[0].known_scopes.contains("files:admin"));
}

#[test]
fn contradictory_or_unreachable_mcp_rules_are_refused() {
    let base = "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    routes:\n      - path: /mcp\n";
    for (route, want) in [
        (
            "        public: true\n        mcp: {tools: {a: [x]}}\n",
            "resources[0].routes[0].mcp: a public route",
        ),
        (
            "        methods: [GET]\n        scopes: []\n        mcp: {tools: {a: [x]}}\n",
            "does not match POST",
        ),
        (
            "        scopes: []\n        mcp: {methods: {tools/call: deny}, tools: {a: [x]}}\n",
            "resources[0].routes[0].mcp.tools: unreachable",
        ),
        (
            "        scopes: []\n        mcp: {tools: {a: allow}}\n",
            "resources[0].routes[0].mcp.tools.a",
        ),
        (
            "        scopes: []\n        mcp: {default_method: deny}\n",
            "no client could connect",
        ),
        (
            // MCP 2026-07-28 clients connect with server/discover, not initialize.
            "        scopes: []\n        mcp: {default_method: deny, methods: {initialize: [], notifications/initialized: []}}\n",
            "deny would refuse server/discover",
        ),
        (
            "        scopes: []\n        mcp: {tools: {a: [\"bad scope\"]}}\n",
            "mcp.tools.a[0]",
        ),
    ] {
        let e = Config::from_yaml(&format!("{base}{route}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e:?} should contain {want:?}");
    }
}

fn uri_rules() -> Config {
    Config::from_yaml(
        r#"
resources:
  - id: files
    uri: https://mcp.example.com/mcp
    issuers: [{issuer: https://iam.example.com}]
    routes:
      - path: /mcp
        scopes: []
        mcp:
          resources:
            "FILE://localhost/public": [r:public]
            "file:///secret/": [r:secret]
            "https://Docs.Example.com:443": [r:docs]
          prompts: {greet: [p:basic], admin_prompt: [p:admin]}
"#,
    )
    .unwrap()
}

#[test]
fn resource_rules_match_the_canonical_uri() {
    let c = uri_rules();
    let rules = c.resources[0].routes[0].mcp.as_ref().unwrap();
    // The prefixes themselves were canonicalised at load.
    let prefixes: Vec<&str> = rules.resources.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        prefixes,
        [
            "https://docs.example.com/",
            "file:///secret/",
            "file:///public"
        ]
    );
    let read = |uri: &str| {
        mcp_requirement(
            rules,
            &[Call {
                method: Some("resources/read".into()),
                uri: Some(uri.into()),
                ..Call::default()
            }],
        )
        .map(|s| s.joined())
    };
    assert_eq!(read("file:///public/a"), Ok("r:public".into()));
    assert_eq!(read("file://localhost/secret/k"), Ok("r:secret".into()));
    assert_eq!(read("FILE:///SECRET/k"), Err(McpDenial::Resource));
    assert_eq!(read("file:///secret/k"), Ok("r:secret".into()));
    assert_eq!(read("HTTPS://DOCS.example.com/x"), Ok("r:docs".into()));
    // A weak prefix that names a protected resource once resolved is refused, not guessed.
    for tricky in [
        "file:///public/../secret/k",
        "file:///public/%2e%2e/secret/k",
        "file:///public/%2E%2E/%2E%2E/etc/passwd",
        "file:///public\\..\\secret\\k",
    ] {
        assert!(
            matches!(read(tricky), Err(McpDenial::BadUri(_))),
            "{tricky}"
        );
    }
    // Segment boundary: `file:///publicity` is not under `file:///public`.
    assert_eq!(read("file:///publicity"), Err(McpDenial::Resource));
    // Subscriptions and unsubscriptions name the same resources.
    for method in ["resources/subscribe", "resources/unsubscribe"] {
        let r = mcp_requirement(
            rules,
            &[Call {
                method: Some(method.into()),
                uri: Some("file:///secret/k".into()),
                ..Call::default()
            }],
        );
        assert_eq!(r.map(|s| s.joined()), Ok("r:secret".into()), "{method}");
    }
}

#[test]
fn completion_refs_are_held_to_their_targets_rules() {
    let c = uri_rules();
    let rules = c.resources[0].routes[0].mcp.as_ref().unwrap();
    let complete = |r: Option<Reference>| {
        mcp_requirement(
            rules,
            &[Call {
                method: Some("completion/complete".into()),
                reference: r,
                ..Call::default()
            }],
        )
        .map(|s| s.joined())
    };
    assert_eq!(
        complete(Some(Reference::Resource(Some(
            "file:///secret/{name}".into()
        )))),
        Ok("r:secret".into())
    );
    assert_eq!(
        complete(Some(Reference::Resource(Some("file:///other/{x}".into())))),
        Err(McpDenial::Resource)
    );
    assert!(matches!(
        complete(Some(Reference::Resource(Some(
            "file:///public/../secret/{x}".into()
        )))),
        Err(McpDenial::BadUri(_))
    ));
    assert_eq!(
        complete(Some(Reference::Prompt(Some("admin_prompt".into())))),
        Ok("p:admin".into())
    );
    assert_eq!(
        complete(Some(Reference::Prompt(Some("unlisted".into())))),
        Err(McpDenial::Prompt)
    );
    assert_eq!(
        complete(Some(Reference::Prompt(None))),
        Err(McpDenial::Prompt)
    );
    assert_eq!(complete(Some(Reference::Other)), Err(McpDenial::Prompt));
    assert_eq!(complete(None), Err(McpDenial::Prompt));
}

#[test]
fn paths_a_folding_router_reads_differently_are_refused() {
    let c = Config::from_yaml(
        r#"
resources:
  - id: files
    uri: https://mcp.example.com/mcp
    issuers: [{issuer: https://iam.example.com}]
    default_scopes: []
    routes:
      - {path: /mcp/admin, scopes: [admin]}
      - {path: /mcp, scopes: [], mcp: {tools: {wipe: [admin]}}}
      - {path_prefix: /mcp, scopes: []}
      - {path_prefix: /public, public: true}
"#,
    )
    .unwrap();
    let r = &c.resources[0];
    let route = |p: &str| match match_route(r, "h", "POST", p) {
        Requirement::Public { route } => format!("public:{route}"),
        Requirement::Scopes { route, scopes, .. } => format!("{route}:{}", scopes.joined()),
        Requirement::Deny => "deny".into(),
        Requirement::Ambiguous => "ambiguous".into(),
    };
    assert_eq!(route("/mcp"), "route-1:");
    assert_eq!(route("/mcp/admin"), "route-0:admin");
    assert_eq!(route("/mcp/x"), "route-2:");
    assert_eq!(route("/mcp/X"), "route-2:");
    assert_eq!(route("/public/A/"), "public:route-3");
    assert_eq!(route("/other"), "default:");
    // Express would dispatch these to the `/mcp` or `/mcp/admin` handler.
    for p in [
        "/MCP",
        "/Mcp",
        "/mcp/",
        "/mcp/ADMIN",
        "/mcp/admin/",
        "/MCP/Admin/",
    ] {
        assert_eq!(route(p), "ambiguous", "{p}");
    }
    // Idempotent folding.
    for p in ["/MCP/", "/", "/a/B/"] {
        assert_eq!(fold_path(&fold_path(p)), fold_path(p));
    }
}

#[test]
fn prm_and_preflight_are_public() {
    let c = Config::from_yaml(TWO).unwrap();
    let files = &c.resources[0];
    assert!(is_always_public(
        files,
        "GET",
        "/.well-known/oauth-protected-resource/files",
        false
    ));
    assert!(is_always_public(
        files,
        "GET",
        "/.well-known/oauth-protected-resource",
        false
    ));
    assert!(!is_always_public(
        files,
        "POST",
        "/.well-known/oauth-protected-resource",
        false
    ));
    assert!(is_always_public(files, "OPTIONS", "/files", true));
    assert!(!is_always_public(files, "OPTIONS", "/files", false));
}

#[test]
fn listen_subscriptions_are_held_to_their_resources_rules() {
    // MCP 2026-07-28: `subscriptions/listen` with `notifications.resourceSubscriptions`
    // replaces `resources/subscribe`. Before the fix only the method rule applied, so a
    // baseline token could follow the updates of a denied resource.
    let c = uri_rules();
    let rules = c.resources[0].routes[0].mcp.as_ref().unwrap();
    let listen = |uris: &[&str]| {
        mcp_requirement(
            rules,
            &[Call {
                method: Some("subscriptions/listen".into()),
                subscriptions: uris.iter().map(|u| (*u).to_owned()).collect(),
                ..Call::default()
            }],
        )
        .map(|s| s.joined())
    };
    assert_eq!(listen(&[]), Ok("".into()));
    assert_eq!(listen(&["file:///public/a"]), Ok("r:public".into()));
    assert_eq!(
        listen(&["file:///public/a", "file:///secret/k"]),
        Ok("r:public r:secret".into())
    );
    assert_eq!(listen(&["file:///other"]), Err(McpDenial::Resource));
    assert_eq!(
        listen(&["file:///public/a", "file:///other"]),
        Err(McpDenial::Resource)
    );
    assert!(matches!(
        listen(&["file:///public/../secret/k"]),
        Err(McpDenial::BadUri(_))
    ));
}

#[test]
fn connecting_methods_of_every_revision_are_baseline() {
    // `default_method: deny` must let both eras connect (initialize before 2026-07-28,
    // server/discover since), and what connecting needs is advertised in the PRM.
    let c = Config::from_yaml(
        r#"
resources:
  - id: files
    uri: https://mcp.example.com/mcp
    issuers: [{issuer: https://iam.example.com}]
    routes:
      - path: /mcp
        scopes: [files:list]
        mcp:
          default_method: deny
          methods:
            initialize: [files:meta]
            notifications/initialized: []
            server/discover: [files:meta]
            subscriptions/listen: [files:watch]
            tools/list: []
"#,
    )
    .unwrap();
    let r = &c.resources[0];
    assert_eq!(r.scopes_supported, ["files:list", "files:meta"]);
    let rules = r.routes[0].mcp.as_ref().unwrap();
    let req = |m: &str| {
        mcp_requirement(
            rules,
            &[Call {
                method: Some(m.into()),
                ..Call::default()
            }],
        )
        .map(|s| s.joined())
    };
    assert_eq!(req("server/discover"), Ok("files:meta".into()));
    assert_eq!(req("subscriptions/listen"), Ok("files:watch".into()));
    // A method the policy does not name (`ping`, gone in 2026-07-28) is the default's call.
    assert_eq!(req("ping"), Err(McpDenial::Method));
}
