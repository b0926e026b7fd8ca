//! The normalisers both sides of a decision must agree on: a request path as a careful
//! upstream reads it (and as a case-folding, trailing-slash-tolerant router reads it), the
//! host of an `:authority`, and the one canonical form of a resource URI (WHATWG, as the MCP
//! SDK servers read it) — or a refusal where servers may read the input differently. Pure
//! string functions with no dependency on the configuration, so that both the configuration
//! (validating rule prefixes and paths at load) and the policy (matching requests) use them.

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

/// `prefix` matches `path` on segment boundaries: `/mcp` matches `/mcp` and `/mcp/x`, not `/mcpx`.
pub fn segment_prefix(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix)
            && (prefix.ends_with('/') || path.as_bytes().get(prefix.len()) == Some(&b'/')))
}

#[cfg(test)]
#[path = "normalize_tests.rs"]
mod tests;
