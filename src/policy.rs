//! Which resource and route a request belongs to, and what that route requires.
//! Paths are normalized here, whatever Envoy did, so no path trick reaches a route it should not.

use std::collections::HashMap;

use crate::config::{
    Access, Config, McpRules, PathMatch, RESOURCE_CONTEXT_KEY, Resource, Route, Rule,
};
use crate::mcp::{Call, Reference};
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

/// Why a resource URI cannot be matched safely (answered 400, never guessed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("not an absolute URI")]
    NotAUri,
    #[error("contains a '.' or '..' segment")]
    DotSegment,
    #[error("contains a percent escape servers may decode differently")]
    AmbiguousEscape,
    #[error("contains a backslash, whitespace or control character")]
    ForbiddenChar,
    #[error("carries user information")]
    UserInfo,
    #[error("contains a character WHATWG parsers percent-encode differently")]
    UnsettledChar,
    #[error("contains an empty path segment")]
    EmptySegment,
    #[error("names a Windows drive letter in a file: URI")]
    DriveLetter,
}

/// The one form of a resource URI that rules are matched against: the WHATWG URL
/// serialization (URL Standard §4.4 parsing, §4.5 serializing), which is what the TypeScript
/// SDK's `McpServer` looks resources up by (`new URL(uri).toString()`) and what pydantic's
/// `AnyUrl` (the same `url` crate) yields. Differences that every WHATWG parser resolves the same
/// way are canonicalised: scheme and host case, default port, `file://localhost/` as
/// `file:///`, characters the URL Standard percent-encodes. Differences a server may resolve
/// differently are refused: dot segments (raw, or `%2e`-encoded — WHATWG resolves both, the
/// Python SDK matches the raw string, a file handler may resolve them again), encoded `/`, `\`,
/// NUL, `%` and unreserved characters (RFC 3986 §6.2.2.2 normalisers decode those, WHATWG keeps
/// them), backslashes (WHATWG reads them as `/` in special schemes only), whitespace and
/// control characters (WHATWG strips or drops them silently), user information, empty path
/// segments (the `url` crate drops leading ones in `file:` URLs, Node's parser keeps them), and
/// `^`, which WHATWG parsers of different vintage percent-encode differently.
pub fn canonical_resource_uri(raw: &str) -> Result<String, UriError> {
    refuse_ambiguous(raw)?;
    let url = url::Url::parse(raw).map_err(|_| UriError::NotAUri)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UriError::UserInfo);
    }
    let canonical: String = url.into();
    // The serialization must pass the same checks, so the canonical form is its own canonical
    // form: `https:.` parses to `https://./`, whose host reads as a `.` segment.
    refuse_ambiguous(&canonical)?;
    Ok(canonical)
}

