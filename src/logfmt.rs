//! Log hygiene: values an attacker (a client, a token's claims) or a remote party (an IAM's
//! JWKS or metadata) influences are escaped before they reach either log format, so a claim
//! cannot start a forged log line (`\n`, `\r`, U+2028), drive the operator's terminal (ESC and
//! other C0/C1 controls), reorder what is displayed (Unicode bidi controls, CVE-2021-42574
//! "Trojan Source"), or fake the end of a quoted value (`"`, `\`).

use std::fmt::{self, Write as _};

/// Display `self.0` with every character that could alter how a log line reads escaped:
/// `\` and `"` as `\\` and `\"`, controls, line and paragraph separators and bidi controls
/// as `\u{…}`. Printable text, including non-ASCII letters, is left as it is.
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

/// Whether `c` must not appear raw in a log line.
fn unsafe_char(c: char) -> bool {
    c.is_control() // C0, DEL, C1 (Unicode general category Cc)
        || matches!(c,
            '\u{2028}' | '\u{2029}' // line / paragraph separator
            | '\u{200e}' | '\u{200f}' | '\u{061c}' // directional marks
            | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' // bidi embeddings, isolates
            | '\u{feff}') // BOM / zero-width no-break space
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        // Fast path: nearly every value is clean.
        if !s.chars().any(|c| c == '\\' || c == '"' || unsafe_char(c)) {
            return f.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                c if unsafe_char(c) => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// [`Escaped`] of any displayable value (errors that may quote remote input).
pub fn escaped(v: impl fmt::Display) -> String {
    Escaped(&v.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_alters_a_line_and_nothing_else() {
        let e = |s: &str| Escaped(s).to_string();
        assert_eq!(e("user-1"), "user-1");
        assert_eq!(e("Jürgen Müller 山田"), "Jürgen Müller 山田");
        assert_eq!(e("a\nb"), "a\\u{a}b");
        assert_eq!(e("a\r\nINFO forged"), "a\\u{d}\\u{a}INFO forged");
        assert_eq!(e("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(e("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(e("x\u{2028}y"), "x\\u{2028}y");
        assert_eq!(e("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(e(r#"a" b\"#), r#"a\" b\\"#);
        assert_eq!(e("\0\u{7f}"), "\\u{0}\\u{7f}");
        assert_eq!(escaped(format_args!("e: {}", "x\ny")), "e: x\\u{a}y");
    }
}
