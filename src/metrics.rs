//! Prometheus metrics: one registry, every metric defined here, base units, low-cardinality
//! labels only (`decision`, `reason`, `resource`, `issuer`, `result` — never subject, token or
//! raw path).

use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    checks: IntCounterVec,
    check_seconds: HistogramVec,
    jwks_fetches: IntCounterVec,
    keys_loaded: IntGaugeVec,
    keys_skipped: IntCounterVec,
    kid_refetches: IntCounterVec,
    keys_last_success: GaugeVec,
    issuer_ready: IntGaugeVec,
    reloads: IntCounterVec,
    config_last_reload: Gauge,
    body_inspections: IntCounterVec,
    token_cache: IntCounterVec,
    token_cache_evictions: prometheus::IntCounter,
    // Pre-resolved handles for the Check path (no lock per Check).
    check_handles: papaya::HashMap<
        String,
        papaya::HashMap<(&'static str, &'static str), prometheus::IntCounter>,
    >,
    allow_seconds: prometheus::Histogram,
    deny_seconds: prometheus::Histogram,
    inspection_handles: papaya::HashMap<&'static str, prometheus::IntCounter>,
    cache_hits: prometheus::IntCounter,
    cache_misses: prometheus::IntCounter,
    token_cache_entries: IntGauge,
    config_last_reload_ok: IntGauge,
    introspection: Introspection,
    dpop_proofs: IntCounterVec,
    dpop_handles: papaya::HashMap<&'static str, prometheus::IntCounter>,
}

/// RFC 7662 introspection: calls by issuer and result, their latency, and cache lookups.
struct Introspection {
    calls: IntCounterVec,
    cache: IntCounterVec,
    seconds: HistogramVec,
    cache_hits: prometheus::IntCounter,
    cache_misses: prometheus::IntCounter,
}

