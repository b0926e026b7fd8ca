//! Credentials: the one bearer token a request presents (RFC 6750 §2.1, `Authorization:
//! Bearer <b64token>`), or why it presents none usable — no credentials, malformed ones, or a
//! token in the query string, which is refused outright (§2.3; MCP authorization "Token
//! Requirements").

use crate::challenge::DenyReason;

/// The authorization scheme a token was presented with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RFC 6750 §2.1.
    Bearer,
    /// RFC 9449 §7.1: `Authorization: DPoP <token>` with a `DPoP` proof header.
    Dpop,
}

/// RFC 6750 §2.1: `Authorization: Bearer <b64token>`, scheme case-insensitive; §2.3 query
/// tokens are refused outright (MCP authorization, "Token Requirements").
pub fn bearer_token<'a>(path: &str, authorization: Option<&'a str>) -> Result<&'a str, DenyReason> {
    match access_token(path, authorization, false)? {
        (Scheme::Bearer, t) => Ok(t),
        (Scheme::Dpop, _) => Err(DenyReason::NoCredentials),
    }
}

/// [`bearer_token`], and with `dpop` also `Authorization: DPoP <token>` (RFC 9449 §7.1: the
/// same token68 syntax, scheme case-insensitive). Without `dpop` the `DPoP` scheme is one this
/// resource does not take: no credentials, as `Basic` is.
pub fn access_token<'a>(
    path: &str,
    authorization: Option<&'a str>,
    dpop: bool,
) -> Result<(Scheme, &'a str), DenyReason> {
    if query_has_access_token(path) {
        return Err(DenyReason::TokenInQuery);
    }
    let value = match authorization.map(str::trim) {
        None | Some("") => return Err(DenyReason::NoCredentials),
        Some(v) => v,
    };
    // Envoy joins repeated headers with ','; a b64token never contains one.
    if value.contains(',') {
        return Err(DenyReason::MalformedCredentials);
    }
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if dpop && scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Err(DenyReason::NoCredentials);
    };
    let token = rest.trim_start_matches(' ');
    if token.is_empty() || !is_b64token(token) {
        return Err(DenyReason::MalformedCredentials);
    }
    Ok((scheme, token))
}

/// b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="  (RFC 6750 §2.1)
fn is_b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    // A table lookup per byte: tokens are ~1 kB and this runs on every Check (3× faster than
    // the character-class test, benches/BENCHMARKS.md §5).
    !body.is_empty() && body.bytes().all(|b| B64TOKEN[usize::from(b)])
}

const B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

fn query_has_access_token(path: &str) -> bool {
    let Some((_, query)) = path.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or("");
    query.split(['&', ';']).any(|pair| {
        let key = pair.split('=').next().unwrap_or("");
        let key = key.replace('+', " ");
        percent_decode(&key).eq_ignore_ascii_case("access_token")
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64token_is_exactly_the_rfc6750_alphabet() {
        let allowed: Vec<u8> = (0..=255u8)
            .filter(|&b| is_b64token(&(b as char).to_string()))
            .collect();
        let mut expected: Vec<u8> = (b'0'..=b'9')
            .chain(b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .collect();
        expected.extend_from_slice(b"+-./_~");
        expected.sort_unstable();
        assert_eq!(allowed, expected);
        assert!(is_b64token("aZ09-._~+/=="));
        for bad in ["", "==", "a=b", "a b", "a\u{e9}", "a,b", "a\tb"] {
            assert!(!is_b64token(bad), "{bad:?}");
        }
    }

    #[test]
    fn bearer_extraction_table() {
        let cases: &[(Option<&str>, &str, Result<&str, DenyReason>)] = &[
            (None, "/mcp", Err(DenyReason::NoCredentials)),
            (Some(""), "/mcp", Err(DenyReason::NoCredentials)),
            (
                Some("Basic dXNlcjpwYXNz"),
                "/mcp",
                Err(DenyReason::NoCredentials),
            ),
            (
                Some("Bearer"),
                "/mcp",
                Err(DenyReason::MalformedCredentials),
            ),
            (
                Some("Bearer "),
                "/mcp",
                Err(DenyReason::MalformedCredentials),
            ),
            (
                Some("Bearer aaa,Bearer bbb"),
                "/mcp",
                Err(DenyReason::MalformedCredentials),
            ),
            (
                Some("Bearer a b"),
                "/mcp",
                Err(DenyReason::MalformedCredentials),
            ),
            (
                Some("Bearer a\"b"),
                "/mcp",
                Err(DenyReason::MalformedCredentials),
            ),
            (Some("Bearer abc.def.ghi"), "/mcp", Ok("abc.def.ghi")),
            (Some("bearer abc"), "/mcp", Ok("abc")),
            (Some("BEARER  abc=="), "/mcp", Ok("abc==")),
            (
                Some("Bearer abc"),
                "/mcp?access_token=x",
                Err(DenyReason::TokenInQuery),
            ),
            (
                None,
                "/mcp?a=1&access_token=x",
                Err(DenyReason::TokenInQuery),
            ),
            (None, "/mcp?access%5Ftoken=x", Err(DenyReason::TokenInQuery)),
            (
                None,
                "/mcp?x_access_token=x",
                Err(DenyReason::NoCredentials),
            ),
        ];
        for (auth, path, want) in cases {
            assert_eq!(bearer_token(path, *auth), *want, "{auth:?} {path}");
        }
    }
}
