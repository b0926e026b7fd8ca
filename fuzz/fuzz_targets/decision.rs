//! Fuzz the whole decision (`check::Authorizer::decide`) from an arbitrary request: no panic,
//! bounded time (libFuzzer `-timeout`), and every allow is justified by a fixed restatement of
//! the fuzz policy (`mcp_authz_fuzz::POLICY`) that does not call the code under test's route or
//! rule matching:
//! - an allow without a principal is a public route: `/mcp/health`, `GET /docs...`, a
//!   well-known PRM path, or a CORS preflight;
//! - an allow with a principal carries, as its bearer token, one of the harness's validly
//!   signed tokens, byte for byte, and that token's scopes (with `files:admin` implying read,
//!   write and list) cover the route's scopes and, for a POST on the MCP route, what every
//!   JSON-RPC message of the body needs as serde_json reads it (unlisted tools, prompts and
//!   resources, and completions without a prompt or resource reference, are never allowed).
//!
//! The input is an HTTP/1-like text: `METHOD PATH` on the first line, `name: value` header
//! lines (`@name: value` for Envoy `context_extensions`), a blank line, then the body. `$T0` to
//! `$T9` anywhere in the head expand to the harness's tokens (`mcp_authz_fuzz::Fixture`).
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use mcp_authz::check::{CheckInput, Decision};
use mcp_authz::mcp::{Limits, Reference, parse_body};
use mcp_authz::normalize::normalize_path;
use mcp_authz_fuzz::{FIXTURE, expand_tokens, merge_header};
use serde_json::{Value, json};

fn parse_request(data: &[u8]) -> CheckInput {
    let split = data
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or((data, &b""[..]), |i| (&data[..i], &data[i + 2..]));
    let (head, body) = split;
    let head = expand_tokens(&String::from_utf8_lossy(head));
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or("");
    let (method, path) = first.split_once(' ').unwrap_or((first, ""));
    let path = path.strip_suffix(" HTTP/1.1").unwrap_or(path);
    let mut headers = HashMap::new();
    let mut context_extensions = HashMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim_start().to_owned();
        match name.strip_prefix('@') {
            Some(key) => {
                context_extensions.insert(key.to_owned(), value);
            }
            None => merge_header(&mut headers, name, value),
        }
    }
    CheckInput {
        method: method.to_owned(),
        host: headers.get("host").cloned().unwrap_or_default(),
        path: path.to_owned(),
        headers,
        context_extensions,
        body: body.to_vec(),
        destination_principal: String::new(),
    }
}

/// `Authorization: Bearer <token>` as RFC 6750 §2.1 reads it.
fn bearer(input: &CheckInput) -> Option<&str> {
    let v = input.headers.get("authorization")?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

fn granted(scopes: &[&str]) -> Vec<String> {
    let mut g: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    if scopes.contains(&"files:admin") {
        g.extend(["files:read", "files:write", "files:list"].map(String::from));
    }
    g
}

fn s<'v>(v: Option<&'v Value>, k: &str) -> Option<&'v str> {
    v.and_then(|v| v.get(k)).and_then(Value::as_str)
}

/// What one JSON-RPC message needs under the fuzz policy; `None` when it is never allowed.
fn message_needs(msg: &Value) -> Option<Vec<&'static str>> {
    let Some(method) = msg.get("method") else {
        return Some(vec![]); // a response: nothing to authorize
    };
    let method = method.as_str()?;
    let params = msg.get("params");
    let tool = |name: Option<&str>| match name? {
        "list_files" => Some(vec!["files:list"]),
        "read_file" => Some(vec!["files:read"]),
        "write_file" => Some(vec!["files:write"]),
        _ => None,
    };
    let prompt = |name: Option<&str>| match name? {
        "summarize" => Some(vec!["files:read"]),
        "secret_prompt" => Some(vec!["files:secret"]),
        _ => None,
    };
    // What the server looks the resource up by: the WHATWG serialisation (`new URL()`, the
    // `url` crate), on segment boundaries.
    let resource = |uri: Option<&str>| {
        let url = url::Url::parse(uri?).ok()?;
        let u = url.as_str();
        let under = |p: &str| {
            u.strip_prefix(p)
                .is_some_and(|r| r.is_empty() || r.starts_with(['/', '?', '#']))
        };
        if under("file:///secret") {
            Some(vec!["files:secret"])
        } else if u.starts_with("file:///") {
            Some(vec!["files:read"])
        } else {
            None
        }
    };
    match method {
        "logging/setLevel" => Some(vec!["files:admin"]),
        "tools/call" => tool(s(params, "name")),
        "prompts/get" => prompt(s(params, "name")),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            resource(s(params, "uri"))
        }
        "completion/complete" => {
            let r = params.and_then(|p| p.get("ref"));
            match s(r, "type") {
                Some("ref/prompt") => prompt(s(r, "name")),
                Some("ref/resource") => resource(s(r, "uri")),
                _ => None,
            }
        }
        _ => Some(vec![]),
    }
}

