//! OAuth scope lists: parsing the claims that carry scopes (`scope`, `scp`, `roles`,
//! `permissions`) strictly, and keeping configured order.

use std::collections::BTreeSet;

use serde_json::Value;

/// A set of scopes used for membership tests.
pub type ScopeSet = BTreeSet<String>;

/// An ordered, de-duplicated scope list (order matters for readable challenges and headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<String>);

impl Scopes {
    pub fn new(items: impl IntoIterator<Item = String>) -> Scopes {
        let mut v: Vec<String> = Vec::new();
        for s in items {
            if !s.is_empty() && !v.contains(&s) {
                v.push(s);
            }
        }
        Scopes(v)
    }

    /// RFC 6749 §3.3: a space-delimited list.
    pub fn parse_space(s: &str) -> Scopes {
        Scopes::new(s.split(' ').filter(|x| !x.is_empty()).map(str::to_owned))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, s: &str) -> bool {
        self.0.iter().any(|x| x == s)
    }

    /// Space-joined, as in a `scope` claim or challenge attribute.
    pub fn joined(&self) -> String {
        self.0.join(" ")
    }

    pub fn extend(&mut self, other: impl IntoIterator<Item = String>) {
        for s in other {
            if !s.is_empty() && !self.0.contains(&s) {
                self.0.push(s);
            }
        }
    }
}

impl IntoIterator for Scopes {
    type Item = String;
    type IntoIter = std::vec::IntoIter<String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Why a scope-carrying claim is unusable: the token is malformed (401 `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimValueError {
    #[error("scope claim is neither a string nor an array of strings")]
    WrongType,
    #[error("scope claim has an empty item")]
    EmptyItem,
    #[error("scope claim item contains a control character or a space")]
    BadCharacter,
}

/// The scopes one claim carries, parsed strictly. The IdPs disagree on the shape:
/// - a string is a space-delimited list (RFC 6749 §3.3, RFC 8693 §4.2, RFC 9068 §2.2.3):
///   Keycloak, Casdoor/Hanzo IAM and Auth0 `scope`, Entra `scp`;
/// - an array holds one scope per item: Okta `scp`, Auth0 `permissions`, Entra `roles`.
///
/// A scope-token is `1*( %x21 / %x23-5B / %x5D-7E )` (RFC 6749 §3.3), so an empty item (two
/// spaces in a row, a leading or trailing space, `""` in an array), a space inside an array
/// item, or a control character anywhere is not a scope list we can read the way the IdP
/// meant: the token is refused rather than guessed at. (Non-ASCII is left alone: some IdPs let
/// administrators name roles freely; such names never match a configured scope by accident.)
/// The empty string is the empty list (Casdoor sends `"scope": ""` when none was requested);
/// `null` is an absent claim.
pub struct ClaimValue;

impl ClaimValue {
    pub fn parse(v: &Value) -> Result<Scopes, ClaimValueError> {
        match v {
            Value::Null => Ok(Scopes::default()),
            Value::String(s) if s.is_empty() => Ok(Scopes::default()),
            Value::String(s) => {
                // Every item is checked before any is kept.
                s.split(' ').try_for_each(check_item)?;
                Ok(Scopes::new(s.split(' ').map(str::to_owned)))
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    let s = i.as_str().ok_or(ClaimValueError::WrongType)?;
                    if s.contains(' ') {
                        return Err(ClaimValueError::BadCharacter);
                    }
                    check_item(s)?;
                    out.push(s.to_owned());
                }
                Ok(Scopes::new(out))
            }
            Value::Bool(_) | Value::Number(_) | Value::Object(_) => Err(ClaimValueError::WrongType),
        }
    }
}

fn check_item(s: &str) -> Result<(), ClaimValueError> {
    if s.is_empty() {
        return Err(ClaimValueError::EmptyItem);
    }
    if s.chars().any(char::is_control) {
        return Err(ClaimValueError::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_value_shapes() {
        let ok = |v: Value| ClaimValue::parse(&v).map(|s| s.joined());
        // Strings: space-delimited (Keycloak, Casdoor, Auth0 scope; Entra scp).
        assert_eq!(
            ok(json!("openid files:read")),
            Ok("openid files:read".into())
        );
        assert_eq!(ok(json!("a b a")), Ok("a b".into()));
        assert_eq!(ok(json!("")), Ok(String::new()));
        assert_eq!(ok(Value::Null), Ok(String::new()));
        // Arrays: one scope per item (Okta scp, Auth0 permissions, Entra roles).
        assert_eq!(
            ok(json!(["read:files", "Files.Read.All"])),
            Ok("read:files Files.Read.All".into())
        );
        assert_eq!(ok(json!([])), Ok(String::new()));
        assert_eq!(ok(json!(["ä:ö"])), Ok("ä:ö".into()));
        // Not a scope list.
        for (bad, why) in [
            (json!(7), ClaimValueError::WrongType),
            (json!(true), ClaimValueError::WrongType),
            (json!({"scope": "a"}), ClaimValueError::WrongType),
            (json!(["a", 7]), ClaimValueError::WrongType),
            (json!(["a", null]), ClaimValueError::WrongType),
            (json!([["a"]]), ClaimValueError::WrongType),
            (json!("a  b"), ClaimValueError::EmptyItem),
            (json!(" a"), ClaimValueError::EmptyItem),
            (json!("a "), ClaimValueError::EmptyItem),
            (json!(" "), ClaimValueError::EmptyItem),
            (json!(["a", ""]), ClaimValueError::EmptyItem),
            (json!("a\tb"), ClaimValueError::BadCharacter),
            (json!("a\nb"), ClaimValueError::BadCharacter),
            (json!("a\u{7f}"), ClaimValueError::BadCharacter),
            (json!("a\u{85}"), ClaimValueError::BadCharacter),
            (json!(["a\r"]), ClaimValueError::BadCharacter),
            (json!(["a b"]), ClaimValueError::BadCharacter),
        ] {
            assert_eq!(ClaimValue::parse(&bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn parse_space_dedupes_and_skips_empty() {
        let s = Scopes::parse_space("  a b  a c ");
        assert_eq!(s.joined(), "a b c");
        assert_eq!(s.len(), 3);
        assert!(Scopes::parse_space("").is_empty());
    }

    #[test]
    fn prefix_is_not_membership() {
        let s = Scopes::parse_space("admin files");
        assert!(!s.contains("admin:read"));
        assert!(!s.contains("file"));
        assert!(s.contains("admin"));
    }
}
