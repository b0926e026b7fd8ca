//! MCP request inspection: what JSON-RPC method and target (tool, resource URI, prompt) a
//! Streamable HTTP POST carries, read strictly enough that mcp-authz and the MCP server can
//! never disagree about it, plus the 2026-07-28 `Mcp-Method` / `Mcp-Name` headers.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Why a body cannot be used for a decision. All are 400 except `TooLarge` (413).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body is missing")]
    Missing,
    #[error("request body is larger than the inspection limit")]
    TooLarge,
    #[error("request body is not a JSON-RPC message")]
    NotJsonRpc,
    #[error("request body repeats a member name")]
    DuplicateKey,
    #[error("request body nests too deeply")]
    TooDeep,
    #[error("request body batch is empty or too long")]
    BadBatch,
    #[error("Mcp-Method or Mcp-Name header is malformed")]
    BadHeader,
    #[error("Mcp-Method or Mcp-Name header disagrees with the body")]
    HeaderMismatch,
    #[error("request body has too many members in the message or its params")]
    TooManyMembers,
}

/// One JSON-RPC message as far as authorization cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Call {
    /// `None` for a response or an object without `method`.
    pub method: Option<String>,
    /// `params.name` (tools/call, prompts/get).
    pub name: Option<String>,
    /// `params.uri` (resources/read, resources/subscribe).
    pub uri: Option<String>,
    /// `params.ref` (completion/complete).
    pub reference: Option<Reference>,
}

/// The target a `completion/complete` request names (MCP schema `PromptReference` /
/// `ResourceTemplateReference`, told apart by `type` as the SDKs do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `{"type": "ref/prompt", "name": ...}`
    Prompt(Option<String>),
    /// `{"type": "ref/resource", "uri": ...}`
    Resource(Option<String>),
    /// An object with any other `type`, or none (a `ref` that is not an object is not a
    /// JSON-RPC message we read: 400).
    Other,
}

impl Call {
    /// The target the `Mcp-Name` header stands for (MCP 2026-07-28 transports).
    pub fn target(&self) -> Option<&str> {
        match self.method.as_deref() {
            Some("resources/read" | "resources/subscribe" | "resources/unsubscribe") => {
                self.uri.as_deref()
            }
            _ => self.name.as_deref(),
        }
    }
}

/// Limits on what is parsed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 65536,
            max_depth: 64,
            max_batch: 32,
        }
    }
}

/// Parse a Streamable HTTP POST body: one JSON-RPC message, or (pre-2025-06-18 clients) a
/// batch array, each element decided on its own and all required to pass.
pub fn parse_body(body: &[u8], limits: Limits) -> Result<Vec<Call>, BodyError> {
    if body.len() > limits.max_bytes {
        return Err(BodyError::TooLarge);
    }
    check_depth(body, limits.max_depth)?;
    // RFC 8259 §8.1: JSON text is UTF-8. serde_json skips the strings of members we ignore
    // without validating them; Python's `json` refuses such a body and body-parser replaces the
    // bytes, so the server would not read what we read.
    if std::str::from_utf8(body).is_err() {
        return Err(BodyError::NotJsonRpc);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de.deserialize_any(BodyVisitor {
        max_batch: limits.max_batch,
    });
    let calls = match parsed {
        Ok(c) => c,
        Err(e) => return Err(classify(&e)),
    };
    de.end().map_err(|_| BodyError::NotJsonRpc)?;
    Ok(calls)
}

const DUPLICATE: &str = "mcp-authz: duplicate member";
const BATCH: &str = "mcp-authz: bad batch";
const MEMBERS: &str = "mcp-authz: too many members";

/// Most members read in one message object or its `params` (JSON-RPC 2.0 §4 defines four
/// message members; MCP params carry a handful, tool arguments sit one level further down and
/// are skipped, not counted). Bounds the duplicate-member bookkeeping per object, which with a
/// hash set is linear in the body anyway: a 64 KiB body of ~7,000 members is refused at the
/// 129th instead of being hashed through.
pub const MAX_MEMBERS: usize = 128;

/// Member names already read in one object: a hash set, so detecting duplicates stays linear
/// (a list scan made a 64 KiB body of ~7,000 members cost tens of milliseconds of a Check
/// worker), and bounded by [`MAX_MEMBERS`].
#[derive(Default)]
struct Seen(std::collections::HashSet<String>);

impl Seen {
    /// Record `key`; a repeat or one member too many is an error.
    fn add<E: de::Error>(&mut self, key: &str) -> Result<(), E> {
        if self.0.contains(key) {
            return Err(E::custom(DUPLICATE));
        }
        if self.0.len() >= MAX_MEMBERS {
            return Err(E::custom(MEMBERS));
        }
        if !self.0.insert(key.to_owned()) {
            return Err(E::custom(DUPLICATE));
        }
        Ok(())
    }
}

fn classify(e: &serde_json::Error) -> BodyError {
    let msg = e.to_string();
    if msg.starts_with(DUPLICATE) {
        BodyError::DuplicateKey
    } else if msg.starts_with(BATCH) {
        BodyError::BadBatch
    } else if msg.starts_with(MEMBERS) {
        BodyError::TooManyMembers
    } else {
        BodyError::NotJsonRpc
    }
}

/// Count bracket nesting outside strings; deeper than `max` is refused before parsing.
fn check_depth(body: &[u8], max: usize) -> Result<(), BodyError> {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in body {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(BodyError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

struct BodyVisitor {
    max_batch: usize,
}

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Vec<Call>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message object or batch array")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(vec![MessageVisitor.visit_map(map)?])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(m) = seq.next_element::<Message>()? {
            out.push(m.0);
            if out.len() > self.max_batch {
                return Err(de::Error::custom(BATCH));
            }
        }
        if out.is_empty() {
            return Err(de::Error::custom(BATCH));
        }
        Ok(out)
    }
}

struct Message(Call);

impl<'de> de::Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MessageVisitor).map(Message)
    }
}