/// `\uD800`..`\uDFFF` escapes (any case) replaced by `\uFFFD`; an escaped backslash is kept.
fn without_surrogate_escapes(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\\' && i + 1 < body.len() {
            let esc = &body[i..body.len().min(i + 6)];
            let surrogate = esc.len() == 6
                && esc[1] == b'u'
                && esc[2].eq_ignore_ascii_case(&b'd')
                && matches!(esc[3].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f')
                && esc[4..].iter().all(u8::is_ascii_hexdigit);
            if surrogate {
                out.extend_from_slice(b"\\uFFFD");
                i += 6;
            } else {
                out.extend_from_slice(&body[i..i + 2]);
                i += 2;
            }
            continue;
        }
        out.push(body[i]);
        i += 1;
    }
    out
}

/// The messages as the reader reads them, as JSON-RPC objects.
fn reader_messages(body: &[u8]) -> Value {
    let calls = parse_body(body, Limits::default()).expect("an allowed body parses");
    let reference = |r: &Option<Reference>| match r {
        None => Value::Null,
        Some(Reference::Prompt(name)) => json!({"type": "ref/prompt", "name": name}),
        Some(Reference::Resource(uri)) => json!({"type": "ref/resource", "uri": uri}),
        Some(Reference::Other) => json!({}),
    };
    Value::Array(
        calls
            .iter()
            .map(|c| match &c.method {
                None => json!({}),
                Some(m) => json!({"method": m, "params": {"name": c.name, "uri": c.uri,
                    "ref": reference(&c.reference)}}),
            })
            .collect(),
    )
}

fn identity_coding(input: &CheckInput) -> bool {
    input.headers.get("content-encoding").is_none_or(|v| {
        v.split(',')
            .map(str::trim)
            .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
    })
}

fn check_allow(input: &CheckInput, route: &str, principal: bool) {
    let f = &*FIXTURE;
    let method = input.method.to_ascii_uppercase();
    let path = normalize_path(&input.path).expect("allowed path normalises");
    if !principal {
        let ok = match route {
            "health" => path == "/mcp/health",
            "docs" => method == "GET" && (path == "/docs" || path.starts_with("/docs/")),
            "well-known" => {
                (matches!(method.as_str(), "GET" | "HEAD")
                    && path.starts_with("/.well-known/oauth-protected-resource"))
                    || (method == "OPTIONS"
                        && input.headers.contains_key("origin")
                        && input.headers.contains_key("access-control-request-method")
                        && input.body.is_empty())
            }
            _ => false,
        };
        assert!(ok, "public allow on route {route:?} for {method} {path}");
        return;
    }
    let token = bearer(input).expect("an allow with a principal has a bearer token");
    let scopes = f.valid_scopes(token).unwrap_or_else(|| {
        panic!("allowed with a token the harness did not sign as valid: {token:?}")
    });
    let granted = granted(scopes);
    let mut needs: Vec<&str> = match route {
        "read" => {
            assert!(method == "GET" && (path == "/mcp/files" || path.starts_with("/mcp/files/")));
            vec!["files:read"]
        }
        "mcp" => {
            assert!(
                path == "/mcp" || path.starts_with("/mcp/"),
                "route mcp for {path}"
            );
            vec!["files:list"]
        }
        other => panic!("allowed with a principal on route {other:?}"),
    };
    if route == "mcp" && method == "POST" {
        assert!(identity_coding(input), "content-encoded body allowed");
        // A lone UTF-16 surrogate escape or a number beyond f64 is read by JSON.parse and
        // Python's `json` but not by serde_json's `Value` (see the `jsonrpc` target): read the
        // body with surrogate escapes replaced by U+FFFD then, which keeps its structure and
        // every member the policy names (ASCII); failing that (a huge number in a member the
        // reader skips), take the messages as `mcp::parse_body` reads them, which the `jsonrpc`
        // target holds to serde_json's reading.
        let body: Value = serde_json::from_slice(&input.body)
            .or_else(|_| serde_json::from_slice(&without_surrogate_escapes(&input.body)))
            .unwrap_or_else(|e| {
                assert!(
                    e.to_string().contains("number out of range"),
                    "allowed a POST body serde_json refuses: {e}"
                );
                reader_messages(&input.body)
            });
        let messages = match &body {
            Value::Array(batch) => batch.iter().collect(),
            one => vec![one],
        };
        for m in messages {
            let need = message_needs(m)
                .unwrap_or_else(|| panic!("allowed a message the policy never allows: {m}"));
            needs.extend(need);
        }
    }
    for n in needs {
        assert!(
            granted.iter().any(|g| g == n),
            "allowed without {n} (token scopes {scopes:?}) on route {route}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let input = parse_request(data);
    let decision = f.runtime.block_on(f.authorizer.decide(&input, f.now));
    if let Decision::Allow(a) = decision {
        check_allow(&input, &a.route, a.principal.is_some());
    }
});
