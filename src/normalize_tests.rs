//! Tests of the normalisers: paths, authorities, resource URIs and their prefixes.

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
