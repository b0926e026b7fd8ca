//! Tests of `mcp.rs`: the JSON-RPC reader and the `Mcp-Method` / `Mcp-Name` headers.

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
        subscriptions: Vec::new(),
    }];
    assert!(check_headers(&calls, None, Some("tools/call"), Some("read_file")).is_ok());
    assert!(
        check_headers(
            &calls,
            None,
            Some("tools/call"),
            Some("=?base64?cmVhZF9maWxl?=")
        )
        .is_ok()
    );
    assert!(check_headers(&calls, None, None, None).is_ok());
    assert_eq!(
        check_headers(&calls, None, Some("tools/list"), None),
        Err(BodyError::HeaderMismatch)
    );
    assert_eq!(
        check_headers(&calls, None, Some("tools/call"), Some("list_files")),
        Err(BodyError::HeaderMismatch)
    );
    let two = vec![calls[0].clone(), calls[0].clone()];
    assert_eq!(
        check_headers(&two, None, Some("tools/call"), None),
        Err(BodyError::HeaderMismatch)
    );
}

#[test]
fn header_decoding_matches_the_python_sdk() {
    // Expected values from the Python SDK 2.3.0's `mcp.shared.inbound.decode_header_value`
    // (`None` there is a header that matches no body value; here it is a 400).
    for (header, python) in [
        ("=?base64?cmVhZF9maWxl?=", Some("read_file")),
        ("=?base64?YQ==?=", Some("a")),
        ("=?base64?YQ?=", None),
        ("=?base64?YR==?=", None),
        ("=?base64?YQ=?=", None),
        ("=?base64? YQ==?=", None),
        ("=?base64?YQ==\t?=", None),
        ("=?BASE64?YQ==?=", Some("=?BASE64?YQ==?=")),
        ("=?base64??=", Some("")),
        ("=?base64?=", Some("=?base64?=")),
        ("=?base64?YQ==?=?=", None),
        ("=?base64?/w==?=", None),
        ("=?base64?AA==?=", Some("\0")),
        ("=?base64?5pel5pys?=", Some("日本")),
        ("=?base64?cmVhZA==?=x", Some("=?base64?cmVhZA==?=x")),
        ("x=?base64?cmVhZA==?=", Some("x=?base64?cmVhZA==?=")),
        ("=?base64?-_8=?=", None),
        (
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=",
            Some("=?base64?literal?="),
        ),
    ] {
        assert_eq!(decode_header(header).ok().as_deref(), python, "{header:?}");
    }
}

#[test]
fn mcp_method_is_compared_verbatim() {
    // Only Mcp-Name (and Mcp-Param-*) may carry the base64 form (MCP 2026-07-28 "Value
    // Encoding"); the Python SDK compares Mcp-Method to `method` as received, so an encoded
    // Mcp-Method never matches. Before the fix mcp-authz decoded it and let it through.
    let call = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    let calls = [call];
    assert!(check_headers(&calls, None, Some("tools/list"), None).is_ok());
    assert_eq!(
        check_headers(&calls, None, Some("=?base64?dG9vbHMvbGlzdA==?="), None),
        Err(BodyError::HeaderMismatch)
    );
    assert_eq!(
        check_headers(&calls, Some("2026-07-28"), Some("tools/lis\u{e9}"), None),
        Err(BodyError::BadHeader)
    );
}

#[test]
fn a_2026_request_must_carry_its_headers() {
    // MCP 2026-07-28 Streamable HTTP "Standard Request Headers": Mcp-Method for all requests,
    // Mcp-Name for tools/call, resources/read and prompts/get ("Server Validation": a missing
    // required header is a validation failure, 400).
    let v = Some("2026-07-28");
    let call = |s: &str| vec![one(s)];
    let list = call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    let tool =
        call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file"}}"#);
    let read =
        call(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#);
    let listen = call(
        r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["file:///a"]}}}"#,
    );
    let mismatch = Err(BodyError::HeaderMismatch);
    assert_eq!(check_headers(&list, v, None, None), mismatch);
    assert!(check_headers(&list, v, Some("tools/list"), None).is_ok());
    assert_eq!(check_headers(&tool, v, Some("tools/call"), None), mismatch);
    assert!(check_headers(&tool, v, Some("tools/call"), Some("read_file")).is_ok());
    assert_eq!(
        check_headers(&read, v, Some("resources/read"), None),
        mismatch
    );
    assert!(check_headers(&read, v, Some("resources/read"), Some("file:///a")).is_ok());
    // subscriptions/listen names resources, but no Mcp-Name is defined for it.
    assert!(check_headers(&listen, v, Some("subscriptions/listen"), None).is_ok());
    // A tools/call without a name has no Mcp-Name to send (the SDK compares only when the
    // body has the value).
    let nameless = call(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#);
    assert!(check_headers(&nameless, v, Some("tools/call"), None).is_ok());
    // Unknown revisions are modern too (the Python SDK routes them so); older ones are not.
    assert_eq!(
        check_headers(&list, Some("2027-01-01"), None, None),
        mismatch
    );
    assert_eq!(
        check_headers(&list, Some("2025-11-25,2026-07-28"), None, None),
        mismatch
    );
    for old in [
        None,
        Some("2025-06-18"),
        Some(" 2025-11-25 "),
        Some("2024-11-05"),
    ] {
        assert!(check_headers(&list, old, None, None).is_ok(), "{old:?}");
        assert!(
            check_headers(&tool, old, Some("tools/call"), None).is_ok(),
            "{old:?}"
        );
    }
    // The 2026-07-28 revision has no batches: one with headers or without is refused.
    let batch = parse(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#).unwrap();
    assert_eq!(check_headers(&batch, v, None, None), mismatch);
    assert!(check_headers(&batch, None, None, None).is_ok());
}

#[test]
fn listen_filters_name_their_resources() {
    let c = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"_meta":{},"notifications":{"toolsListChanged":true,"resourceSubscriptions":["file:///a","file:///b"]}}}"#,
    );
    assert_eq!(c.subscriptions, ["file:///a", "file:///b"]);
    // The Python SDK also takes the snake-case spelling (pydantic populate_by_name): both count.
    let c = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["file:///a"],"resource_subscriptions":["file:///s"]}}}"#,
    );
    assert_eq!(c.subscriptions, ["file:///a", "file:///s"]);
    for quiet in [
        r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":null}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"notifications":true}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"notifications":[1,{"a":2}]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"notifications":"s"}}"#,
    ] {
        assert!(one(quiet).subscriptions.is_empty(), "{quiet}");
    }
    // Read as strictly as params: a repeat (the server takes the last) or a non-string URI is
    // refused, and so is a flood of URIs.
    assert_eq!(
        parse(
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["file:///a"],"resourceSubscriptions":["file:///s"]}}}"#
        ),
        Err(BodyError::DuplicateKey)
    );
    assert_eq!(
        parse(
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":[1]}}}"#
        ),
        Err(BodyError::NotJsonRpc)
    );
    assert_eq!(
        parse(
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":"file:///s"}}}"#
        ),
        Err(BodyError::NotJsonRpc)
    );
    let flood: Vec<String> = (0..=MAX_MEMBERS).map(|i| format!("\"u:{i}\"")).collect();
    let flood = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{{"notifications":{{"resourceSubscriptions":[{}]}}}}}}"#,
        flood.join(",")
    );
    assert_eq!(parse(&flood), Err(BodyError::TooManyMembers));
}