/// The checks of [`canonical_resource_uri`] that need no parse.
fn refuse_ambiguous(raw: &str) -> Result<(), UriError> {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c <= 0x20 || c == 0x7f || c == b'\\' => return Err(UriError::ForbiddenChar),
            // U+005E (^) joined the URL Standard's path percent-encode set in 2024 (§1.3):
            // Node's parser (ada) writes `%5E`, the `url` crate and older parsers keep `^`.
            b'^' => return Err(UriError::UnsettledChar),
            b'%' => {
                let v = b
                    .get(i + 1..i + 3)
                    .and_then(hex_pair_checked)
                    .ok_or(UriError::AmbiguousEscape)?;
                if v.is_ascii_alphanumeric() || b"-._~/\\%".contains(&v) || v == 0 {
                    return Err(UriError::AmbiguousEscape);
                }
                i += 3;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    // Dot segments anywhere before the query: WHATWG removes them (URL Standard §4.4, path
    // state), RFC 3986 §5.2.4 too, an exact-string lookup does not.
    let before_query = raw.split(['?', '#']).next().unwrap_or("");
    if before_query.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(UriError::DotSegment);
    }
    // User information, even an empty one (`urn://:@`): the `url` crate drops it, Node's parser
    // refuses the URL (URL Standard §4.4 authority state); a non-empty one is refused below too.
    if let Some((_, rest)) = before_query.split_once(':')
        && let Some(authority) = rest.strip_prefix("//")
        && authority.split('/').next().unwrap_or("").contains('@')
    {
        return Err(UriError::UserInfo);
    }
    // Windows drive letters in `file:` URIs (URL Standard §4.4 "file host state", "path state",
    // "Windows drive letter"): parsers disagree on the host before one (the `url` crate reads
    // `file://LocalHost./C:` as `file:///C:`, Node's parser keeps the host) and `..` never pops
    // one. No MCP resource rule needs them, so they are refused rather than guessed.
    if let Some((scheme, rest)) = before_query.split_once(':')
        && scheme.eq_ignore_ascii_case("file")
        && rest.split('/').any(is_windows_drive_letter)
    {
        return Err(UriError::DriveLetter);
    }
    // Empty segments (`//`) after the authority's own `//`: the `url` crate drops leading ones
    // in `file:` URLs (`file://///secret/` becomes `file:///secret/`) where Node's parser keeps
    // them (URL Standard §4.4 file host state, path state), and file handlers merge them.
    if let Some((_, rest)) = before_query.split_once(':') {
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        if rest.contains("//") {
            return Err(UriError::EmptySegment);
        }
    }
    Ok(())
}

/// A path segment that is exactly a Windows drive letter: an ASCII letter then `:` or `|`.
fn is_windows_drive_letter(seg: &str) -> bool {
    matches!(seg.as_bytes(), [l, b':' | b'|'] if l.is_ascii_alphabetic())
}

fn hex_pair_checked(h: &[u8]) -> Option<u8> {
    (h.len() == 2 && h.iter().all(u8::is_ascii_hexdigit)).then(|| hex_pair(h))?
}

/// A canonical resource-rule prefix matches a canonical URI on a segment boundary:
/// `file:///public` matches `file:///public` and `file:///public/a`, not `file:///publicity`; a
/// prefix ending in `/` or `:` (`file:///`, `urn:isbn:`) matches whatever follows it.
pub fn uri_prefix_matches(prefix: &str, uri: &str) -> bool {
    uri.strip_prefix(prefix).is_some_and(|rest| {
        rest.is_empty() || prefix.ends_with(['/', ':']) || rest.starts_with(['/', '?', '#'])
    })
}

/// A normalized path as a case-insensitive, trailing-slash-tolerant router reads it: Express 5
/// (the TypeScript SDK's `createMcpExpressApp`) routes with `caseSensitive: false` and
/// `strict: false` by default, so `/MCP` and `/mcp/` dispatch to the `/mcp` handler. ASCII case
/// only: JavaScript's case-insensitive RegExp (ECMA-262 §22.2.2.7.3 Canonicalize) never maps a
/// non-ASCII character to an ASCII one.
pub fn fold_path(path: &str) -> String {
    let mut p = path.to_ascii_lowercase();
    if p.len() > 1 && p.ends_with('/') {
        p.pop();
    }
    p
}

