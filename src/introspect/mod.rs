//! RFC 7662 token introspection: which tokens need it (`opaque_issuer`, `introspect:`), and
//! asking the issuer's endpoint — cached (`cache.rs`, by SHA-256 of the token, never past
//! `exp`), one call in flight per token (single-flight), a bounded number of calls per issuer,
//! each bounded in time. The call (`client.rs`) runs on the control runtime, so Check workers
//! never do its I/O and a cancelled Check does not cancel the call others wait for; the answer
//! is judged per resource (`judge.rs`). An endpoint that cannot answer is a 503 for the tokens
//! that need it (fail closed), and nothing else.

mod cache;
mod client;
mod judge;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, watch};
use url::Url;

pub use cache::{AnswerCache, key};
pub use client::{CallError, MAX_RESPONSE_BYTES, basic_credentials, form, parse};
pub use judge::{Refusal, cache_until, judge};

use crate::config::{Config, IntrospectionSettings, Resource, TrustedIssuer};
use crate::fetch_url::check_fetch_url;
use crate::jwks::{JwksManager, discovery_urls};
use crate::metrics::Metrics;
use crate::principal::Principal;
use crate::trace::Trace;

/// Whether `token` is shaped as a JWS compact JWT: three non-empty segments, the first a
/// base64url JSON object. Such tokens are verified locally; the others are opaque.
pub fn is_jws(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !p.is_empty()
        && !s.is_empty()
        && URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v.is_object())
}

/// The issuer whose endpoint judges `token` when it is opaque: the resource's first issuer
/// with `introspection:`. `None` for a JWT, or when no issuer introspects (an opaque token is
/// then a malformed JWT).
///
/// Called for every token: the issuers are looked at first, so a resource without
/// introspection (the default) never pays for decoding the token's header here.
pub fn opaque_issuer<'r>(resource: &'r Resource, token: &str) -> Option<&'r TrustedIssuer> {
    let issuer = resource
        .issuers
        .iter()
        .find(|i| i.introspection.is_some())?;
    (!is_jws(token)).then_some(issuer)
}

/// The settings as `explain` and `doctor` show them (never the secret).
pub fn describe(s: &IntrospectionSettings) -> String {
    let endpoint = s
        .endpoint
        .as_ref()
        .map_or("discovered".to_owned(), Url::to_string);
    format!(
        "endpoint {endpoint}, client {}, {}, cache {} s (inactive {} s, {} entries), {} concurrent calls, timeout {} ms",
        crate::logfmt::escaped(&s.client_id),
        s.auth_method.as_str(),
        s.cache_ttl.as_secs(),
        s.negative_ttl.as_secs(),
        s.cache_entries,
        s.max_concurrent,
        s.timeout.as_millis()
    )
}

/// What the shared call hands every waiter.
type Fetched = Option<Result<Arc<Map<String, Value>>, CallError>>;

/// One issuer's introspection state, replaced whole when its settings change (reload).
struct IssuerState {
    settings: Arc<IntrospectionSettings>,
    cache: AnswerCache,
    slots: Semaphore,
    inflight: papaya::HashMap<cache::Key, watch::Receiver<Fetched>>,
    discovered: ArcSwapOption<Url>,
}

/// Introspection for every issuer that has it.
pub struct Introspector {
    http: reqwest::Client,
    /// Where calls run (the runtime current at construction: the control runtime in `serve`).
    control: Option<tokio::runtime::Handle>,
    issuers: papaya::HashMap<String, Arc<IssuerState>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("issuers", &self.issuers.len())
            .finish()
    }
}