/// Keys are compared after JSON decoding (`"meth\u006fd"` is `method`), and any member name
/// repeated at the message level or in `params` is refused: the MCP server's parser might take
/// the other copy (a parser differential is an authorization bypass).
struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Call;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Call, A::Error> {
        let mut seen = Seen::default();
        let mut call = Call::default();
        let mut jsonrpc = None;
        while let Some(key) = map.next_key::<String>()? {
            seen.add(&key)?;
            match key.as_str() {
                "jsonrpc" => jsonrpc = Some(map.next_value::<String>()?),
                "method" => call.method = Some(map.next_value::<String>()?),
                "params" => {
                    let p = map.next_value::<Params>()?;
                    call.name = p.name;
                    call.uri = p.uri;
                    call.reference = p.reference;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if jsonrpc.as_deref() != Some("2.0") {
            return Err(de::Error::custom("jsonrpc must be \"2.0\""));
        }
        Ok(call)
    }
}

#[derive(Default)]
struct Params {
    name: Option<String>,
    uri: Option<String>,
    reference: Option<Reference>,
}

impl<'de> de::Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParamsVisitor)
    }
}

struct ParamsVisitor;

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = Params;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON-RPC params")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let mut seen = Seen::default();
        let mut p = Params::default();
        while let Some(key) = map.next_key::<String>()? {
            seen.add(&key)?;
            match key.as_str() {
                "name" => p.name = Some(map.next_value::<String>()?),
                "uri" => p.uri = Some(map.next_value::<String>()?),
                "ref" => p.reference = Some(map.next_value::<RefParam>()?.0),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }

    // By-position params carry no name or uri.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Params::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Params, E> {
        Ok(Params::default())
    }
}

struct RefParam(Reference);

impl<'de> de::Deserialize<'de> for RefParam {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RefVisitor).map(RefParam)
    }
}

/// `params.ref` of `completion/complete`: its `type`, `name` and `uri` are read with the same
/// strictness as `params` (a repeated member is refused: the server's parser takes the last;
/// a member of the wrong type is not JSON-RPC we read).
struct RefVisitor;

impl<'de> Visitor<'de> for RefVisitor {
    type Value = Reference;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a completion reference")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Reference, A::Error> {
        // The same bookkeeping as the message and `params`: linear, at most MAX_MEMBERS.
        let mut seen = Seen::default();
        let (mut kind, mut name, mut uri) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            seen.add(&key)?;
            match key.as_str() {
                "type" => kind = Some(map.next_value::<String>()?),
                "name" => name = Some(map.next_value::<String>()?),
                "uri" => uri = Some(map.next_value::<String>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match kind.as_deref() {
            Some("ref/prompt") => Reference::Prompt(name),
            Some("ref/resource") => Reference::Resource(uri),
            _ => Reference::Other,
        })
    }
}

/// Decode an `Mcp-Method` / `Mcp-Name` value: plain, or the `=?base64?<b64>?=` form for values
/// that are not plain ASCII (MCP 2026-07-28 transports). Only SP and HTAB are trimmed (RFC 9110
/// §5.5 optional whitespace): `str::trim` would also drop U+00A0, U+3000 and other Unicode
/// spaces, so a header naming `\u{a0}read_file` would pass as `read_file`.
pub fn decode_header(v: &str) -> Result<String, BodyError> {
    let v = v.trim_matches([' ', '\t']);
    if let Some(inner) = v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        let bytes = STANDARD.decode(inner).map_err(|_| BodyError::BadHeader)?;
        return String::from_utf8(bytes).map_err(|_| BodyError::BadHeader);
    }
    if v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Ok(v.to_owned())
    } else {
        Err(BodyError::BadHeader)
    }
}

