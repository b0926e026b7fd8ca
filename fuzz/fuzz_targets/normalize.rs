//! Fuzz the path and URI normalisers (`normalize::normalize_path`, `fold_path`,
//! `canonical_resource_uri`, `uri_prefix_matches`, `authority_host`): no panic; a normalised
//! path is absolute, has no empty, `.` or `..` segment, no query or fragment, and normalising
//! it again changes nothing; a canonical URI is a fixed point that the `url` crate (WHATWG, as
//! the SDKs read it) serialises to itself, and prefix-matches itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_authz::normalize::{
    authority_host, canonical_resource_uri, fold_path, normalize_path, uri_prefix_matches,
};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);

    if let Ok(p) = normalize_path(&s) {
        assert!(p.starts_with('/'), "not absolute: {p:?}");
        assert!(!p.contains("//"), "empty segment: {p:?}");
        assert!(!p.contains(['?', '#']), "query or fragment kept: {p:?}");
        assert!(
            !p.split('/').any(|seg| seg == "." || seg == ".."),
            "dot segment kept: {p:?}"
        );
        assert_eq!(
            normalize_path(&p).as_deref(),
            Ok(p.as_str()),
            "not idempotent"
        );
        let f = fold_path(&p);
        assert_eq!(fold_path(&f), f, "fold not idempotent");
        assert!(f.starts_with('/'), "fold lost the root: {f:?}");
    }
    let _ = fold_path(&s);

    if let Ok(c) = canonical_resource_uri(&s) {
        assert_eq!(
            canonical_resource_uri(&c).as_deref(),
            Ok(c.as_str()),
            "canonical form is not a fixed point"
        );
        let reparsed = url::Url::parse(&c).expect("canonical form re-parses");
        assert_eq!(reparsed.as_str(), c, "WHATWG serialisation differs");
        assert!(uri_prefix_matches(&c, &c), "a URI must prefix-match itself");
    }

    let h = authority_host(&s);
    assert_eq!(h, h.to_ascii_lowercase(), "host not lower-cased");
    assert!(!h.ends_with('.'), "trailing dot kept: {h:?}");
});
