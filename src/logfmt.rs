//! Log hygiene: values an attacker (a client, a token's claims) or a remote party (an IAM's
//! JWKS or metadata) influences are escaped before they reach either log format, so a claim
//! cannot start a forged log line (`\n`, `\r`, U+2028), drive the operator's terminal (ESC and
//! other C0/C1 controls), reorder what is displayed (Unicode bidi controls, CVE-2021-42574
//! "Trojan Source"), or fake the end of a quoted value (`"`, `\`).

use std::fmt::{self, Write as _};

use tracing::field::Field;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{self, Writer};

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

/// The text format's field formatter: `name=value`, space-delimited, with a value quoted when it
/// is empty or holds whitespace or `=` (logfmt's rule). tracing's default writes a displayed
/// value bare, so a scope list or a `sub` of `alice role=admin` would read as extra fields.
/// Values that reach here are [`Escaped`] (their `"` and `\` already escaped) or the service's
/// own; string literals arrive already quoted by their `Debug` form.
pub fn text_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    format::debug_fn(
        |w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug| {
            if field.name() == "message" {
                return write!(w, "{value:?}");
            }
            let v = format!("{value:?}");
            let quote = !v.starts_with('"')
                && (v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '='));
            if quote {
                write!(w, "{}=\"{v}\"", field.name())
            } else {
                write!(w, "{}={v}", field.name())
            }
        },
    )
    .delimited(" ")
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

    #[test]
    fn text_format_quotes_values_that_could_read_as_fields() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(text_fields())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                subject = %Escaped("alice decision=allow"),
                scope = %Escaped("files:list files:read"),
                client = %Escaped("app"),
                empty = %Escaped(""),
                quoted = %Escaped("a\" b=c"),
                literal = "x y",
                "decided"
            );
        });
        let line = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            line.contains(
                r#"decided subject="alice decision=allow" scope="files:list files:read" client=app empty="" quoted="a\" b=c" literal="x y""#
            ),
            "{line}"
        );
    }
}