impl Introspector {
    pub fn new(metrics: Metrics) -> Introspector {
        // No redirects: the POST carries the client secret and the token.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mcp-authz/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Introspector {
            http,
            control: tokio::runtime::Handle::try_current().ok(),
            issuers: papaya::HashMap::new(),
            metrics,
        }
    }

    /// Set up every introspecting issuer of `config` (at start and on reload), so its metric
    /// series exist at 0 before its first call.
    pub fn prepare(&self, config: &Config) {
        for r in &config.resources {
            for i in &r.issuers {
                if let Some(s) = &i.introspection {
                    self.state(&i.issuer, s);
                }
            }
        }
    }

    fn state(&self, issuer: &str, settings: &Arc<IntrospectionSettings>) -> Arc<IssuerState> {
        let map = self.issuers.pin();
        if let Some(s) = map.get(issuer)
            && (Arc::ptr_eq(&s.settings, settings) || s.settings == *settings)
        {
            return s.clone();
        }
        let fresh = Arc::new(IssuerState {
            settings: settings.clone(),
            cache: AnswerCache::new(settings.cache_entries),
            slots: Semaphore::new(settings.max_concurrent),
            inflight: papaya::HashMap::new(),
            discovered: ArcSwapOption::empty(),
        });
        map.insert(issuer.to_owned(), fresh.clone());
        self.metrics.introspection_init(issuer);
        fresh
    }

    /// Judge `token` for `resource` by `issuer`'s introspection endpoint at `now`. With tracing
    /// on (`explain`) the cache is bypassed.
    pub async fn judge_token(
        &self,
        jwks: &Arc<JwksManager>,
        issuer: &TrustedIssuer,
        resource: &Resource,
        token: &str,
        now: u64,
        trace: &mut Trace,
    ) -> Result<Principal, Refusal> {
        let Some(settings) = &issuer.introspection else {
            // Validation makes every issuer that needs it have it.
            trace.fail(
                "introspection",
                &"no introspection endpoint for this issuer",
            );
            return Err(Refusal::Unavailable);
        };
        let state = self.state(&issuer.issuer, settings);
        let key = key(token);
        let cached = if trace.enabled() {
            None
        } else {
            let hit = state.cache.get(&key, now);
            self.metrics.introspection_cache(hit.is_some());
            hit
        };
        let answer = match cached {
            Some(a) => a,
            None => match self.fetch(jwks, &state, &issuer.issuer, key, token).await {
                Ok(a) => a,
                Err(e) => {
                    trace.fail("introspection", &e);
                    return Err(Refusal::Unavailable);
                }
            },
        };
        judge(&answer, issuer, resource, now, trace)
    }

    /// The answer for `token`: one call per token in flight, whoever asks first starting it.
    async fn fetch(
        &self,
        jwks: &Arc<JwksManager>,
        state: &Arc<IssuerState>,
        issuer: &str,
        key: cache::Key,
        token: &str,
    ) -> Result<Arc<Map<String, Value>>, CallError> {
        let mut rx = {
            let inflight = state.inflight.pin();
            match inflight.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    match inflight.try_insert(key, rx.clone()) {
                        Ok(_) => {
                            let call = Call {
                                http: self.http.clone(),
                                jwks: jwks.clone(),
                                state: state.clone(),
                                metrics: self.metrics.clone(),
                                issuer: issuer.to_owned(),
                                token: token.to_owned(),
                                key,
                            };
                            let run = call.run(tx);
                            drop(match &self.control {
                                Some(control) => control.spawn(run),
                                None => tokio::spawn(run),
                            });
                            rx
                        }
                        Err(e) => e.current.clone(),
                    }
                }
            }
        };
        // The call bounds itself by `timeout`; the margin covers scheduling, and keeps the
        // wait under Envoy's check timeout (`timeout` is at most half of it).
        let settings = &state.settings;
        let wait = settings.timeout + settings.timeout / 2;
        match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => v.clone().unwrap_or(Err(CallError::Timeout)),
            Ok(Err(_)) => Err(CallError::Unreachable),
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// `doctor`: whether `issuer`'s endpoint can be found and answers an introspection request
    /// as RFC 7662 §2.2 says — with a made-up token, so no real token leaves mcp-authz. `Ok`
    /// holds the endpoint and whether the made-up token was (rightly) reported inactive.
    pub async fn probe(
        &self,
        jwks: &Arc<JwksManager>,
        issuer: &TrustedIssuer,
    ) -> Result<(Url, bool), CallError> {
        let Some(settings) = &issuer.introspection else {
            return Err(CallError::NoEndpoint);
        };
        let state = self.state(&issuer.issuer, settings);
        let endpoint = endpoint(jwks, &state, &issuer.issuer).await?;
        let probe = format!("mcp-authz-doctor-probe-{}", std::process::id());
        let answer = tokio::time::timeout(
            settings.timeout.max(Duration::from_secs(5)),
            client::call(&self.http, &endpoint, settings, &probe),
        )
        .await
        .map_err(|_| CallError::Timeout)??;
        Ok((endpoint, answer.get("active") == Some(&Value::Bool(false))))
    }
}

