//! Issuer signing keys: the manager that keeps each issuer's current key set — periodic
//! refresh honouring Cache-Control, single-flight refetch on an unknown `kid`, last-good keys
//! up to a staleness bound, readiness. Key sets are immutable snapshots swapped atomically; the
//! Check path reads them lock-free. Fetching and discovery are in `fetch.rs`, key parsing and
//! verification in `keys.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;
use url::Url;

use crate::config::{Config, IssuerKeysConfig, JwksSettings, KeySource};
use crate::fetch_url::check_fetch_url;
use crate::metrics::Metrics;

mod fetch;
mod keys;

pub use fetch::{cache_max_age, discovery_urls};
pub use keys::{Key, KeyKind, KeySet, SkipReason, Skipped, parse_jwks, parse_public_jwk};

/// Why a key set could not be obtained. Load-time only: it never reaches a client.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching {url} failed: {message}")]
    Fetch { url: String, message: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} sent more than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url} did not send valid JSON: {message}")]
    Json { url: String, message: String },
    #[error("metadata at {url} names issuer {found:?}, expected {expected:?} (RFC 8414 §3.3)")]
    IssuerMismatch {
        url: String,
        found: String,
        expected: String,
    },
    #[error("metadata at {url} has no usable jwks_uri: {message}")]
    NoJwksUri { url: String, message: String },
    #[error("no discovery document found for issuer {issuer}: {tried}")]
    Discovery { issuer: String, tried: String },
    #[error("reading {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("key set has no usable keys ({skipped} skipped)")]
    NoUsableKeys { skipped: usize },
}

/// Outcome of asking for a key set on the Check path.
#[derive(Debug)]
pub enum KeysState {
    Ready(Arc<KeySet>),
    /// Never loaded, or the last good set is older than `max_stale`.
    Unavailable,
}

/// The live key state of one issuer.
pub struct IssuerKeys {
    pub issuer: String,
    source: KeySource,
    current: ArcSwapOption<KeySet>,
    discovered_jwks_uri: ArcSwapOption<Url>,
    /// The one unknown-kid refetch in flight, if any. Held only to read or replace the handle,
    /// never across the fetch itself.
    inflight: Mutex<Option<watch::Receiver<bool>>>,
    /// Milliseconds since `epoch` of the last unknown-kid fetch start (cooldown).
    last_kid_fetch_ms: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("issuer", &self.issuer)
            .finish()
    }
}

type IssuerMap = HashMap<String, Arc<IssuerKeys>>;

/// All issuers' keys plus the HTTP client that fetches them.
pub struct JwksManager {
    /// Replaced whole on reload; read lock-free on the Check path.
    issuers: ArcSwap<IssuerMap>,
    /// Refresh loop of each issuer. Touched only at start, reload and shutdown.
    tasks: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    settings: JwksSettings,
    http: reqwest::Client,
    metrics: Metrics,
    epoch: Instant,
    /// The runtime that was current when the manager was built (the control runtime in
    /// `serve`): unknown-kid refetches started from a Check worker's runtime run there, so
    /// key fetching never shares a thread with Check serving.
    control: Option<tokio::runtime::Handle>,
    /// How long one Check waits for an unknown-kid refetch: half of Envoy's ext_authz timeout
    /// (`envoy.check_timeout_ms`), at most the fetch timeout twice plus a second. A Check
    /// that outlived Envoy's timeout would become an ext_authz error, which a fail-open
    /// Envoy (`failure_mode_allow`) or Istio (`failOpen`) turns into an allow; past this the
    /// Check is denied (`token_unknown_kid`) while the fetch goes on for the next one.
    kid_wait: Duration,
}

impl std::fmt::Debug for JwksManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksManager")
            .field("issuers", &self.issuer_names())
            .finish()
    }
}

