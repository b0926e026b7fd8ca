//! The verified-token cache: same decisions as without it, never past `exp`, dropped when the
//! issuer's keys change, bounded under a flood of distinct tokens.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn hits(h: &Harness) -> u64 {
    h.app
        .metrics
        .counter("mcp_authz_token_cache_requests_total", &[("result", "hit")])
}

#[tokio::test]
async fn repeated_token_hits_the_cache_with_identical_answers() {
    let mut h = Harness::standard().await;
    let t = RSA.mint(&h.claims("files:list"));
    let first = h.bearer("POST", "/mcp", &t).await;
    let before = hits(&h);
    let second = h.bearer("POST", "/mcp", &t).await;
    assert_eq!(hits(&h), before + 1);
    assert_eq!(
        (first.status, &first.headers, &first.removed),
        (second.status, &second.headers, &second.removed)
    );
    // A cached principal is still checked against the route: insufficient scope stays 403.
    assert_eq!(h.bearer("GET", "/mcp/files/x", &t).await.status, 403);
    // The cache is keyed per resource and token: a different token is a miss, not a hit.
    let other = RSA.mint(&h.claims("files:list files:read"));
    let before = hits(&h);
    assert_eq!(h.bearer("GET", "/mcp/files/x", &other).await.status, 200);
    assert_eq!(hits(&h), before);
}

#[tokio::test]
async fn cached_token_expires_on_time() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES).replace(
        "algorithms: [RS256, ES256, EdDSA]",
        "algorithms: [RS256]\n        leeway_seconds: 0",
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let mut c = h.claims("files:list");
    // Ten seconds of validity: the two Checks below land well inside it on a loaded machine.
    let exp = now() + 10;
    c["exp"] = json!(exp);
    let t = RSA.mint(&c);
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    let before = hits(&h);
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    assert_eq!(
        hits(&h),
        before + 1,
        "the second answer came from the cache"
    );
    // Wait on the clock, not a sleep of guessed length: once the service's clock (the same
    // one) reaches exp, the cached entry must not answer (RFC 7519 §4.1.4, zero leeway).
    eventually(
        "the clock passes exp",
        Duration::from_secs(60),
        async || now() >= exp,
    )
    .await;
    let a = h.bearer("POST", "/mcp", &t).await;
    assert_eq!((a.status, a.reason()), (401, "token_expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_is_bounded_under_a_flood_of_distinct_tokens() {
    let idp = Idp::start(&[&EC]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES)
        .replace("listen:", "limits: {token_cache_entries: 100}\nlisten:");
    let mut h = Harness::start(idp, &yaml, true).await;
    for i in 0..400 {
        let mut c = h.claims("files:list");
        c["jti"] = json!(i);
        assert_eq!(h.bearer("POST", "/mcp", &EC.mint(&c)).await.status, 200);
    }
    let entries = h.app.authorizer.cache.len();
    assert!(
        entries <= 100,
        "cache holds {entries} entries, capacity 100"
    );
    let evictions = h
        .app
        .metrics
        .counter("mcp_authz_token_cache_evictions_total", &[]);
    assert!(evictions >= 300, "evictions counted: {evictions}");
}

#[tokio::test]
async fn cache_can_be_disabled() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES)
        .replace("listen:", "limits: {token_cache_entries: 0}\nlisten:");
    let mut h = Harness::start(idp, &yaml, true).await;
    let t = RSA.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    assert_eq!(hits(&h), 0);
    assert_eq!(h.app.authorizer.cache.len(), 0);
}
