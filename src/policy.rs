//! Which resource and route a request belongs to, and what that route requires.
//! Paths are normalized here, whatever Envoy did, so no path trick reaches a route it should not.

use std::collections::HashMap;

use crate::config::{Access, Config, McpRules, RESOURCE_CONTEXT_KEY, Resource, Route, Rule};
use crate::mcp::Call;
use crate::scope::Scopes;

/// Why a request path cannot be matched safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("path contains an encoded slash, backslash or NUL")]
    EncodedSeparator,
    #[error("path contains a malformed percent escape")]
    BadEscape,
    #[error("path contains a forbidden character")]
    ForbiddenChar,
}

/// Normalize the path part of a `:path` (query and fragment dropped) the way a careful upstream
/// would read it: RFC 3986 §6.2.2.2 decoding of unreserved characters, §5.2.4 dot-segment
/// removal, merged slashes. Encoded separators (`%2F`, `%5C`, `%00`), backslashes, `;` and
/// control characters are refused outright: different servers read them differently
/// (CVE-2021-31920, CVE-2021-29492).
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let v = hex_pair(hex).ok_or(PathError::BadEscape)?;
                match v {
                    b'/' | b'\\' | 0 => return Err(PathError::EncodedSeparator),
                    c if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => {
                        decoded.push(c as char)
                    }
                    c => {
                        decoded.push('%');
                        decoded.push(char::from(b"0123456789ABCDEF"[(c >> 4) as usize]));
                        decoded.push(char::from(b"0123456789ABCDEF"[(c & 15) as usize]));
                    }
                }
                i += 3;
            }
            b'\\' | b';' => return Err(PathError::ForbiddenChar),
            c if c < 0x20 || c == 0x7f => return Err(PathError::ForbiddenChar),
            _ => {
                // Copy the whole UTF-8 sequence starting here.
                let len = utf8_len(b);
                decoded.push_str(&path[i..i + len]);
                i += len;
                continue;
            }
        }
    }
    let ends_with_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for s in &out {
        result.push('/');
        result.push_str(s);
    }
    if result.is_empty() || ends_with_slash {
        result.push('/');
    }
    Ok(result)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn hex_pair(h: &[u8]) -> Option<u8> {
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    Some(d(h[0])? << 4 | d(h[1])?)
}

/// The host part of an `:authority` (port and IPv6 brackets handled), lower-cased.
pub fn authority_host(authority: &str) -> String {
    let a = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        a.split(':').next().unwrap_or(a)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Why no resource could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceMiss {
    /// Envoy named a resource id that is not configured.
    UnknownId,
    /// Host and path fit no configured resource.
    NoMatch,
}

/// Pick the resource: Envoy's per-route `context_extensions` entry when present (authoritative),
/// else the resource whose URI host matches and whose path is the longest segment prefix of the
/// request path, else the only resource on that host, else the only resource configured.
pub fn select_resource<'c>(
    config: &'c Config,
    context_extensions: &HashMap<String, String>,
    host: &str,
    path: &str,
) -> Result<&'c Resource, ResourceMiss> {
    if let Some(id) = context_extensions.get(RESOURCE_CONTEXT_KEY) {
        return config.resource(id).ok_or(ResourceMiss::UnknownId);
    }
    if config.resources.len() == 1 {
        return Ok(&config.resources[0]);
    }
    let on_host: Vec<&Resource> = config.resources.iter().filter(|r| r.host == host).collect();
    let by_path = on_host
        .iter()
        .filter(|r| crate::config::segment_prefix(&r.path, path) || r.prm_paths[0] == path)
        .max_by_key(|r| r.path.len());
    match (by_path, on_host.as_slice()) {
        (Some(r), _) => Ok(r),
        (None, [only]) => Ok(only),
        _ => Err(ResourceMiss::NoMatch),
    }
}

/// What the matched route (or the resource default) asks of the request.
#[derive(Debug, Clone)]
pub enum Requirement<'c> {
    /// No token needed.
    Public { route: &'c str },
    /// A valid token with all of these scopes (plus what the MCP rules add for POST bodies).
    Scopes {
        route: &'c str,
        scopes: &'c Scopes,
        mcp: Option<&'c McpRules>,
    },
    /// Denied whatever the token (no route matched under default-deny).
    Deny,
}

/// Well-known PRM paths and CORS preflights never need a token (RFC 9728 §3; MCP: browser
/// clients preflight before they hold a token).
pub fn is_always_public(resource: &Resource, method: &str, path: &str, is_preflight: bool) -> bool {
    (method == "OPTIONS" && is_preflight)
        || ((method == "GET" || method == "HEAD") && resource.prm_paths.iter().any(|p| p == path))
}