impl JwksManager {
    pub fn new(config: &Config, metrics: Metrics) -> Result<Arc<JwksManager>, JwksError> {
        let settings = config.jwks.clone();
        let allow_http = settings.allow_insecure_http;
        // Redirects stay on the same host and scheme rules as the original URL.
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let same_host = attempt
                .previous()
                .first()
                .is_some_and(|first| first.host_str() == attempt.url().host_str());
            if attempt.previous().len() >= 3 {
                attempt.error("too many redirects")
            } else if !same_host {
                attempt.error("redirect to another host refused")
            } else if let Err(e) = check_fetch_url(attempt.url(), allow_http) {
                attempt.error(e)
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .redirect(policy)
            .timeout(settings.fetch_timeout)
            .connect_timeout(settings.fetch_timeout)
            .user_agent(concat!("mcp-authz/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| JwksError::Fetch {
                url: String::new(),
                message: e.to_string(),
            })?;
        let kid_wait = (config.envoy.check_timeout / 2)
            .min(settings.fetch_timeout * 2 + Duration::from_secs(1));
        let manager = JwksManager {
            issuers: ArcSwap::from_pointee(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
            kid_wait,
            settings,
            http,
            metrics,
            epoch: Instant::now(),
            control: tokio::runtime::Handle::try_current().ok(),
        };
        let issuers = config
            .issuers
            .iter()
            .map(|c| (c.issuer.clone(), manager.new_issuer(c)))
            .collect();
        manager.issuers.store(Arc::new(issuers));
        Ok(Arc::new(manager))
    }

    fn new_issuer(&self, c: &IssuerKeysConfig) -> Arc<IssuerKeys> {
        Arc::new(IssuerKeys {
            issuer: c.issuer.clone(),
            source: c.source.clone(),
            current: ArcSwapOption::empty(),
            discovered_jwks_uri: ArcSwapOption::empty(),
            inflight: Mutex::new(None),
            last_kid_fetch_ms: AtomicU64::new(u64::MAX),
            epoch: self.epoch,
        })
    }

    /// Adopt a reloaded configuration's issuers: unchanged ones keep their keys and refresh
    /// loop; new or changed ones start empty and fetch at once; removed ones stop.
    pub fn update(self: &Arc<Self>, config: &Config) {
        let old = self.issuers.load_full();
        let mut next = HashMap::new();
        for c in &config.issuers {
            let state = match old.get(&c.issuer) {
                Some(s) if s.source == c.source => s.clone(),
                _ => self.new_issuer(c),
            };
            next.insert(c.issuer.clone(), state);
        }
        {
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.retain(|issuer, task| {
                let keep = matches!((old.get(issuer), next.get(issuer)), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
                if !keep {
                    task.abort();
                }
                keep
            });
        }
        self.issuers.store(Arc::new(next));
        self.spawn_refresh();
    }

    /// Fetch every issuer's keys once, now (for `explain` and `doctor`).
    pub async fn refresh_all(&self) -> Vec<(String, Result<usize, JwksError>)> {
        let map = self.issuers.load_full();
        let mut out = Vec::new();
        for (issuer, st) in map.iter() {
            let r = self
                .refresh(st)
                .await
                .map(|_| match st.current.load_full() {
                    Some(set) => set.keys.len(),
                    None => 0,
                });
            out.push((issuer.clone(), r));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Stop every refresh loop.
    pub fn shutdown(&self) {
        for (_, t) in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            t.abort();
        }
    }

    /// The key set for an issuer, if it may be used now. Lock-free.
    pub fn keys(&self, issuer: &str) -> KeysState {
        let map = self.issuers.load();
        let Some(state) = map.get(issuer) else {
            return KeysState::Unavailable;
        };
        match state.current.load_full() {
            Some(set) if set.confirmed_at.elapsed() <= self.settings.max_stale => {
                KeysState::Ready(set)
            }
            _ => KeysState::Unavailable,
        }
    }

    /// Each issuer and whether its keys are usable now.
    pub fn usable(&self) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = self
            .issuers
            .load()
            .keys()
            .map(|i| (i.clone(), matches!(self.keys(i), KeysState::Ready(_))))
            .collect();
        v.sort();
        v
    }

    /// True once every issuer has usable keys (none never loaded, none stale).
    pub fn all_ready(&self) -> bool {
        self.usable().iter().all(|(_, ok)| *ok)
    }

    pub fn issuer_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.issuers.load().keys().cloned().collect();
        v.sort();
        v
    }

    /// A token named a `kid` this issuer's set lacks: refetch once, shared by every concurrent
    /// caller, at most once per cooldown. Returns the (possibly new) key set, or `None` when no
    /// fetch could be made (cooldown) or it failed.
    pub async fn refetch_for_unknown_kid(self: &Arc<Self>, issuer: &str) -> Option<Arc<KeySet>> {
        let state = self.issuers.load().get(issuer)?.clone();
        let mut rx = {
            let mut slot = state.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(rx) => {
                    self.metrics.kid_refetch(issuer, "joined");
                    rx.clone()
                }
                None => {
                    let now_ms = state.epoch.elapsed().as_millis() as u64;
                    let last = state.last_kid_fetch_ms.load(Ordering::Relaxed);
                    let cooldown = self.settings.unknown_kid_cooldown.as_millis() as u64;
                    if last != u64::MAX && now_ms.saturating_sub(last) < cooldown {
                        self.metrics.kid_refetch(issuer, "rate_limited");
                        return None;
                    }
                    state.last_kid_fetch_ms.store(now_ms, Ordering::Relaxed);
                    self.metrics.kid_refetch(issuer, "started");
                    let (tx, rx) = watch::channel(false);
                    *slot = Some(rx.clone());
                    let this = self.clone();
                    let st = state.clone();
                    let fetch = async move {
                        let ok = this.refresh(&st).await.is_ok();
                        *st.inflight.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        let _ = tx.send(ok);
                    };
                    drop(self.spawn(fetch));
                    rx
                }
            }
        };
        // Wait for the shared fetch, never past the Check's own deadline (see `kid_wait`).
        let _ = tokio::time::timeout(self.kid_wait, rx.changed()).await;
        match self.keys(issuer) {
            KeysState::Ready(set) => Some(set),
            KeysState::Unavailable => None,
        }
    }

    /// Run `task` on the control runtime (see `control`), else on the current one.
    fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match &self.control {
            Some(control) => control.spawn(task),
            None => tokio::spawn(task),
        }
    }

