//! Prometheus metrics: one registry, every metric defined here, low-cardinality labels only
//! (never subject, token or raw path).

use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

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

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let checks = IntCounterVec::new(
            Opts::new(
                "mcp_authz_checks_total",
                "Check decisions by decision, reason and resource.",
            ),
            &["decision", "reason", "resource"],
        )
        .expect("valid metric");
        let check_seconds = HistogramVec::new(
            HistogramOpts::new(
                "mcp_authz_check_duration_seconds",
                "Time to decide one Check.",
            )
            .buckets(vec![
                0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
                0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["decision"],
        )
        .expect("valid metric");
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "mcp_authz_jwks_fetches_total",
                "JWKS fetches by issuer and result.",
            ),
            &["issuer", "result"],
        )
        .expect("valid metric");
        let keys_loaded = IntGaugeVec::new(
            Opts::new(
                "mcp_authz_jwks_keys",
                "Usable signing keys currently loaded per issuer.",
            ),
            &["issuer"],
        )
        .expect("valid metric");
        let keys_skipped = IntCounterVec::new(
            Opts::new(
                "mcp_authz_jwks_keys_skipped_total",
                "JWKS keys skipped while parsing, by issuer and reason.",
            ),
            &["issuer", "reason"],
        )
        .expect("valid metric");
        let kid_refetches = IntCounterVec::new(
            Opts::new(
                "mcp_authz_jwks_unknown_kid_refetches_total",
                "Refetches triggered by an unknown kid, by result (started, joined, rate_limited).",
            ),
            &["result"],
        )
        .expect("valid metric");
        for c in [
            Box::new(checks.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(check_seconds.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(keys_loaded.clone()),
            Box::new(keys_skipped.clone()),
            Box::new(kid_refetches.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics(Arc::new(Inner {
            registry,
            checks,
            check_seconds,
            jwks_fetches,
            keys_loaded,
            keys_skipped,
            kid_refetches,
        }))
    }

    pub fn check(&self, decision: &str, reason: &str, resource: &str, seconds: f64) {
        self.0
            .checks
            .with_label_values(&[decision, reason, resource])
            .inc();
        self.0
            .check_seconds
            .with_label_values(&[decision])
            .observe(seconds);
    }

    pub fn jwks_fetch(&self, issuer: &str, result: &str) {
        self.0
            .jwks_fetches
            .with_label_values(&[issuer, result])
            .inc();
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

    pub fn kid_refetch(&self, result: &str) {
        self.0.kid_refetches.with_label_values(&[result]).inc();
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.0.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }

    /// Current value of a counter, for tests.
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