impl Introspection {
    fn new() -> Introspection {
        let calls = counter(
            "mcp_authz_introspection_requests_total",
            "RFC 7662 introspection calls by issuer and result (active, inactive, error, timeout).",
            &["issuer", "result"],
        );
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "mcp_authz_introspection_duration_seconds",
                "Time of one introspection call, waiting for a free slot included.",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["issuer"],
        )
        .expect("valid metric");
        let cache = counter(
            "mcp_authz_introspection_cache_requests_total",
            "Introspection answer cache lookups by result (hit, miss).",
            &["result"],
        );
        Introspection {
            cache_hits: cache.with_label_values(&["hit"]),
            cache_misses: cache.with_label_values(&["miss"]),
            cache,
            calls,
            seconds,
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.calls.clone()),
            Box::new(self.seconds.clone()),
            Box::new(self.cache.clone()),
        ]
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let checks = counter(
            "mcp_authz_checks_total",
            "Check decisions by decision (allow, deny), reason and resource.",
            &["decision", "reason", "resource"],
        );
        // Sub-millisecond buckets: a cached decision takes microseconds.
        let check_seconds = HistogramVec::new(
            HistogramOpts::new(
                "mcp_authz_check_duration_seconds",
                "Time to decide one Check.",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
            &["decision"],
        )
        .expect("valid metric");
        let jwks_fetches = counter(
            "mcp_authz_jwks_fetches_total",
            "JWKS fetches by issuer and result (ok, error, no_usable_keys).",
            &["issuer", "result"],
        );
        let keys_loaded = IntGaugeVec::new(
            Opts::new(
                "mcp_authz_jwks_keys",
                "Usable signing keys in the current key set, per issuer.",
            ),
            &["issuer"],
        )
        .expect("valid metric");
        let keys_skipped = counter(
            "mcp_authz_jwks_keys_skipped_total",
            "JWKS keys skipped while parsing a fetched set, by issuer and reason.",
            &["issuer", "reason"],
        );
        let kid_refetches = counter(
            "mcp_authz_jwks_unknown_kid_refetches_total",
            "Unknown-kid refetch requests by issuer and result (started, joined, rate_limited).",
            &["issuer", "result"],
        );
        let keys_last_success = GaugeVec::new(
            Opts::new(
                "mcp_authz_jwks_last_success_timestamp_seconds",
                "Unix time of the last successful JWKS fetch, per issuer (key set age = time() - this).",
            ),
            &["issuer"],
        )
        .expect("valid metric");
        let issuer_ready = IntGaugeVec::new(
            Opts::new(
                "mcp_authz_issuer_keys_usable",
                "1 when the issuer has a key set young enough to use, else 0.",
            ),
            &["issuer"],
        )
        .expect("valid metric");
        let reloads = counter(
            "mcp_authz_config_reloads_total",
            "Configuration reloads by result (ok, error).",
            &["result"],
        );
        let config_last_reload = Gauge::new(
            "mcp_authz_config_last_reload_success_timestamp_seconds",
            "Unix time the running configuration was loaded.",
        )
        .expect("valid metric");
        let body_inspections = counter(
            "mcp_authz_body_inspections_total",
            "JSON-RPC body inspections by result (ok, or the body denial reason).",
            &["result"],
        );
        let token_cache = counter(
            "mcp_authz_token_cache_requests_total",
            "Verified-token cache lookups by result (hit, miss).",
            &["result"],
        );
        let token_cache_evictions = prometheus::IntCounter::new(
            "mcp_authz_token_cache_evictions_total",
            "Entries evicted from the full verified-token cache.",
        )
        .expect("valid metric");
        let config_last_reload_ok = IntGauge::new(
            "mcp_authz_config_last_reload_successful",
            "1 when the last configuration load or reload succeeded, 0 when it was refused.",
        )
        .expect("valid metric");
        let token_cache_entries = IntGauge::new(
            "mcp_authz_token_cache_entries",
            "Tokens in the verified-token cache.",
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "mcp_authz_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let introspection = Introspection::new();
        let dpop_proofs = counter(
            "mcp_authz_dpop_proofs_total",
            "DPoP proofs (RFC 9449) by result: ok, or the denial label they caused.",
            &["result"],
        );
        let mut collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(checks.clone()),
            Box::new(check_seconds.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(keys_loaded.clone()),
            Box::new(keys_skipped.clone()),
            Box::new(kid_refetches.clone()),
            Box::new(keys_last_success.clone()),
            Box::new(issuer_ready.clone()),
            Box::new(reloads.clone()),
            Box::new(config_last_reload.clone()),
            Box::new(body_inspections.clone()),
            Box::new(token_cache.clone()),
            Box::new(token_cache_entries.clone()),
            Box::new(token_cache_evictions.clone()),
            Box::new(config_last_reload_ok.clone()),
            Box::new(dpop_proofs.clone()),
            Box::new(build_info),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        collectors.extend(introspection.collectors());
        for c in collectors {
            registry.register(c).expect("unique metric");
        }
        let allow_seconds = check_seconds.with_label_values(&["allow"]);
        let deny_seconds = check_seconds.with_label_values(&["deny"]);
        let cache_hits = token_cache.with_label_values(&["hit"]);
        let cache_misses = token_cache.with_label_values(&["miss"]);
        Metrics(Arc::new(Inner {
            registry,
            checks,
            check_seconds,
            jwks_fetches,
            keys_loaded,
            keys_skipped,
            kid_refetches,
            keys_last_success,
            issuer_ready,
            reloads,
            config_last_reload,
            body_inspections,
            check_handles: papaya::HashMap::new(),
            allow_seconds,
            deny_seconds,
            inspection_handles: papaya::HashMap::new(),
            cache_hits,
            cache_misses,
            token_cache,
            token_cache_evictions,
            token_cache_entries,
            config_last_reload_ok,
            introspection,
            dpop_proofs,
            dpop_handles: papaya::HashMap::new(),
        }))
    }

    /// Create the series alerts watch at 0, so their first increment is visible to
    /// `increase()`/`rate()` (a counter that appears at 1 hides its first event).
    pub fn init_series(&self, resources: &[&str], issuers: &[String]) {
        for r in ["ok", "error"] {
            self.0.reloads.with_label_values(&[r]);
        }
        for r in ["hit", "miss"] {
            self.0.token_cache.with_label_values(&[r]);
        }
        for d in ["allow", "deny"] {
            self.0.check_seconds.with_label_values(&[d]);
        }
        for res in resources {
            for (d, reason) in [
                ("allow", "ok"),
                ("deny", "no_signing_keys"),
                ("deny", "internal"),
            ] {
                self.0.checks.with_label_values(&[d, reason, res]);
            }
        }
        for i in issuers {
            for r in ["ok", "error", "no_usable_keys"] {
                self.0.jwks_fetches.with_label_values(&[i, r]);
            }
            for r in ["started", "joined", "rate_limited"] {
                self.0.kid_refetches.with_label_values(&[i, r]);
            }
            self.0.issuer_ready.with_label_values(&[i]).set(0);
        }
        // A request that cannot be decoded has no resource yet: it is counted under "-".
        self.0
            .checks
            .with_label_values(&["deny", "undecodable_request", "-"]);
    }

    /// Record one decided Check. Label lookups go through lock-free handle maps: the
    /// prometheus crate's `with_label_values` takes a lock, which the Check path must not.
    pub fn check(
        &self,
        decision: &'static str,
        reason: &'static str,
        resource: &str,
        seconds: f64,
    ) {
        let inner = &self.0;
        let by_resource = inner.check_handles.pin();
        let reasons = match by_resource.get(resource) {
            Some(r) => r,
            None => by_resource.get_or_insert_with(resource.to_owned(), papaya::HashMap::new),
        };
        let reasons = reasons.pin();
        let counter = reasons.get_or_insert_with((decision, reason), || {
            inner
                .checks
                .with_label_values(&[decision, reason, resource])
        });
        counter.inc();
        let histogram = if decision == "allow" {
            &inner.allow_seconds
        } else {
            &inner.deny_seconds
        };
        histogram.observe(seconds);
    }

    pub fn jwks_fetch(&self, issuer: &str, result: &str) {
        self.0
            .jwks_fetches
            .with_label_values(&[issuer, result])
            .inc();
        if result == "ok" {
            self.0
                .keys_last_success
                .with_label_values(&[issuer])
                .set(unix_now());
        }
    }

    pub fn keys_loaded(&self, issuer: &str, n: usize) {
        self.0
            .keys_loaded
            .with_label_values(&[issuer])
            .set(n as i64);
    }

    pub fn key_skipped(&self, issuer: &str, reason: &str) {
        self.0
            .keys_skipped
            .with_label_values(&[issuer, reason])
            .inc();
    }

    pub fn kid_refetch(&self, issuer: &str, result: &str) {
        self.0
            .kid_refetches
            .with_label_values(&[issuer, result])
            .inc();
    }

    pub fn issuer_usable(&self, issuer: &str, usable: bool) {
        self.0
            .issuer_ready
            .with_label_values(&[issuer])
            .set(i64::from(usable));
    }

    pub fn reload(&self, ok: bool) {
        self.0
            .reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        self.0.config_last_reload_ok.set(i64::from(ok));
        if ok {
            self.0.config_last_reload.set(unix_now());
        }
    }

    /// One DPoP proof's outcome (`ok`, or the denial label it caused).
    pub fn dpop_proof(&self, result: &'static str) {
        let inner = &self.0;
        inner
            .dpop_handles
            .pin()
            .get_or_insert_with(result, || inner.dpop_proofs.with_label_values(&[result]))
            .inc();
    }

    pub fn body_inspection(&self, result: &'static str) {
        let inner = &self.0;
        inner
            .inspection_handles
            .pin()
            .get_or_insert_with(result, || {
                inner.body_inspections.with_label_values(&[result])
            })
            .inc();
    }

    /// A token-cache lookup: `hit` or miss.
    pub fn token_cache(&self, hit: bool) {
        if hit {
            self.0.cache_hits.inc();
        } else {
            self.0.cache_misses.inc();
        }
    }

    pub fn token_cache_eviction(&self) {
        self.0.token_cache_evictions.inc();
    }

    pub fn token_cache_entries(&self, n: usize) {
        self.0.token_cache_entries.set(n as i64);
    }

    /// One introspection call for `issuer` ended with `result` (`active`, `inactive`, `error`,
    /// `timeout`). Called off the Check path (the call's own task), so the label lock is fine.
    pub fn introspection_call(&self, issuer: &str, result: &'static str, seconds: f64) {
        let m = &self.0.introspection;
        m.calls.with_label_values(&[issuer, result]).inc();
        m.seconds.with_label_values(&[issuer]).observe(seconds);
    }

    /// Create `issuer`'s introspection call series at 0, so the first failure is visible to
    /// `increase()` (see `init_series`).
    pub fn introspection_init(&self, issuer: &str) {
        for result in ["active", "inactive", "error", "timeout"] {
            self.0
                .introspection
                .calls
                .with_label_values(&[issuer, result]);
        }
    }

    /// An introspection cache lookup: `hit` or miss.
    pub fn introspection_cache(&self, hit: bool) {
        let m = &self.0.introspection;
        if hit {
            m.cache_hits.inc();
        } else {
            m.cache_misses.inc();
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.0.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }

    /// Sum of a counter's series matching `labels` (for tests).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
            .map(|m| m.get_counter().value() as u64)
            .sum()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    /// Every series an alert or a dashboard panel may watch exists at 0 before its first
    /// event, so `increase()` sees the first one.
    #[test]
    fn init_series_creates_the_watched_series_at_zero() {
        let m = Metrics::new();
        m.init_series(&["files"], &["https://iam.example".to_owned()]);
        let text = m.render();
        for line in [
            r#"mcp_authz_checks_total{decision="allow",reason="ok",resource="files"} 0"#,
            r#"mcp_authz_checks_total{decision="deny",reason="no_signing_keys",resource="files"} 0"#,
            r#"mcp_authz_checks_total{decision="deny",reason="internal",resource="files"} 0"#,
            r#"mcp_authz_checks_total{decision="deny",reason="undecodable_request",resource="-"} 0"#,
            r#"mcp_authz_config_reloads_total{result="error"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line} in:\n{text}");
        }
    }
}
