//! OAuth scope lists: parsing the `scope`/`scp` claim forms and keeping configured order.

use std::collections::BTreeSet;

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

#[cfg(test)]
mod tests {
    use super::*;

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