/// When the request carries `Mcp-Method`/`Mcp-Name` and a single-message body, they must
/// name the same method and target, else the request is refused (400).
pub fn check_headers(
    calls: &[Call],
    method_h: Option<&str>,
    name_h: Option<&str>,
) -> Result<(), BodyError> {
    if method_h.is_none() && name_h.is_none() {
        return Ok(());
    }
    let [call] = calls else {
        // Headers describe one message; a batch with headers is ambiguous.
        return Err(BodyError::HeaderMismatch);
    };
    if let Some(m) = method_h
        && call.method.as_deref() != Some(decode_header(m)?.as_str())
    {
        return Err(BodyError::HeaderMismatch);
    }
    if let Some(n) = name_h
        && call.target() != Some(decode_header(n)?.as_str())
    {
        return Err(BodyError::HeaderMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Call>, BodyError> {
        parse_body(s.as_bytes(), Limits::default())
    }

    fn one(s: &str) -> Call {
        let mut v = parse(s).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn reads_method_and_target() {
        let c = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"}}}"#,
        );
        assert_eq!(c.method.as_deref(), Some("tools/call"));
        assert_eq!(c.target(), Some("read_file"));
        let c = one(
            r#"{"jsonrpc":"2.0","id":"x","method":"resources/read","params":{"uri":"file:///a","name":"n"}}"#,
        );
        assert_eq!(c.target(), Some("file:///a"));
        let c = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(c.method.as_deref(), Some("notifications/initialized"));
        assert_eq!(c.target(), None);
        // A response (client answering a server request) has no method.
        let c = one(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#);
        assert_eq!(c.method, None);
        // By-position and null params carry no target.
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1,2]}"#).name,
            None
        );
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":null}"#).name,
            None
        );
    }

    #[test]
    fn escapes_are_decoded_before_comparison() {
        let c = one(
            r#"{"jsonrpc":"2.0","id":1,"meth\u006fd":"tools\/call","params":{"n\u0061me":"read\u005ffile"}}"#,
        );
        assert_eq!(c.method.as_deref(), Some("tools/call"));
        assert_eq!(c.name.as_deref(), Some("read_file"));
    }

    #[test]
    fn duplicate_keys_at_each_level() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_files","name":"write_file"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{},"arguments":{}}}"#,
            // The same key spelled with an escape is the same key.
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","m\u0065thod":"tools/call"}"#,
        ] {
            assert_eq!(parse(body), Err(BodyError::DuplicateKey), "{body}");
        }
        // Duplicates deeper inside arguments do not affect the decision and are the server's business.
        assert!(parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":1,"x":2}}}"#).is_ok());
    }

    #[test]
    fn member_count_is_bounded() {
        // Three-character names in base 36: ~7,000 members fit in 64 KiB.
        let name = |i: usize| {
            let d = |x: usize| char::from_digit((x % 36) as u32, 36).unwrap();
            format!("{}{}{}", d(i / 1296), d(i / 36), d(i))
        };
        let params = |n: usize| {
            let members: Vec<String> = (0..n).map(|i| format!("\"{}\":0", name(i))).collect();
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a",{}}}}}"#,
                members.join(",")
            )
        };
        // `name` plus 127 others is the limit; one more is refused, as is a 64 KiB flood.
        assert!(parse(&params(MAX_MEMBERS - 1)).is_ok());
        assert_eq!(parse(&params(MAX_MEMBERS)), Err(BodyError::TooManyMembers));
        let flood = params(7000);
        assert!(flood.len() < 65536, "{}", flood.len());
        assert_eq!(parse(&flood), Err(BodyError::TooManyMembers));
        let top: Vec<String> = (0..7000).map(|i| format!("\"{}\":0", name(i))).collect();
        let top = format!(r#"{{"jsonrpc":"2.0","method":"x",{}}}"#, top.join(","));
        assert_eq!(parse(&top), Err(BodyError::TooManyMembers));
        // So is a completion reference: its member names were once kept in a list scanned per
        // member (quadratic; found reading the fuzz targets' coverage).
        let refs: Vec<String> = (0..7000).map(|i| format!("\"{}\":0", name(i))).collect();
        let refs = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{{"ref":{{"type":"ref/prompt",{}}}}}}}"#,
            refs.join(",")
        );
        assert!(refs.len() < 65536, "{}", refs.len());
        assert_eq!(parse(&refs), Err(BodyError::TooManyMembers));
        // A duplicate is still named as such, whatever the count.
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":1,"id":2}"#),
            Err(BodyError::DuplicateKey)
        );
        // Tool arguments are skipped, not counted: a large argument object is fine.
        let args: Vec<String> = (0..5000).map(|i| format!("\"a{i}\":0")).collect();
        let args = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{{}}}}}}}"#,
            args.join(",")
        );
        assert!(parse(&args).is_ok());
    }

    #[test]
    fn not_json_rpc() {
        for body in [
            "",
            "null",
            "42",
            "\"tools/call\"",
            "{",
            r#"{"method":"tools/call"}"#,
            r#"{"jsonrpc":"1.0","method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","method":42}"#,
            r#"{"jsonrpc":"2.0","method":null}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":7}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":"x"}"#,
            r#"{"jsonrpc":"2.0","method":"tools/list"} {"jsonrpc":"2.0"}"#,
            r#"[1]"#,
        ] {
            assert_eq!(parse(body), Err(BodyError::NotJsonRpc), "{body}");
        }
        // Non-UTF-8 bytes inside a string.
        let mut b = br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"a"#.to_vec();
        b.extend_from_slice(&[0xff, 0xfe]);
        b.extend_from_slice(br#""}}"#);
        assert_eq!(
            parse_body(&b, Limits::default()),
            Err(BodyError::NotJsonRpc)
        );
    }

    #[test]
    fn numbers_and_nulls_elsewhere_are_fine() {
        let c = one(
            r#"{"jsonrpc":"2.0","id":1e400,"method":"ping","params":{"x":null,"y":-0.5e-3,"z":[true,false,null]}}"#,
        );
        assert_eq!(c.method.as_deref(), Some("ping"));
    }

    #[test]
    fn batches() {
        let v = parse(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"write_file"}}]"#).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].name.as_deref(), Some("write_file"));
        assert_eq!(parse("[]"), Err(BodyError::BadBatch));
        let many = format!(
            "[{}]",
            vec![r#"{"jsonrpc":"2.0","method":"ping"}"#; 33].join(",")
        );
        assert_eq!(parse(&many), Err(BodyError::BadBatch));
        assert_eq!(
            parse(r#"[{"jsonrpc":"2.0","method":"a","method":"b"}]"#),
            Err(BodyError::DuplicateKey)
        );
    }

    #[test]
    fn depth_and_size_limits() {
        let deep = format!(
            r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"a","arguments":{}{}}}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(parse(&deep), Err(BodyError::TooDeep));
        // Brackets inside strings do not count.
        let s = format!(
            r#"{{"jsonrpc":"2.0","method":"ping","params":{{"s":"{}\"["}}}}"#,
            "[".repeat(100)
        );
        assert!(parse(&s).is_ok());
        let big = format!(
            r#"{{"jsonrpc":"2.0","method":"ping","params":{{"s":"{}"}}}}"#,
            "a".repeat(70000)
        );
        assert_eq!(parse(&big), Err(BodyError::TooLarge));
    }

    #[test]
    fn header_forms_and_agreement() {
        assert_eq!(decode_header("tools/call").unwrap(), "tools/call");
        assert_eq!(
            decode_header("=?base64?cmVhZF9maWxl?=").unwrap(),
            "read_file"
        );
        assert_eq!(decode_header("=?base64?5pel5pys?=").unwrap(), "日本");
        assert_eq!(decode_header("=?base64?!!?="), Err(BodyError::BadHeader));
        // Field-value whitespace is SP and HTAB only (tests/props.rs found NBSP trimmed).
        assert_eq!(decode_header(" \tread_file\t ").unwrap(), "read_file");
        for v in [
            "\u{a0}read_file",
            "read_file\u{3000}",
            "\u{85}read_file",
            "read_file\u{b}",
        ] {
            assert_eq!(decode_header(v), Err(BodyError::BadHeader), "{v:?}");
        }
        let calls = vec![Call {
            method: Some("tools/call".into()),
            name: Some("read_file".into()),
            uri: None,
            reference: None,
        }];
        assert!(check_headers(&calls, Some("tools/call"), Some("read_file")).is_ok());
        assert!(check_headers(&calls, Some("tools/call"), Some("=?base64?cmVhZF9maWxl?=")).is_ok());
        assert!(check_headers(&calls, None, None).is_ok());
        assert_eq!(
            check_headers(&calls, Some("tools/list"), None),
            Err(BodyError::HeaderMismatch)
        );
        assert_eq!(
            check_headers(&calls, Some("tools/call"), Some("list_files")),
            Err(BodyError::HeaderMismatch)
        );
        let two = vec![calls[0].clone(), calls[0].clone()];
        assert_eq!(
            check_headers(&two, Some("tools/call"), None),
            Err(BodyError::HeaderMismatch)
        );
    }
}