    /// Start a background refresh loop for every issuer that has none.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let map = self.issuers.load_full();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (issuer, state) in map.iter() {
            if tasks.contains_key(issuer) {
                continue;
            }
            let this = self.clone();
            let st = state.clone();
            let refresh = async move {
                loop {
                    let wait = match this.refresh(&st).await {
                        Ok(Some(max_age)) => {
                            max_age.clamp(this.settings.min_refresh, this.settings.max_refresh)
                        }
                        Ok(None) => this.settings.refresh,
                        Err(_) => this.settings.retry,
                    };
                    tokio::time::sleep(wait).await;
                }
            };
            let task = self.spawn(refresh);
            tasks.insert(issuer.clone(), task.abort_handle());
        }
    }

    /// Fetch and install one issuer's keys. Returns the server's `max-age`, if any.
    async fn refresh(&self, st: &IssuerKeys) -> Result<Option<Duration>, JwksError> {
        let (keys, skipped, max_age) = self.fetch_keys(st).await.inspect_err(|e| {
            tracing::warn!(issuer = %st.issuer, error = %crate::logfmt::escaped(e), "jwks fetch failed; keeping last good keys");
            self.metrics.jwks_fetch(&st.issuer, "error");
        })?;
        for (kid, reason) in &skipped {
            tracing::debug!(issuer = %st.issuer, key.kid = %crate::logfmt::Escaped(kid.as_deref().unwrap_or("-")), reason = reason.label(), "jwks key skipped");
            self.metrics.key_skipped(&st.issuer, reason.label());
        }
        if keys.is_empty() {
            let e = JwksError::NoUsableKeys {
                skipped: skipped.len(),
            };
            tracing::warn!(issuer = %st.issuer, error = %e, "jwks unusable; keeping last good keys");
            self.metrics.jwks_fetch(&st.issuer, "no_usable_keys");
            return Err(e);
        }
        self.metrics.jwks_fetch(&st.issuer, "ok");
        let previous = st.current.load_full();
        let mut set = KeySet {
            keys,
            skipped,
            confirmed_at: Instant::now(),
            generation: 0,
        };
        set.generation = match &previous {
            Some(p) if p.fingerprint() == set.fingerprint() => p.generation,
            Some(p) => p.generation + 1,
            None => 1,
        };
        if previous
            .as_ref()
            .is_none_or(|p| p.generation != set.generation)
        {
            tracing::info!(issuer = %st.issuer, keys = set.keys.len(), skipped = set.skipped.len(), "jwks loaded");
        }
        self.metrics.keys_loaded(&st.issuer, set.keys.len());
        st.current.store(Some(Arc::new(set)));
        Ok(max_age)
    }
}

#[cfg(test)]
mod tests;
