//! Integration tests of the keys: the issuer's JWKS fetched, refreshed, rotated, rate-limited
//! and refused when faulty, through the real service over gRPC against a local identity provider
//! (decision matrix rows 503 `jwks_unavailable` and the key-confusion attacks of
//! ../shared/reference/peers.md).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn issuer_down_from_start_gives_503() {
    let idp = Idp::start(&[&RSA]).await;
    idp.set_mode(Mode::Status(500));
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, false).await;
    let token = RSA.mint(&h.claims("files:list"));
    eventually(
        "a failed fetch counted",
        Duration::from_secs(30),
        async || fetch_errors(&h.app) >= 1,
    )
    .await;
    assert!(!h.app.ready.get());
    let a = h.bearer("POST", "/mcp", &token).await;
    assert_eq!((a.status, a.reason()), (503, "no_signing_keys"));
    assert_eq!(a.headers["retry-after"], "30");
    assert_eq!(a.headers["cache-control"], "no-store");
    assert_eq!(a.www(), None);
    // No token still gets the 401 challenge: discovery must work while the IAM is down.
    assert_eq!(h.check(Req::new("POST", "/mcp")).await.status, 401);
    // The IAM comes back: keys load on the retry and the token passes.
    h.idp.set_mode(Mode::Ok);
    eventually(
        "ready after the IAM came back",
        Duration::from_secs(30),
        async || h.app.ready.get(),
    )
    .await;
    assert_eq!(h.bearer("POST", "/mcp", &token).await.status, 200);
}

#[tokio::test]
async fn issuer_down_after_start_keeps_last_good_keys_then_goes_stale() {
    let idp = Idp::start(&[&RSA]).await;
    // Refresh every second; keys stay usable 12 s after the last success, a margin that a
    // loaded machine does not eat between the failed refresh and the next Check.
    let yaml = config_yaml(
        &idp.issuer,
        "  max_stale_seconds: 12\n  refresh_seconds: 1\n  max_refresh_seconds: 1",
        ROUTES,
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let token = RSA.mint(&h.claims("files:list"));
    // A different token each time, so no answer comes from the verified-token cache.
    let fresh = |h: &Harness| {
        let mut c = h.claims("files:list");
        c["jti"] = json!(format!("{:?}", std::time::Instant::now()));
        RSA.mint(&c)
    };
    assert_eq!(h.bearer("POST", "/mcp", &token).await.status, 200);
    h.idp.stop();
    eventually(
        "a failed refresh counted",
        Duration::from_secs(30),
        async || fetch_errors(&h.app) >= 1,
    )
    .await;
    let a = h.bearer("POST", "/mcp", &fresh(&h)).await;
    assert_eq!(a.status, 200, "last good keys still used");
    assert!(h.app.ready.get(), "still ready on last good keys");
    // Past max_stale_seconds the keys are no longer used, and readiness drops.
    let mut last = None;
    eventually("stale keys refused", Duration::from_secs(60), async || {
        let t = fresh(&h);
        let a = h.bearer("POST", "/mcp", &t).await;
        last = Some((a.status, a.reason().to_owned()));
        a.status != 200
    })
    .await;
    assert_eq!(last, Some((503, "no_signing_keys".to_owned())));
    assert_eq!(
        h.bearer("POST", "/mcp", &token).await.status,
        503,
        "nor from the cache"
    );
    eventually(
        "not ready on stale keys",
        Duration::from_secs(30),
        async || !h.app.ready.get(),
    )
    .await;
}

#[tokio::test]
async fn key_rotation_picks_up_new_kid_with_one_fetch() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    assert_eq!(h.idp.fetches(), 1);
    h.idp.set_keys(&[&RSA, &RSA2]);
    let token = RSA2.mint(&h.claims("files:list"));
    // Ten concurrent Checks with the new kid share one refetch.
    let mut joins = Vec::new();
    for _ in 0..10 {
        let mut c = h.client.clone();
        let req = Req::new("POST", "/mcp").header("authorization", &format!("Bearer {token}"));
        joins.push(tokio::spawn(async move {
            Answer::from(c.check(req.into_proto()).await.unwrap().into_inner())
        }));
    }
    for j in joins {
        assert_eq!(j.await.unwrap().status, 200);
    }
    assert_eq!(h.idp.fetches(), 2, "exactly one refetch for the new kid");
    // The old key is removed from the JWKS: after the next refetch it stops verifying.
    h.idp.set_keys(&[&RSA2]);
    let old = RSA.mint(&h.claims("files:list"));
    assert_eq!(
        h.bearer("POST", "/mcp", &old).await.status,
        200,
        "still in the cached set"
    );
}