/// First matching route wins; no match falls back to the resource default.
pub fn match_route<'c>(
    resource: &'c Resource,
    host: &str,
    method: &str,
    path: &str,
) -> Requirement<'c> {
    let hit = resource
        .routes
        .iter()
        .find(|r| route_matches(r, host, method, path));
    match hit {
        Some(Route {
            name,
            access: Access::Public,
            ..
        }) => Requirement::Public { route: name },
        Some(Route {
            name,
            access: Access::Scopes(scopes),
            mcp,
            ..
        }) => Requirement::Scopes {
            route: name,
            scopes,
            mcp: mcp.as_ref(),
        },
        None => match &resource.default_scopes {
            Some(scopes) => Requirement::Scopes {
                route: "default",
                scopes,
                mcp: None,
            },
            None => Requirement::Deny,
        },
    }
}

/// Which MCP rule refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum McpDenial {
    #[error("the method is denied")]
    Method,
    #[error("the tool is denied")]
    Tool,
    #[error("the resource is denied")]
    Resource,
    #[error("the prompt is denied")]
    Prompt,
}

/// Scopes the JSON-RPC messages need beyond the route's, or the rule that refuses them. Every
/// message of a batch must pass; their requirements add up.
pub fn mcp_requirement(rules: &McpRules, calls: &[Call]) -> Result<Scopes, McpDenial> {
    let mut need = Scopes::default();
    let mut add = |rule: &Rule, denial| match rule {
        Rule::Deny => Err(denial),
        Rule::Scopes(s) => {
            need.extend(s.iter().map(str::to_owned));
            Ok(())
        }
    };
    for call in calls {
        let Some(method) = call.method.as_deref() else {
            // A JSON-RPC response or result from the client: no method to authorize.
            continue;
        };
        add(
            rules.methods.get(method).unwrap_or(&rules.default_method),
            McpDenial::Method,
        )?;
        match method {
            "tools/call" => {
                let rule = call.name.as_deref().and_then(|n| rules.tools.get(n));
                add(rule.unwrap_or(&rules.default_tool), McpDenial::Tool)?;
            }
            "prompts/get" => {
                let rule = call.name.as_deref().and_then(|n| rules.prompts.get(n));
                add(rule.unwrap_or(&rules.default_prompt), McpDenial::Prompt)?;
            }
            "resources/read" | "resources/subscribe" => {
                let rule = call.uri.as_deref().and_then(|u| {
                    rules
                        .resources
                        .iter()
                        .find(|(prefix, _)| u.starts_with(prefix.as_str()))
                        .map(|(_, r)| r)
                });
                add(rule.unwrap_or(&rules.default_resource), McpDenial::Resource)?;
            }
            _ => {}
        }
    }
    Ok(need)
}

fn route_matches(r: &Route, host: &str, method: &str, path: &str) -> bool {
    r.host.as_deref().is_none_or(|h| h == host)
        && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
        && r.path.matches(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_table() {
        let ok: &[(&str, &str)] = &[
            ("/mcp", "/mcp"),
            ("/mcp?x=1", "/mcp"),
            ("/mcp?x=/../admin", "/mcp"),
            ("//mcp", "/mcp"),
            ("/./mcp", "/mcp"),
            ("/public/../mcp", "/mcp"),
            ("/a/b/../../mcp", "/mcp"),
            ("/../../mcp", "/mcp"),
            ("/%2e%2e/mcp", "/mcp"),
            ("/%2E/mcp", "/mcp"),
            ("/%6Dcp", "/mcp"),
            ("/mcp/", "/mcp/"),
            ("/mcp/.", "/mcp/"),
            ("/mcp/x/..", "/mcp/"),
            ("/", "/"),
            ("/MCP", "/MCP"),
            ("/a%20b", "/a%20b"),
            ("/a%3a", "/a%3A"),
            ("/é", "/é"),
            ("/mcp#frag", "/mcp"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_path(raw).as_deref(), Ok(*want), "{raw}");
        }
        let bad: &[(&str, PathError)] = &[
            ("mcp", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("/a%2Fmcp", PathError::EncodedSeparator),
            ("/a%2fmcp", PathError::EncodedSeparator),
            ("/a%5Cmcp", PathError::EncodedSeparator),
            ("/mcp%00", PathError::EncodedSeparator),
            ("/mcp%", PathError::BadEscape),
            ("/mcp%zz", PathError::BadEscape),
            ("/a\\mcp", PathError::ForbiddenChar),
            ("/mcp;jsessionid=1", PathError::ForbiddenChar),
            ("/mcp\u{1}", PathError::ForbiddenChar),
        ];
        for (raw, want) in bad {
            assert_eq!(normalize_path(raw), Err(*want), "{raw}");
        }
    }

    #[test]
    fn authority_host_strips_port_and_case() {
        assert_eq!(authority_host("MCP.Example.com:443"), "mcp.example.com");
        assert_eq!(authority_host("[::1]:8080"), "::1");
        assert_eq!(authority_host("example.com."), "example.com");
        assert_eq!(authority_host("127.0.0.1"), "127.0.0.1");
    }

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
}