/// The configured endpoint, else `introspection_endpoint` from the issuer's metadata
/// (RFC 8414 §2, then OpenID Connect Discovery), whose `issuer` must be ours.
async fn endpoint(
    jwks: &Arc<JwksManager>,
    state: &IssuerState,
    issuer: &str,
) -> Result<Url, CallError> {
    if let Some(u) = &state.settings.endpoint {
        return Ok(u.clone());
    }
    if let Some(u) = state.discovered.load_full() {
        return Ok((*u).clone());
    }
    let urls = discovery_urls(issuer).map_err(|_| CallError::NoEndpoint)?;
    for url in urls {
        let Ok((body, _)) = jwks.get(&url).await else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(CallError::NoEndpoint);
        }
        let found = doc
            .get("introspection_endpoint")
            .and_then(Value::as_str)
            .and_then(|s| Url::parse(s).ok())
            .filter(|u| check_fetch_url(u, state.settings.allow_insecure_http).is_ok())
            .ok_or(CallError::NoEndpoint)?;
        state.discovered.store(Some(Arc::new(found.clone())));
        return Ok(found);
    }
    Err(CallError::NoEndpoint)
}

/// One shared introspection call.
struct Call {
    http: reqwest::Client,
    jwks: Arc<JwksManager>,
    state: Arc<IssuerState>,
    metrics: Metrics,
    issuer: String,
    token: String,
    key: cache::Key,
}

impl Call {
    async fn run(self, tx: watch::Sender<Fetched>) {
        // However this task ends (a panic, the runtime shutting down), the token is no longer
        // in flight: waiters see the sender dropped (a failure), later Checks start afresh.
        let leave = Leave {
            state: self.state.clone(),
            key: self.key,
        };
        let started = Instant::now();
        let settings = &self.state.settings;
        let result = tokio::time::timeout(settings.timeout, async {
            // RFC 7662 §4: the endpoint is a shared resource; bound what we ask of it.
            let _slot = self
                .state
                .slots
                .acquire()
                .await
                .map_err(|_| CallError::Unreachable)?;
            let endpoint = endpoint(&self.jwks, &self.state, &self.issuer).await?;
            client::call(&self.http, &endpoint, settings, &self.token).await
        })
        .await
        .unwrap_or(Err(CallError::Timeout));
        let label = match &result {
            Ok(a) if a.get("active") == Some(&Value::Bool(true)) => "active",
            Ok(_) => "inactive",
            Err(CallError::Timeout) => "timeout",
            Err(_) => "error",
        };
        self.metrics
            .introspection_call(&self.issuer, label, started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            tracing::warn!(issuer = %crate::logfmt::Escaped(&self.issuer), error = %e, "introspection failed");
        }
        let result = result.map(Arc::new);
        if let Ok(answer) = &result {
            let now = crate::introspect::unix_now();
            let until = cache_until(
                answer,
                now,
                settings.cache_ttl.as_secs(),
                settings.negative_ttl.as_secs(),
            );
            self.state
                .cache
                .insert(self.key, answer.clone(), until, now);
        }
        // Cached first, then no longer in flight (`Leave`): a Check in between finds one or
        // the other.
        drop(leave);
        let _ = tx.send(Some(result));
    }
}

/// Removes a token from the in-flight map when its call ends, whichever way.
struct Leave {
    state: Arc<IssuerState>,
    key: cache::Key,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.state.inflight.pin().remove(&self.key);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jws_shape() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        assert!(is_jws(&format!("{h}.e30.sig")));
        assert!(!is_jws("opaque-token-value"));
        assert!(!is_jws("a.b.c"));
        assert!(!is_jws(&format!("{h}.e30.")));
        assert!(!is_jws(&format!("{h}..sig")));
        assert!(!is_jws(&format!("{h}.e30.sig.x")));
        let arr = URL_SAFE_NO_PAD.encode(b"[1]");
        assert!(!is_jws(&format!("{arr}.e30.sig")));
    }
}
