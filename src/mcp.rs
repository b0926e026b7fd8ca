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
    /// `params.notifications.resourceSubscriptions` (`subscriptions/listen`, MCP 2026-07-28):
    /// the resource URIs whose `notifications/resources/updated` the client asks for, which
    /// replace the `resources/subscribe` of earlier revisions. The Python SDK's models also
    /// accept the snake-case `resource_subscriptions` (pydantic `populate_by_name`; its HTTP
    /// entry reads only camelCase today), so URIs under either spelling are listed here.
    pub subscriptions: Vec<String>,
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
                    call.subscriptions = p.subscriptions;
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
    subscriptions: Vec<String>,
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
                "notifications" => p.subscriptions = map.next_value::<Filter>()?.0,
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

/// `params.notifications` of `subscriptions/listen` (MCP 2026-07-28 `SubscriptionFilter`): the
/// resource URIs it subscribes to. An object is read as strictly as `params` (a repeated member
/// is refused; `resourceSubscriptions` must be null or an array of strings, as pydantic
/// requires); any other value names no resource (no SDK accepts it as a filter).
struct Filter(Vec<String>);

impl<'de> de::Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FilterVisitor).map(Filter)
    }
}

struct FilterVisitor;

impl<'de> Visitor<'de> for FilterVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a subscription filter")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut seen = Seen::default();
        let mut uris = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            seen.add(&key)?;
            match key.as_str() {
                // The Python SDK's models accept both spellings (camelCase wins when both are
                // there): every URI either names must pass.
                "resourceSubscriptions" | "resource_subscriptions" => {
                    uris.extend(map.next_value::<Option<Vec<String>>>()?.unwrap_or_default());
                    if uris.len() > MAX_MEMBERS {
                        return Err(de::Error::custom(MEMBERS));
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(uris)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Vec::new())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }
}

/// `MCP-Protocol-Version` values of the revisions that open with `initialize` (MCP lifecycle;
/// 2024-10-07 is the TypeScript SDK's oldest). Any other value is a per-request-envelope
/// request (2026-07-28 and later), as the Python SDK 2.x routes it (`HANDSHAKE_PROTOCOL_VERSIONS`,
/// "anything else, including unknown values, goes to the modern entry").
pub const HANDSHAKE_REVISIONS: [&str; 5] = [
    "2024-10-07",
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
];

/// Methods whose target the `Mcp-Name` header carries (MCP 2026-07-28 Streamable HTTP,
/// "Standard Request Headers"; the Python SDK's `NAME_BEARING_METHODS`).
const NAME_BEARING: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];

/// Whether `MCP-Protocol-Version` makes this a 2026-07-28-style request, for which `Mcp-Method`
/// (and `Mcp-Name` where the body names a target) are REQUIRED.
pub fn is_modern(protocol_version: Option<&str>) -> bool {
    protocol_version.is_some_and(|v| !HANDSHAKE_REVISIONS.contains(&v.trim_matches([' ', '\t'])))
}

/// A header value read verbatim: visible ASCII and SP, with only SP and HTAB trimmed (RFC 9110
/// §5.5 optional whitespace; `str::trim` would also drop U+00A0, U+3000 and other Unicode
/// spaces, so a header naming `\u{a0}read_file` would pass as `read_file`).
fn plain_header(v: &str) -> Result<&str, BodyError> {
    let v = v.trim_matches([' ', '\t']);
    if v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Ok(v)
    } else {
        Err(BodyError::BadHeader)
    }
}

/// Decode an `Mcp-Name` value: plain, or the `=?base64?<b64>?=` form for values that are not
/// plain ASCII (MCP 2026-07-28 Streamable HTTP, "Value Encoding"). As the Python SDK's
/// `decode_header_value`: the markers are case-sensitive, the payload is canonical padded
/// base64 (no whitespace, no non-zero trailing bits) of UTF-8, and a malformed one matches
/// nothing (here: 400).
pub fn decode_header(v: &str) -> Result<String, BodyError> {
    let v = plain_header(v)?;
    if let Some(inner) = v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        let bytes = STANDARD.decode(inner).map_err(|_| BodyError::BadHeader)?;
        return String::from_utf8(bytes).map_err(|_| BodyError::BadHeader);
    }
    Ok(v.to_owned())
}

/// The `Mcp-Method` / `Mcp-Name` headers (and `MCP-Protocol-Version`, which says whether they
/// are required) against a parsed body: they must name the body's method and target, or the
/// request is refused (400, MCP 2026-07-28 Streamable HTTP "Server Validation": a header that
/// does not match, or a required one that is missing). mcp-authz decides on the body; the
/// check keeps anything routing on the headers from reading another request than the one
/// decided, and refuses what the MCP server would refuse anyway.
///
/// - `Mcp-Method` is compared verbatim (only `Mcp-Name` and `Mcp-Param-*` may use the base64
///   form; the Python SDK compares `Mcp-Method` to `method` as received).
/// - On a 2026-07-28 request ([`is_modern`]) `Mcp-Method` is required for a message with a
///   method, and `Mcp-Name` for `tools/call`, `prompts/get` and `resources/read` whose body
///   names a target; such a request is one message (the revision has no batches).
/// - On an older request the headers are optional, but when sent they must agree.
pub fn check_headers(
    calls: &[Call],
    protocol_version: Option<&str>,
    method_h: Option<&str>,
    name_h: Option<&str>,
) -> Result<(), BodyError> {
    let modern = is_modern(protocol_version);
    if !modern && method_h.is_none() && name_h.is_none() {
        return Ok(());
    }
    let [call] = calls else {
        // Headers describe one message; a batch with headers is ambiguous.
        return Err(BodyError::HeaderMismatch);
    };
    match method_h {
        Some(m) if call.method.as_deref() != Some(plain_header(m)?) => {
            return Err(BodyError::HeaderMismatch);
        }
        None if modern && call.method.is_some() => return Err(BodyError::HeaderMismatch),
        _ => {}
    }
    match name_h {
        Some(n) if call.target() != Some(decode_header(n)?.as_str()) => {
            Err(BodyError::HeaderMismatch)
        }
        None if modern
            && call.target().is_some()
            && call
                .method
                .as_deref()
                .is_some_and(|m| NAME_BEARING.contains(&m)) =>
        {
            Err(BodyError::HeaderMismatch)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "mcp_tests.rs"]
mod tests;