/// Why no resource could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceMiss {
    /// Envoy named a resource id that is not configured.
    UnknownId,
    /// Host and path fit no configured resource.
    NoMatch,
    /// The path's exact form and its case-folded, trailing-slash-free form select different
    /// resources: which one the server would serve depends on its router, so neither is guessed.
    Ambiguous,
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
    let pick = |fold: bool| {
        let by_path = on_host
            .iter()
            .filter(|r| {
                if fold {
                    let p = fold_path(path);
                    crate::config::segment_prefix(&fold_path(&r.path), &p)
                        || fold_path(&r.prm_paths[0]) == p
                } else {
                    crate::config::segment_prefix(&r.path, path) || r.prm_paths[0] == path
                }
            })
            .max_by_key(|r| r.path.len());
        match (by_path, on_host.as_slice()) {
            (Some(r), _) => Ok(*r),
            (None, [only]) => Ok(*only),
            _ => Err(ResourceMiss::NoMatch),
        }
    };
    let exact = pick(false);
    match (exact, pick(true)) {
        (Ok(a), Ok(b)) if !std::ptr::eq(a, b) => Err(ResourceMiss::Ambiguous),
        (Err(_), Ok(_)) => Err(ResourceMiss::Ambiguous),
        _ => exact,
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
    /// The exact path and the path as a case-insensitive, trailing-slash-tolerant router reads
    /// it (`fold_path`) match different routes (or one matches a route and the other the
    /// default): refused (400), since either reading could be the weaker one — Express folds,
    /// Starlette does not.
    Ambiguous,
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
    let exact = resource
        .routes
        .iter()
        .position(|r| route_matches(r, host, method, path));
    let folded_path = fold_path(path);
    let folded = resource
        .routes
        .iter()
        .position(|r| route_matches_folded(r, host, method, &folded_path));
    if exact != folded {
        return Requirement::Ambiguous;
    }
    match exact.map(|i| &resource.routes[i]) {
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
    /// Not a rule's verdict: the resource URI cannot be matched safely (400).
    #[error("the resource URI is ambiguous: {0}")]
    BadUri(UriError),
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
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                add(
                    resource_rule(rules, call.uri.as_deref())?,
                    McpDenial::Resource,
                )?;
            }
            // A completion names a prompt or a resource template; it is held to that target's
            // rule, or a client without the target's scope could enumerate what it protects.
            "completion/complete" => match &call.reference {
                Some(Reference::Prompt(name)) => {
                    let rule = name.as_deref().and_then(|n| rules.prompts.get(n));
                    add(rule.unwrap_or(&rules.default_prompt), McpDenial::Prompt)?;
                }
                Some(Reference::Resource(uri)) => {
                    add(resource_rule(rules, uri.as_deref())?, McpDenial::Resource)?;
                }
                // No usable reference: the SDKs refuse it, and it must need at least what
                // an unlisted prompt and an unlisted resource need.
                Some(Reference::Other) | None => {
                    add(&rules.default_prompt, McpDenial::Prompt)?;
                    add(&rules.default_resource, McpDenial::Resource)?;
                }
            },
            _ => {}
        }
    }
    Ok(need)
}

/// The rule for a resource URI: the longest configured prefix (canonical, see
/// [`canonical_resource_uri`]) that matches the URI's canonical form on a segment boundary.
fn resource_rule<'r>(rules: &'r McpRules, uri: Option<&str>) -> Result<&'r Rule, McpDenial> {
    let Some(uri) = uri else {
        return Ok(&rules.default_resource);
    };
    let canonical = canonical_resource_uri(uri).map_err(McpDenial::BadUri)?;
    Ok(rules
        .resources
        .iter()
        .find(|(prefix, _)| uri_prefix_matches(prefix, &canonical))
        .map_or(&rules.default_resource, |(_, r)| r))
}

fn route_matches(r: &Route, host: &str, method: &str, path: &str) -> bool {
    r.host.as_deref().is_none_or(|h| h == host)
        && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
        && r.path.matches(path)
}

