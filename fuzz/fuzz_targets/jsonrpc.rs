//! Fuzz the JSON-RPC reader (`mcp::parse_body`): no panic; whatever it accepts, serde_json
//! (last duplicate wins, as `JSON.parse` and Python's `json` do) also accepts, with the same
//! number of messages and, for each, the same `method`, `params.name`, `params.uri` and
//! `params.ref` (`type`, `name`, `uri`) — the gate and the server read the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_authz::mcp::{Call, Limits, Reference, parse_body};
use serde_json::Value;

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn agree(call: &Call, msg: &Value) {
    assert!(msg.is_object(), "accepted a non-object message: {msg}");
    assert_eq!(call.method.as_deref(), str_at(msg, &["method"]), "method");
    assert_eq!(
        call.name.as_deref(),
        str_at(msg, &["params", "name"]),
        "params.name"
    );
    assert_eq!(
        call.uri.as_deref(),
        str_at(msg, &["params", "uri"]),
        "params.uri"
    );
    let reference = msg.get("params").and_then(|p| p.get("ref"));
    match (&call.reference, reference) {
        (None, None) => {}
        (Some(r), Some(v)) => {
            assert!(v.is_object(), "ref is not an object: {v}");
            match (str_at(v, &["type"]), r) {
                (Some("ref/prompt"), Reference::Prompt(name)) => {
                    assert_eq!(name.as_deref(), str_at(v, &["name"]), "ref.name")
                }
                (Some("ref/resource"), Reference::Resource(uri)) => {
                    assert_eq!(uri.as_deref(), str_at(v, &["uri"]), "ref.uri")
                }
                (Some("ref/prompt" | "ref/resource"), other) => {
                    panic!("ref type read as {other:?}: {v}")
                }
                (_, Reference::Other) => {}
                (t, other) => panic!("ref type {t:?} read as {other:?}"),
            }
        }
        (r, v) => panic!("params.ref disagrees: reader {r:?}, serde_json {v:?}"),
    }
    // `subscriptions/listen` URIs (MCP 2026-07-28), under either spelling; on a body the reader
    // accepts neither member is repeated, so serde_json's reading is the whole list.
    let mut want: Vec<&str> = ["resourceSubscriptions", "resource_subscriptions"]
        .iter()
        .filter_map(|k| msg.get("params")?.get("notifications")?.get(k)?.as_array())
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut got: Vec<&str> = call.subscriptions.iter().map(String::as_str).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "params.notifications resource URIs");
}

/// serde_json's messages for a `\uD800`-`\uDFFF` escape not part of a surrogate pair, and
/// for a number that overflows f64.
fn tolerated(e: &serde_json::Error) -> bool {
    let m = e.to_string();
    m.contains("surrogate") || m.contains("end of hex escape") || m.contains("number out of range")
}

fuzz_target!(|data: &[u8]| {
    let Ok(calls) = parse_body(data, Limits::default()) else {
        return;
    };
    let value: Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        // A lone UTF-16 surrogate escape (`"\ud800"`) or a number beyond f64 (`1e999`) in a
        // member the reader skips: JSON.parse and Python's `json` accept both (RFC 8259 §8.2,
        // §6 leave them to the implementation), serde_json's `Value` does not; in a member the
        // reader reads, both are refused. Not a disagreement.
        Err(e) if tolerated(&e) => return,
        Err(e) => panic!("accepted body is not JSON to serde_json: {e}"),
    };
    match &value {
        Value::Array(batch) => {
            assert_eq!(calls.len(), batch.len(), "batch length");
            for (c, m) in calls.iter().zip(batch) {
                agree(c, m);
            }
        }
        msg => {
            assert_eq!(calls.len(), 1, "one message");
            agree(&calls[0], msg);
        }
    }
});
