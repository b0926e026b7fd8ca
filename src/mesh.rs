//! The mesh binding: which resource the destination workload serves. Under Istio's `CUSTOM`
//! action there are no per-route `context_extensions`, so the resource is chosen from
//! `:authority`; a caller inside the mesh can reach one MCP workload directly with another
//! resource's host and be judged under the other resource's policy. With `istio.workloads`
//! bound to SPIFFE ids, the Check's destination principal (the workload's own identity, which
//! the sidecar takes from its certificate) must belong to the resource the host names.

/// SPIFFE ID standard §2.3 "Maximum SPIFFE ID Length": 2048 bytes (a trust domain, 255).
const MAX_SPIFFE_ID: usize = 2048;

/// Why a request's destination does not fit the resource its host names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationError {
    /// Bindings are configured but the request carries no destination principal (plaintext,
    /// not mTLS): the workload cannot be told, so fail closed.
    Unauthenticated,
    /// The destination principal is bound to another resource, or the resource the host
    /// names is bound to other principals.
    Mismatch,
}

/// What the binding check found when it let a request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// No workload is bound: nothing to check.
    Unbound,
    /// The destination principal is one of the resource's own.
    Bound,
    /// Neither the principal nor the resource is bound (another workload of the mesh that
    /// serves an unbound resource).
    NeitherBound,
}

/// Check the destination `principal` (empty when Envoy sent none) against `resource_id`, the
/// resource chosen from the request's host. `bindings` lists each resource id with the SPIFFE
/// ids its workload is bound to (`istio.workloads`; validation keeps an id to one resource).
/// SPIFFE ids compare byte for byte (SPIFFE ID §2: the trust domain is lower case, the path
/// case-sensitive; validation rejects other forms).
pub fn check_destination<'a>(
    bindings: impl Iterator<Item = (&'a str, &'a [String])> + Clone,
    resource_id: &str,
    principal: &str,
) -> Result<Destination, DestinationError> {
    if !any_bound(bindings.clone()) {
        return Ok(Destination::Unbound);
    }
    let bound = bindings.filter(|(_, ids)| !ids.is_empty());
    if principal.is_empty() {
        return Err(DestinationError::Unauthenticated);
    }
    let own_bound = bound.clone().any(|(id, _)| id == resource_id);
    match bound_to(bound, principal) {
        Some(id) if id == resource_id => Ok(Destination::Bound),
        Some(_) => Err(DestinationError::Mismatch),
        None if own_bound => Err(DestinationError::Mismatch),
        None => Ok(Destination::NeitherBound),
    }
}

/// Whether any resource is bound to a principal.
pub fn any_bound<'a>(mut bindings: impl Iterator<Item = (&'a str, &'a [String])>) -> bool {
    bindings.any(|(_, ids)| !ids.is_empty())
}

/// The resource `principal` is bound to, if any.
pub fn bound_to<'a>(
    mut bindings: impl Iterator<Item = (&'a str, &'a [String])>,
    principal: &str,
) -> Option<&'a str> {
    bindings
        .find(|(_, ids)| ids.iter().any(|p| p == principal))
        .map(|(id, _)| id)
}

/// The SPIFFE id Istio gives a pod of `namespace` running as `service_account`.
pub fn istio_spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// A SPIFFE trust domain name (SPIFFE ID standard §2.1): lower-case letters, digits, `.`,
/// `-` and `_`, not empty.
pub fn is_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
}

/// Why `s` is not a workload SPIFFE id (SPIFFE ID standard §2: `spiffe://`, a trust domain,
/// then a path of non-empty segments of letters, digits, `.`, `-`, `_`, none `.` or `..`, no
/// trailing `/`, no query or fragment, percent-encoding not allowed), or `None` when it is.
pub fn spiffe_id_error(s: &str) -> Option<&'static str> {
    if s.len() > MAX_SPIFFE_ID {
        return Some("is longer than 2048 bytes");
    }
    let Some(rest) = s.strip_prefix("spiffe://") else {
        return Some("does not start with spiffe:// (lower case)");
    };
    let (domain, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !is_trust_domain(domain) {
        return Some("has a trust domain that is not lower-case letters, digits, '.', '-', '_'");
    }
    if path.is_empty() {
        return Some("has no path: a trust domain names no workload");
    }
    for seg in path[1..].split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Some("has an empty, '.' or '..' path segment (or a trailing '/')");
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Some("has a path character other than letters, digits, '.', '-', '_'");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_must_be_the_named_resources() {
        let a = ["spiffe://td/ns/m/sa/a".to_owned()];
        let b = ["spiffe://td/ns/m/sa/b".to_owned()];
        let none: Vec<String> = vec![];
        let all = [("a", &a[..]), ("b", &b[..]), ("c", &none[..])];
        let check = |r, p| check_destination(all.iter().copied(), r, p);
        assert_eq!(check("a", "spiffe://td/ns/m/sa/a"), Ok(Destination::Bound));
        assert_eq!(
            check("a", "spiffe://td/ns/m/sa/b"),
            Err(DestinationError::Mismatch)
        );
        // The host names a bound resource; the workload is some unbound one.
        assert_eq!(
            check("a", "spiffe://td/ns/m/sa/x"),
            Err(DestinationError::Mismatch)
        );
        // The host names the unbound resource; the workload is b's.
        assert_eq!(
            check("c", "spiffe://td/ns/m/sa/b"),
            Err(DestinationError::Mismatch)
        );
        assert_eq!(
            check("c", "spiffe://td/ns/m/sa/x"),
            Ok(Destination::NeitherBound)
        );
        assert_eq!(check("a", ""), Err(DestinationError::Unauthenticated));
        assert_eq!(check("c", ""), Err(DestinationError::Unauthenticated));
        // Case matters in the path; the trust domain is lower case by validation.
        assert_eq!(
            check("a", "spiffe://td/ns/m/sa/A"),
            Err(DestinationError::Mismatch)
        );
        let unbound = [("a", &none[..])];
        assert_eq!(
            check_destination(unbound.iter().copied(), "a", ""),
            Ok(Destination::Unbound)
        );
    }

    #[test]
    fn spiffe_ids_follow_the_standard() {
        for ok in [
            "spiffe://cluster.local/ns/mcp/sa/files",
            "spiffe://example.org/a_b/C-d.e",
        ] {
            assert_eq!(spiffe_id_error(ok), None, "{ok}");
        }
        for bad in [
            "SPIFFE://cluster.local/ns/a/sa/b",
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/a/sa/b/",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a/sa/b?x",
            "spiffe://cluster.local/ns/a/sa/%62",
            "spiffe://user@cluster.local/ns/a",
            "spiffe://cluster.local:443/ns/a",
            "https://cluster.local/ns/a/sa/b",
        ] {
            assert!(spiffe_id_error(bad).is_some(), "{bad}");
        }
        assert!(spiffe_id_error(&format!("spiffe://td/{}", "a".repeat(2048))).is_some());
    }
}