#[tokio::test]
async fn removed_key_stops_verifying_after_refresh() {
    let idp = Idp::start(&[&RSA, &RSA2]).await;
    let yaml = config_yaml(
        &idp.issuer,
        "  refresh_seconds: 1\n  max_refresh_seconds: 1",
        ROUTES,
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let old = RSA.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &old).await.status, 200);
    // Now in the verified-token cache too: a key-set change must drop it.
    let hit = |h: &Harness| {
        h.app
            .metrics
            .counter("mcp_authz_token_cache_requests_total", &[("result", "hit")])
    };
    let hits = hit(&h);
    assert_eq!(h.bearer("POST", "/mcp", &old).await.status, 200);
    assert_eq!(hit(&h), hits + 1, "served from the cache");
    h.idp.set_keys(&[&RSA2]);
    let mut last = None;
    eventually(
        "the removed key stops verifying",
        Duration::from_secs(30),
        async || {
            let a = h.bearer("POST", "/mcp", &old).await;
            last = Some((a.status, a.reason().to_owned()));
            a.status != 200
        },
    )
    .await;
    assert_eq!(last, Some((401, "token_unknown_kid".to_owned())));
}

#[tokio::test]
async fn kid_flood_is_rate_limited() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    let mut joins = Vec::new();
    for i in 0..100 {
        let mut c = h.client.clone();
        let token = RSA.mint_with_header(
            &json!({"alg":"RS256","kid":format!("random-{i}")}),
            &h.claims("files:list"),
        );
        let req = Req::new("POST", "/mcp").header("authorization", &format!("Bearer {token}"));
        joins.push(tokio::spawn(async move {
            Answer::from(c.check(req.into_proto()).await.unwrap().into_inner())
        }));
    }
    for j in joins {
        let a = j.await.unwrap();
        assert_eq!(a.status, 401);
        assert_eq!(a.reason(), "token_unknown_kid");
    }
    assert_eq!(
        h.idp.fetches(),
        2,
        "exactly one refetch per cooldown, got {}",
        h.idp.fetches() - 1
    );
    // Later unknown kids inside the cooldown are refused without a fetch, and counted.
    for i in 0..10 {
        let token = RSA.mint_with_header(
            &json!({"alg":"RS256","kid":format!("later-{i}")}),
            &h.claims("files:list"),
        );
        assert_eq!(h.bearer("POST", "/mcp", &token).await.status, 401);
    }
    assert_eq!(h.idp.fetches(), 2, "no fetch inside the cooldown");
    let limited = h.app.metrics.counter(
        "mcp_authz_jwks_unknown_kid_refetches_total",
        &[("result", "rate_limited")],
    );
    assert!(limited >= 10, "rate-limited refetches counted: {limited}");
    // A valid token still passes during the flood.
    assert_eq!(
        h.bearer("POST", "/mcp", &RSA.mint(&h.claims("files:list")))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn unusable_keys_are_skipped_not_fatal() {
    let mut keys = vec![
        json!({"kty":"MLDSA","kid":"pq-1","alg":"ML-DSA-65","pub":"AAAA"}),
        json!({"kty":"oct","kid":"hmac","k":"c2VjcmV0"}),
    ];
    let mut enc = RSA2.jwk();
    enc["use"] = json!("enc");
    keys.push(enc);
    keys.push(RSA.jwk());
    let idp = Idp::start_with(json!({ "keys": keys })).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    assert_eq!(
        h.bearer("POST", "/mcp", &RSA.mint(&h.claims("files:list")))
            .await
            .status,
        200
    );
    // The encryption-use key is never used to verify.
    let a = h
        .bearer("POST", "/mcp", &RSA2.mint(&h.claims("files:list")))
        .await;
    assert_eq!(a.status, 401);
    for reason in ["unsupported_alg", "symmetric", "encryption_key"] {
        assert_eq!(
            h.app
                .metrics
                .counter("mcp_authz_jwks_keys_skipped_total", &[("reason", reason)]),
            1,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn token_without_kid_is_tried_against_compatible_keys() {
    let mut h = Harness::standard().await;
    let t = RSA.mint_with_header(&json!({"alg":"RS256"}), &h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    let t = EC.mint_with_header(&json!({"alg":"ES256"}), &h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
}

/// A harness whose identity provider answers in `mode` from the start, waited on until the
/// service has tried (and failed) to fetch keys at least once.
async fn harness_after_a_failed_fetch(mode: Mode, jwks_extra: &str) -> Harness {
    let idp = Idp::start(&[&RSA]).await;
    idp.set_mode(mode.clone());
    let yaml = config_yaml(&idp.issuer, jwks_extra, ROUTES);
    let h = Harness::start(idp, &yaml, false).await;
    eventually(
        &format!("{mode:?}: a failed fetch counted"),
        Duration::from_secs(30),
        async || fetch_errors(&h.app) >= 1,
    )
    .await;
    h
}

#[tokio::test]
async fn iam_faults_never_load_keys() {
    // Every fault but the unparseable ones serves the *valid* JWKS, so only the rule under test
    // (200 only, the size cap, the same-host redirect rule) can keep the keys out.
    let limit = "  max_response_bytes: 65536";
    for mode in [
        Mode::Html,
        Mode::Truncated,
        Mode::Status(404),
        Mode::Status(500),
        Mode::Padded(100_000),
        Mode::PaddedChunked(100_000),
        Mode::RedirectOtherHost,
    ] {
        let mut h = harness_after_a_failed_fetch(mode.clone(), limit).await;
        let token = RSA.mint(&h.claims("files:list"));
        let a = h.bearer("POST", "/mcp", &token).await;
        assert_eq!((a.status, a.reason()), (503, "no_signing_keys"), "{mode:?}");
        assert!(!h.app.ready.get(), "{mode:?}");
        h.app.shutdown(Duration::from_secs(1)).await;
    }
    // Control: the same padded documents under the default 1 MiB cap are valid key sets.
    for mode in [Mode::Padded(100_000), Mode::PaddedChunked(100_000)] {
        let idp = Idp::start(&[&RSA]).await;
        idp.set_mode(mode.clone());
        let yaml = config_yaml(&idp.issuer, "", ROUTES);
        let mut h = Harness::start(idp, &yaml, true).await;
        let token = RSA.mint(&h.claims("files:list"));
        assert_eq!(
            h.bearer("POST", "/mcp", &token).await.status,
            200,
            "{mode:?}"
        );
        h.app.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn a_jwks_slower_than_the_fetch_timeout_is_a_failed_fetch() {
    // fetch_timeout_seconds is 2; the answer would come after 120 s. The failure is observed
    // on the fetch-error metric (well before the answer), not by sleeping.
    let mut h = harness_after_a_failed_fetch(Mode::Slow(Duration::from_secs(120)), "").await;
    let token = RSA.mint(&h.claims("files:list"));
    let a = h.bearer("POST", "/mcp", &token).await;
    assert_eq!((a.status, a.reason()), (503, "no_signing_keys"));
    h.app.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn kid_must_belong_to_the_tokens_issuer() {
    // Issuer A holds rsa-1; issuer B holds rsa-2. A token claiming issuer B but signed by
    // A's key (kid rsa-1) must not verify.
    let a = Idp::start(&[&RSA]).await;
    let b = Idp::start(&[&RSA2]).await;
    let yaml = format!(
        "{}      - issuer: {}\n        algorithms: [RS256]\n",
        config_yaml(&a.issuer, "", ""),
        b.issuer
    );
    let mut h = Harness::start(a, &yaml, true).await;
    let mut c = h.claims("");
    c["iss"] = json!(b.issuer);
    let ans = h.bearer("POST", "/mcp", &RSA.mint(&c)).await;
    assert_eq!(ans.status, 401);
    assert_eq!(ans.reason(), "token_unknown_kid");
    // Both issuers' own tokens pass.
    assert_eq!(h.bearer("POST", "/mcp", &RSA2.mint(&c)).await.status, 200);
    let c = h.claims("");
    assert_eq!(h.bearer("POST", "/mcp", &RSA.mint(&c)).await.status, 200);
}

#[tokio::test]
async fn extra_audience_is_opt_in() {
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", "").replace(
        "algorithms: [RS256, ES256, EdDSA]",
        "algorithms: [RS256]\n        extra_audiences: [casdoor-client-id]",
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let mut c = h.claims("");
    c["aud"] = json!(["casdoor-client-id"]);
    assert_eq!(h.bearer("POST", "/mcp", &RSA.mint(&c)).await.status, 200);
    // Default route (no routes configured) protects the resource path with any valid token.
    assert_eq!(h.check(Req::new("POST", "/mcp")).await.status, 401);
}

#[tokio::test]
async fn kidless_and_duplicate_kid_tokens_are_tried_against_at_most_four_keys() {
    // An RS256 key first: only keys that fit the token's algorithm count towards the cap.
    let ec: Vec<TestKey> = (0..5).map(|i| TestKey::ec(&format!("ec-{i}"))).collect();
    let mut keys = vec![RSA.jwk()];
    keys.extend(ec.iter().map(TestKey::jwk));
    let idp = Idp::start_with(json!({ "keys": keys })).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    let claims = h.claims("files:list");
    let no_kid = json!({"alg": "ES256"});
    // The 4th ES256-capable key is tried, the 5th is not (README: "at most 4").
    assert_eq!(
        h.bearer("POST", "/mcp", &ec[3].mint_with_header(&no_kid, &claims))
            .await
            .status,
        200
    );
    let a = h
        .bearer("POST", "/mcp", &ec[4].mint_with_header(&no_kid, &claims))
        .await;
    assert_eq!((a.status, a.reason()), (401, "token_bad_signature"));

    // Five keys sharing one kid: the same bound, in JWKS order.
    let dup: Vec<serde_json::Value> = ec
        .iter()
        .map(|k| {
            let mut j = k.jwk();
            j["kid"] = json!("shared");
            j
        })
        .collect();
    let idp = Idp::start_with(json!({ "keys": dup })).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    let claims = h.claims("files:list");
    let shared = json!({"alg": "ES256", "kid": "shared"});
    assert_eq!(
        h.bearer("POST", "/mcp", &ec[3].mint_with_header(&shared, &claims))
            .await
            .status,
        200
    );
    let a = h
        .bearer("POST", "/mcp", &ec[4].mint_with_header(&shared, &claims))
        .await;
    assert_eq!((a.status, a.reason()), (401, "token_bad_signature"));
}

#[tokio::test]
async fn a_second_unknown_kid_refetch_is_allowed_once_the_cooldown_has_passed() {
    let idp = Idp::start(&[&RSA]).await;
    // A 5 s cooldown: long enough that the Check right after the first refetch is inside it
    // even on a loaded machine, short enough to wait out.
    let yaml = config_yaml(&idp.issuer, "", ROUTES).replace(
        "unknown_kid_cooldown_seconds: 30",
        "unknown_kid_cooldown_seconds: 5",
    );
    let mut h = Harness::start(idp, &yaml, true).await;
    let claims = h.claims("files:list");
    let started = |h: &Harness| {
        h.app.metrics.counter(
            "mcp_authz_jwks_unknown_kid_refetches_total",
            &[("result", "started")],
        )
    };
    let stray = RSA.mint_with_header(&json!({"alg":"RS256","kid":"stray"}), &claims);
    assert_eq!(
        h.bearer("POST", "/mcp", &stray).await.reason(),
        "token_unknown_kid"
    );
    assert_eq!((h.idp.fetches(), started(&h)), (2, 1));
    // The IAM rotates in a new key right after: inside the cooldown it is not fetched yet.
    h.idp.set_keys(&[&RSA, &RSA2]);
    let rotated = RSA2.mint(&claims);
    assert_eq!(
        h.bearer("POST", "/mcp", &rotated).await.reason(),
        "token_unknown_kid"
    );
    assert_eq!(h.idp.fetches(), 2, "rate limited inside the cooldown");
    // Once the cooldown has passed, the next unknown kid starts a second refetch.
    eventually(
        "a second refetch after the cooldown",
        Duration::from_secs(60),
        async || h.bearer("POST", "/mcp", &rotated).await.status == 200,
    )
    .await;
    assert_eq!((h.idp.fetches(), started(&h)), (3, 2));
}

#[tokio::test]
async fn a_check_waiting_on_a_hanging_refetch_returns_within_its_bound() {
    // The refetch would answer after 300 s; the Check is bounded by the fetch timeout (2 s)
    // and the wait bound (2 × timeout + 1 s). 60 s here only catches a hang.
    let idp = Idp::start(&[&RSA]).await;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    h.idp.set_mode(Mode::Slow(Duration::from_secs(300)));
    h.idp.set_keys(&[&RSA, &RSA2]);
    let t = RSA2.mint(&h.claims("files:list"));
    let a = tokio::time::timeout(Duration::from_secs(60), h.bearer("POST", "/mcp", &t))
        .await
        .expect("the Check returned instead of waiting on the hanging fetch");
    assert_eq!((a.status, a.reason()), (401, "token_unknown_kid"));
    assert_eq!(h.idp.fetches(), 2);
    // Known keys keep working meanwhile.
    let ok = RSA.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &ok).await.status, 200);
}

/// A harness whose JWKS answers carry `Cache-Control: cache_control`; `yaml` edits the config.
async fn harness_with_cache_control(
    cache_control: &str,
    yaml: impl Fn(String) -> String,
) -> Harness {
    let idp = Idp::start(&[&RSA]).await;
    *idp.state.cache_control.lock().unwrap() = Some(cache_control.to_owned());
    // refresh_seconds (the period without max-age) is 300: only max-age can make it sooner.
    let yaml = yaml(config_yaml(&idp.issuer, "", ROUTES));
    Harness::start(idp, &yaml, true).await
}

#[tokio::test]
async fn cache_control_max_age_drives_the_next_refresh() {
    let h = harness_with_cache_control("public, max-age=1", |y| y).await;
    eventually(
        "refreshes every max-age",
        Duration::from_secs(60),
        async || h.idp.fetches() >= 3,
    )
    .await;
}

#[tokio::test]
async fn cache_control_max_age_is_clamped_to_max_refresh_seconds() {
    let h = harness_with_cache_control("max-age=86400", |y| {
        y.replace(
            "min_refresh_seconds: 1",
            "min_refresh_seconds: 1\n  max_refresh_seconds: 1",
        )
    })
    .await;
    eventually(
        "refreshes at max_refresh_seconds",
        Duration::from_secs(60),
        async || h.idp.fetches() >= 3,
    )
    .await;
}

#[tokio::test]
async fn cache_control_max_age_is_clamped_to_min_refresh_seconds() {
    // max-age=0 would refetch in a loop; min_refresh_seconds 120 holds it off. Three seconds
    // of quiet is a wide margin against a loop that refetches at once.
    let h = harness_with_cache_control("max-age=0", |y| {
        y.replace("min_refresh_seconds: 1", "min_refresh_seconds: 120")
    })
    .await;
    let first = h.idp.fetches();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        h.idp.fetches(),
        first,
        "no refetch before min_refresh_seconds"
    );
}

#[tokio::test]
async fn oidc_discovery_is_the_fallback_and_its_issuer_must_match() {
    // Only /.well-known/openid-configuration answers: keys come from its jwks_uri.
    let idp = Idp::start(&[&RSA]).await;
    *idp.state.discovery.lock().unwrap() = Discovery::OidcOnly;
    let yaml = config_yaml(&idp.issuer, "", ROUTES);
    let mut h = Harness::start(idp, &yaml, true).await;
    let t = RSA.mint(&h.claims("files:list"));
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    h.app.shutdown(Duration::from_secs(1)).await;

    // A document naming another issuer is refused (RFC 8414 §3.3, OIDC Discovery §4.3), on
    // either path, and its jwks_uri is never fetched.
    for discovery in [Discovery::OAuth, Discovery::OidcOnly] {
        let idp = Idp::start(&[&RSA]).await;
        *idp.state.discovery.lock().unwrap() = discovery.clone();
        *idp.state.metadata_issuer.lock().unwrap() = Some("https://evil.example".into());
        let yaml = config_yaml(&idp.issuer, "", ROUTES);
        let mut h = Harness::start(idp, &yaml, false).await;
        eventually(
            "a failed discovery counted",
            Duration::from_secs(30),
            async || fetch_errors(&h.app) >= 1,
        )
        .await;
        let t = RSA.mint(&h.claims("files:list"));
        let a = h.bearer("POST", "/mcp", &t).await;
        assert_eq!(
            (a.status, a.reason()),
            (503, "no_signing_keys"),
            "{discovery:?}"
        );
        assert_eq!(
            h.idp.fetches(),
            0,
            "{discovery:?}: jwks_uri of a mismatched document"
        );
        h.app.shutdown(Duration::from_secs(1)).await;
    }
}