/// [`route_matches`] for a folded path against the route's folded pattern.
fn route_matches_folded(r: &Route, host: &str, method: &str, folded_path: &str) -> bool {
    r.host.as_deref().is_none_or(|h| h == host)
        && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
        && match &r.path {
            PathMatch::Exact(p) => fold_path(p) == folded_path,
            PathMatch::Prefix(p) => crate::config::segment_prefix(&fold_path(p), folded_path),
        }
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
    fn resource_uris_canonical_or_refused() {
        let ok: &[(&str, &str)] = &[
            ("file:///public/a", "file:///public/a"),
            ("FILE:///public/a", "file:///public/a"),
            ("file://localhost/secret/k", "file:///secret/k"),
            ("file://LOCALHOST/secret/k", "file:///secret/k"),
            (
                "HTTPS://MCP.Example.COM:443/public",
                "https://mcp.example.com/public",
            ),
            ("https://mcp.example.com", "https://mcp.example.com/"),
            ("file:///a%20b", "file:///a%20b"),
            ("file:///é", "file:///%C3%A9"),
            ("docs://secret/{id}", "docs://secret/%7Bid%7D"),
            ("config://app", "config://app"),
            ("urn:isbn:123", "urn:isbn:123"),
            (
                "file:///public/a?x=../../secret",
                "file:///public/a?x=../../secret",
            ),
            ("https://0x7f.1/x", "https://127.0.0.1/x"),
        ];
        for (raw, want) in ok {
            assert_eq!(canonical_resource_uri(raw).as_deref(), Ok(*want), "{raw}");
            // Idempotent: the canonical form is its own canonical form.
            assert_eq!(canonical_resource_uri(want).as_deref(), Ok(*want), "{want}");
        }
        let bad: &[(&str, UriError)] = &[
            ("file:///public/../secret/k", UriError::DotSegment),
            ("file:///public/./a", UriError::DotSegment),
            ("file:///public/..", UriError::DotSegment),
            ("docs://x/a/../b", UriError::DotSegment),
            ("file:///public/%2e%2e/secret/k", UriError::AmbiguousEscape),
            ("file:///public/%2E./secret/k", UriError::AmbiguousEscape),
            ("file:///public%2f..%2fsecret", UriError::AmbiguousEscape),
            ("file:///public/%5c..", UriError::AmbiguousEscape),
            ("file:///%73ecret/k", UriError::AmbiguousEscape),
            ("file:///a%00", UriError::AmbiguousEscape),
            ("file:///a%252e", UriError::AmbiguousEscape),
            ("file:///a%zz", UriError::AmbiguousEscape),
            ("file:///a%4", UriError::AmbiguousEscape),
            ("file:///public\\..\\secret", UriError::ForbiddenChar),
            ("file:///pub\tlic/a", UriError::ForbiddenChar),
            (" file:///public/a", UriError::ForbiddenChar),
            ("file:///a b", UriError::ForbiddenChar),
            // Found by tests/props.rs: ada writes `%5E`, the `url` crate `^`.
            ("file:///public/^", UriError::UnsettledChar),
            // Found by tests/props.rs: the `url` crate reads `file:///secret/`, ada keeps `///`.
            ("file://///secret/", UriError::EmptySegment),
            ("file:////secret/k", UriError::EmptySegment),
            ("https://api.example.com/public//x", UriError::EmptySegment),
            // Found by tests/props.rs: accepted as `https://./`, which it then refused.
            ("https:.", UriError::DotSegment),
            // Found by tests/props.rs: the `url` crate reads `file:///C:`, ada keeps the host.
            ("file://LocalHost./C:", UriError::DriveLetter),
            // Found by tests/props.rs: the `url` crate reads `urn://`, ada refuses it.
            ("urn://:@", UriError::UserInfo),
            ("https://@api.example.com/public", UriError::UserInfo),
            ("file:///public/C|/x", UriError::DriveLetter),
            ("FILE://C:/secret", UriError::DriveLetter),
            ("https://public@secret.example/", UriError::UserInfo),
            ("public/a", UriError::NotAUri),
            ("", UriError::NotAUri),
            ("https://", UriError::NotAUri),
        ];
        for (raw, want) in bad {
            assert_eq!(canonical_resource_uri(raw), Err(*want), "{raw}");
        }
    }

    #[test]
    fn uri_prefixes_match_on_segment_boundaries() {
        assert!(uri_prefix_matches("file:///public", "file:///public"));
        assert!(uri_prefix_matches("file:///public", "file:///public/a"));
        assert!(uri_prefix_matches("file:///public", "file:///public?x"));
        assert!(!uri_prefix_matches("file:///public", "file:///publicity"));
        assert!(uri_prefix_matches("file:///public/", "file:///public/a"));
        assert!(!uri_prefix_matches("file:///public/", "file:///public"));
        assert!(uri_prefix_matches("urn:isbn:", "urn:isbn:123"));
        assert!(!uri_prefix_matches("docs://public", "docs://public.evil/x"));
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
}
