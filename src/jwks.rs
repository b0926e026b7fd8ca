//! Issuer signing keys: discovery, JWKS fetch and parse (key by key), periodic refresh,
//! single-flight refetch on an unknown `kid`, last-good keys up to a staleness bound.
//! Key sets are immutable snapshots swapped atomically; the Check path reads them lock-free.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;
use url::Url;

use crate::config::{Alg, Config, IssuerKeysConfig, JwksSettings, KeySource};
use crate::fetch_url::check_fetch_url;
use crate::metrics::Metrics;

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

/// The key type a JWK holds; decides which algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// RFC 7518 §3: the algorithms each key type can verify. Anything else is refused, so a
    /// token cannot pick HS256 against a public key or ES256 against an RSA key.
    pub fn supports(self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (
                KeyKind::Rsa,
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
            ) | (KeyKind::P256, Alg::ES256)
                | (KeyKind::P384, Alg::ES384)
                | (KeyKind::Ed25519, Alg::EdDSA)
        )
    }
}

/// One usable verification key.
pub struct Key {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's own `alg`, when it names one: then only that algorithm verifies with it.
    pub alg: Option<Alg>,
    pub decoding: DecodingKey,
    /// RSA keys parsed once per algorithm they accept: jsonwebtoken rebuilds an RSA key from
    /// `n`/`e` on every verification, ~18 % of an RS256 check (benches/BENCHMARKS.md §1).
    rsa: Vec<(Alg, ParsedPublicKey)>,
    /// SHA-256 of the public key material (type, curve, decoded components): what the
    /// key-set fingerprint compares, so a key replaced under the same `kid` is a new set.
    material: [u8; 32],
}

/// Digest of a key's type and decoded public components, each length-prefixed so no two
/// different keys share an encoding.
fn material_digest(kty: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in std::iter::once(kty.as_bytes()).chain(parts.iter().copied()) {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl Key {
    pub fn accepts(&self, alg: Alg) -> bool {
        self.kind.supports(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// Verify `signature` (raw bytes) over `message` with this key and `alg`; `false` for any
    /// failure, including an algorithm the key does not accept.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        if let Some((_, parsed)) = self.rsa.iter().find(|(a, _)| *a == alg) {
            return parsed.verify_sig(message, signature).is_ok();
        }
        // EC and Ed25519: jsonwebtoken's aws-lc-rs verifier (parsing once gains nothing there).
        let provider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
        (provider.verifier_factory)(&jwt_alg(alg), &self.decoding)
            .is_ok_and(|v| v.verify(message, &signature.to_vec()).is_ok())
    }
}

/// aws-lc-rs parameters jsonwebtoken's aws_lc_rs backend uses for each RSA algorithm.
fn rsa_params(alg: Alg) -> Option<&'static RsaParameters> {
    Some(match alg {
        Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Alg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        Alg::ES256 | Alg::ES384 | Alg::EdDSA => return None,
    })
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish()
    }
}

/// Why a JWK was skipped (metric label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    UnsupportedKty,
    Symmetric,
    EncryptionKey,
    UnsupportedAlg,
    UnsupportedCurve,
    WeakRsa,
    Malformed,
}

impl SkipReason {
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::UnsupportedKty => "unsupported_kty",
            SkipReason::Symmetric => "symmetric",
            SkipReason::EncryptionKey => "encryption_key",
            SkipReason::UnsupportedAlg => "unsupported_alg",
            SkipReason::UnsupportedCurve => "unsupported_curve",
            SkipReason::WeakRsa => "weak_rsa",
            SkipReason::Malformed => "malformed",
        }
    }
}

/// Keys left out of a set: their `kid` (if any) and why.
pub type Skipped = Vec<(Option<String>, SkipReason)>;

/// An immutable, parsed key set.
#[derive(Debug)]
pub struct KeySet {
    pub keys: Vec<Key>,
    pub skipped: Skipped,
    /// When these keys were last confirmed by a successful fetch.
    pub confirmed_at: Instant,
    /// Increments on every successful fetch whose keys differ from the previous set.
    pub generation: u64,
}

impl KeySet {
    /// Candidate keys for a token: with a `kid`, the keys carrying it (duplicate kids are
    /// tried, so a rotation that reuses a kid keeps working); without one, every key that can
    /// verify the algorithm. Either way at most `MAX_CANDIDATES`, in JWKS order, so a large set
    /// cannot be used to burn CPU (README "Token validation, precisely").
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Alg,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.accepts(alg) && (kid.is_none() || k.kid.as_deref() == kid))
            .take(MAX_CANDIDATES)
    }

    /// Whether the published set names this kid at all, usable or skipped: refetching for a
    /// kid we already saw and skipped cannot help.
    pub fn knows_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
            || self.skipped.iter().any(|(k, _)| k.as_deref() == Some(kid))
    }

    /// What identifies a set for the verified-token cache. It includes each key's material,
    /// not only its `kid`: Casdoor names kids after certificates, so regenerating a certificate
    /// (the usual answer to a key compromise) publishes new material under the same `kid`, and
    /// tokens verified under the old key must then be verified again (RFC 7517 §4.5 makes no
    /// promise that a `kid` keeps naming the same key).
    fn fingerprint(&self) -> Vec<KeyPrint> {
        self.keys
            .iter()
            .map(|k| (k.kid.clone(), k.kind, k.alg, k.material))
            .collect()
    }
}

/// One key as the fingerprint sees it: `kid`, type, `alg`, material digest.
type KeyPrint = (Option<String>, KeyKind, Option<Alg>, [u8; 32]);

const MAX_CANDIDATES: usize = 4;

#[derive(Deserialize)]
struct JwkSetDoc {
    keys: Vec<Value>,
}

/// Parse a JWKS document key by key: an unusable key is skipped and reported, never fatal
/// for the rest (Hanzo's JWKS carries `kty: "MLDSA"` keys beside its RSA keys).
pub fn parse_jwks(body: &[u8]) -> Result<(Vec<Key>, Skipped), String> {
    let doc: JwkSetDoc = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for v in doc.keys {
        let kid = v.get("kid").and_then(Value::as_str).map(str::to_owned);
        match parse_jwk(&v) {
            Ok(key) => keys.push(key),
            Err(reason) => skipped.push((kid, reason)),
        }
    }
    Ok((keys, skipped))
}

fn parse_jwk(v: &Value) -> Result<Key, SkipReason> {
    let obj = v.as_object().ok_or(SkipReason::Malformed)?;
    let s = |name: &str| -> Result<Option<&str>, SkipReason> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(x)) => Ok(Some(x.as_str())),
            Some(_) => Err(SkipReason::Malformed),
        }
    };
    let kty = s("kty")?.ok_or(SkipReason::Malformed)?;
    let kid = s("kid")?.map(str::to_owned);
    if kid.as_ref().is_some_and(|k| k.len() > 256) {
        return Err(SkipReason::Malformed);
    }
    // RFC 7517 §4.2/§4.3: only signature-verification keys.
    if let Some(u) = s("use")?
        && u != "sig"
    {
        return Err(SkipReason::EncryptionKey);
    }
    if let Some(ops) = obj.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err(SkipReason::EncryptionKey);
        }
    }
    let alg = match s("alg")? {
        None => None,
        Some(a) => Some(Alg::parse(a).ok_or(SkipReason::UnsupportedAlg)?),
    };
    let mut rsa = vec![];
    let (kind, decoding, material) = match kty {
        "RSA" => {
            let n = s("n")?.ok_or(SkipReason::Malformed)?;
            let e = s("e")?.ok_or(SkipReason::Malformed)?;
            let n_bytes = URL_SAFE_NO_PAD
                .decode(n)
                .map_err(|_| SkipReason::Malformed)?;
            let e_bytes = URL_SAFE_NO_PAD
                .decode(e)
                .map_err(|_| SkipReason::Malformed)?;
            if rsa_bits(&n_bytes) < 2048 {
                return Err(SkipReason::WeakRsa);
            }
            if e_bytes.is_empty() || e_bytes.len() > 8 {
                return Err(SkipReason::Malformed);
            }
            let components = RsaPublicKeyComponents {
                n: &n_bytes[..],
                e: &e_bytes[..],
            };
            for a in Alg::ALL {
                if let Some(params) = rsa_params(a)
                    && alg.is_none_or(|only| only == a)
                {
                    let parsed = components
                        .to_parsed_public_key(params)
                        .map_err(|_| SkipReason::Malformed)?;
                    rsa.push((a, parsed));
                }
            }
            (
                KeyKind::Rsa,
                DecodingKey::from_rsa_raw_components(&n_bytes, &e_bytes),
                material_digest("RSA", &[&n_bytes, &e_bytes]),
            )
        }
        "EC" => {
            let (kind, len) = match s("crv")? {
                Some("P-256") => (KeyKind::P256, 32),
                Some("P-384") => (KeyKind::P384, 48),
                _ => return Err(SkipReason::UnsupportedCurve),
            };
            let x = s("x")?.ok_or(SkipReason::Malformed)?;
            let y = s("y")?.ok_or(SkipReason::Malformed)?;
            let lens = (URL_SAFE_NO_PAD.decode(x), URL_SAFE_NO_PAD.decode(y));
            let material = match lens {
                (Ok(xb), Ok(yb)) if xb.len() == len && yb.len() == len => {
                    material_digest(if len == 32 { "P-256" } else { "P-384" }, &[&xb, &yb])
                }
                _ => return Err(SkipReason::Malformed),
            };
            let key = DecodingKey::from_ec_components(x, y).map_err(|_| SkipReason::Malformed)?;
            (kind, key, material)
        }
        "OKP" => {
            if s("crv")? != Some("Ed25519") {
                return Err(SkipReason::UnsupportedCurve);
            }
            let x = s("x")?.ok_or(SkipReason::Malformed)?;
            let material = match URL_SAFE_NO_PAD.decode(x) {
                Ok(b) if b.len() == 32 => material_digest("Ed25519", &[&b]),
                _ => return Err(SkipReason::Malformed),
            };
            let key = DecodingKey::from_ed_components(x).map_err(|_| SkipReason::Malformed)?;
            (KeyKind::Ed25519, key, material)
        }
        "oct" => return Err(SkipReason::Symmetric),
        _ => return Err(SkipReason::UnsupportedKty),
    };
    if let Some(a) = alg
        && !kind.supports(a)
    {
        return Err(SkipReason::UnsupportedAlg);
    }
    Ok(Key {
        kid,
        kind,
        alg,
        decoding,
        rsa,
        material,
    })
}

fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// `Cache-Control: max-age=N` (RFC 9111 §5.2.2.1); `no-store`/`no-cache` count as 0.
pub fn cache_max_age(value: &str) -> Option<Duration> {
    let mut out = None;
    for d in value.split(',') {
        let d = d.trim().to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            out = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    out
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

    async fn fetch_keys(
        &self,
        st: &IssuerKeys,
    ) -> Result<(Vec<Key>, Skipped, Option<Duration>), JwksError> {
        let (body, max_age, where_) = match &st.source {
            KeySource::File(path) => {
                let body = tokio::fs::read(path).await.map_err(|e| JwksError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                (body, None, path.display().to_string())
            }
            KeySource::JwksUri(url) => {
                let (b, m) = self.get(url).await?;
                (b, m, url.to_string())
            }
            KeySource::Discovery => {
                let url = match st.discovered_jwks_uri.load_full() {
                    Some(u) => u,
                    None => {
                        let u = Arc::new(self.discover(&st.issuer).await?);
                        st.discovered_jwks_uri.store(Some(u.clone()));
                        u
                    }
                };
                match self.get(&url).await {
                    Ok((b, m)) => (b, m, url.to_string()),
                    Err(e) => {
                        // The metadata may have moved the JWKS: discover again next time.
                        st.discovered_jwks_uri.store(None);
                        return Err(e);
                    }
                }
            }
        };
        let (keys, skipped) = parse_jwks(&body).map_err(|message| JwksError::Json {
            url: where_,
            message,
        })?;
        Ok((keys, skipped, max_age))
    }

    /// RFC 8414 §3.1 (well-known segment inserted before the issuer path), then OpenID Connect
    /// Discovery 1.0 §4 (appended). The document's `issuer` must equal ours exactly.
    pub async fn discover(&self, issuer: &str) -> Result<Url, JwksError> {
        let mut tried = Vec::new();
        for url in discovery_urls(issuer)? {
            match self.get(&url).await {
                Ok((body, _)) => {
                    let doc: Value =
                        serde_json::from_slice(&body).map_err(|e| JwksError::Json {
                            url: url.to_string(),
                            message: e.to_string(),
                        })?;
                    let found = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
                    if found != issuer {
                        return Err(JwksError::IssuerMismatch {
                            url: url.to_string(),
                            found: found.to_owned(),
                            expected: issuer.to_owned(),
                        });
                    }
                    let jwks = doc.get("jwks_uri").and_then(Value::as_str).ok_or_else(|| {
                        JwksError::NoJwksUri {
                            url: url.to_string(),
                            message: "missing".into(),
                        }
                    })?;
                    let jwks = Url::parse(jwks).map_err(|e| JwksError::NoJwksUri {
                        url: url.to_string(),
                        message: e.to_string(),
                    })?;
                    check_fetch_url(&jwks, self.settings.allow_insecure_http).map_err(
                        |message| JwksError::NoJwksUri {
                            url: url.to_string(),
                            message,
                        },
                    )?;
                    return Ok(jwks);
                }
                Err(e) => tried.push(e.to_string()),
            }
        }
        Err(JwksError::Discovery {
            issuer: issuer.to_owned(),
            tried: tried.join("; "),
        })
    }

    /// GET with the size cap enforced while reading; only 200 counts.
    pub async fn get(&self, url: &Url) -> Result<(Vec<u8>, Option<Duration>), JwksError> {
        let fetch_err = |e: reqwest::Error| JwksError::Fetch {
            url: url.to_string(),
            message: e.to_string(),
        };
        let mut resp = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(fetch_err)?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(JwksError::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let limit = self.settings.max_response_bytes;
        let too_large = || JwksError::TooLarge {
            url: url.to_string(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let max_age = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(cache_max_age);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(fetch_err)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

impl JwksManager {
    /// `doctor` only: a client-credentials token request with an RFC 8707 `resource`.
    pub async fn client_credentials_token(
        &self,
        endpoint: &str,
        client_id: &str,
        client_secret: &str,
        resource: &str,
        scope: &str,
    ) -> Result<String, JwksError> {
        let err = |message: String| JwksError::Fetch {
            url: endpoint.to_owned(),
            message,
        };
        let url = Url::parse(endpoint).map_err(|e| err(e.to_string()))?;
        check_fetch_url(&url, self.settings.allow_insecure_http).map_err(err)?;
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials")
            .append_pair("resource", resource);
        if !scope.is_empty() {
            form.append_pair("scope", scope);
        }
        let resp = self
            .http
            .post(url)
            .basic_auth(client_id, Some(client_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.finish())
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| err(e.to_string()))?;
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| err(format!("HTTP {status}, not JSON: {e}")))?;
        match doc.get("access_token").and_then(Value::as_str) {
            Some(t) if status == 200 => Ok(t.to_owned()),
            _ => Err(err(format!(
                "HTTP {status}: {}",
                doc.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no access_token")
            ))),
        }
    }
}

/// Where to look for an issuer's metadata, in order.
pub fn discovery_urls(issuer: &str) -> Result<Vec<Url>, JwksError> {
    let bad = |m: String| JwksError::Discovery {
        issuer: issuer.to_owned(),
        tried: m,
    };
    let u = Url::parse(issuer).map_err(|e| bad(e.to_string()))?;
    let origin = u.origin().ascii_serialization();
    let path = u.path().trim_end_matches('/');
    let rfc8414 = format!("{origin}/.well-known/oauth-authorization-server{path}");
    let oidc = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    [rfc8414, oidc]
        .iter()
        .map(|s| Url::parse(s).map_err(|e| bad(e.to_string())))
        .collect()
}

/// The `jsonwebtoken` name of an algorithm we accept.
fn jwt_alg(a: Alg) -> jsonwebtoken::Algorithm {
    use jsonwebtoken::Algorithm as J;
    match a {
        Alg::RS256 => J::RS256,
        Alg::RS384 => J::RS384,
        Alg::RS512 => J::RS512,
        Alg::PS256 => J::PS256,
        Alg::PS384 => J::PS384,
        Alg::PS512 => J::PS512,
        Alg::ES256 => J::ES256,
        Alg::ES384 => J::ES384,
        Alg::EdDSA => J::EdDSA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    fn rsa_jwk(bits: usize, extra: &str) -> String {
        let mut n = vec![0u8; bits / 8];
        n[0] = 0x80;
        n[bits / 8 - 1] = 1;
        format!(r#"{{"kty":"RSA","n":"{}","e":"AQAB"{extra}}}"#, b64(&n))
    }

    #[test]
    fn rsa_keys_verify_each_algorithm_they_accept_and_no_other() {
        use aws_lc_rs::signature::KeyPair;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let public = pair.public_key();
        let jwk = |extra: &str| {
            let v: Value = serde_json::from_str(&format!(
                r#"{{"kty":"RSA","n":"{}","e":"{}"{extra}}}"#,
                b64(public.modulus().big_endian_without_leading_zero()),
                b64(public.exponent().big_endian_without_leading_zero()),
            ))
            .unwrap();
            parse_jwk(&v).unwrap()
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let message = b"header.payload";
        let sign = |params: &'static dyn signature::RsaEncoding| {
            let mut sig = vec![0u8; pair.public_modulus_len()];
            pair.sign(params, &rng, message, &mut sig).unwrap();
            sig
        };
        let signed = [
            (Alg::RS256, sign(&signature::RSA_PKCS1_SHA256)),
            (Alg::RS512, sign(&signature::RSA_PKCS1_SHA512)),
            (Alg::PS256, sign(&signature::RSA_PSS_SHA256)),
            (Alg::PS384, sign(&signature::RSA_PSS_SHA384)),
        ];
        let any = jwk("");
        for (alg, sig) in &signed {
            assert!(any.verify(*alg, message, sig), "{alg:?}");
            assert!(
                !any.verify(*alg, b"header.payloaD", sig),
                "{alg:?} tampered"
            );
            for (other, _) in signed.iter().filter(|(a, _)| a != alg) {
                assert!(!any.verify(*other, message, sig), "{alg:?} as {other:?}");
            }
            assert!(!any.verify(Alg::ES256, message, sig));
        }
        // A JWK naming its algorithm verifies with that one only.
        let only = jwk(r#","alg":"PS256""#);
        assert!(only.verify(Alg::PS256, message, &signed[2].1));
        assert!(!only.verify(Alg::RS256, message, &signed[0].1));
    }

    #[test]
    fn parse_skips_bad_keys_and_keeps_good_ones() {
        let doc = format!(
            r#"{{"keys":[
                {},
                {{"kty":"MLDSA","kid":"pq","pub":"xyz","alg":"ML-DSA-65"}},
                {{"kty":"oct","kid":"sym","k":"c2VjcmV0"}},
                {},
                {},
                {{"kty":"EC","kid":"p521","crv":"P-521","x":"AA","y":"AA"}},
                {{"kty":"EC","kid":"p256bad","crv":"P-256","x":"AA","y":"AA"}},
                {},
                "not an object",
                {{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"{}"}}
            ]}}"#,
            rsa_jwk(2048, r#","kid":"good","alg":"RS256","use":"sig""#),
            rsa_jwk(2048, r#","kid":"enc","use":"enc""#),
            rsa_jwk(1024, r#","kid":"weak""#),
            rsa_jwk(2048, r#","kid":"rsa-es","alg":"ES256""#),
            b64(&[7u8; 32]),
        );
        let (keys, skipped) = parse_jwks(doc.as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, vec!["good", "ed"]);
        let reasons: Vec<_> = skipped
            .iter()
            .map(|(k, r)| (k.clone().unwrap_or_default(), *r))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("pq".into(), SkipReason::UnsupportedAlg),
                ("sym".into(), SkipReason::Symmetric),
                ("enc".into(), SkipReason::EncryptionKey),
                ("weak".into(), SkipReason::WeakRsa),
                ("p521".into(), SkipReason::UnsupportedCurve),
                ("p256bad".into(), SkipReason::Malformed),
                ("rsa-es".into(), SkipReason::UnsupportedAlg),
                ("".into(), SkipReason::Malformed),
            ]
        );
        assert!(keys[0].accepts(Alg::RS256));
        assert!(!keys[0].accepts(Alg::PS256), "JWK alg pins the algorithm");
        assert!(!keys[0].accepts(Alg::ES256));
        assert!(keys[1].accepts(Alg::EdDSA));
    }

    #[test]
    fn unknown_kty_without_alg_is_skipped() {
        let (keys, skipped) = parse_jwks(br#"{"keys":[{"kty":"MLDSA","kid":"pq"}]}"#).unwrap();
        assert!(keys.is_empty());
        assert_eq!(skipped[0].1, SkipReason::UnsupportedKty);
    }

    #[test]
    fn not_a_key_set() {
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(br#"{"keys":"x"}"#).is_err());
        assert!(parse_jwks(br#"{"keys":[{"kty":"RSA"}]"#).is_err());
    }

    #[test]
    fn rsa_bit_length() {
        assert_eq!(rsa_bits(&[0, 0, 0x80, 0]), 16);
        assert_eq!(rsa_bits(&[0x01, 0]), 9);
        assert_eq!(rsa_bits(&[]), 0);
    }

    #[test]
    fn cache_control_parsing() {
        assert_eq!(
            cache_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(cache_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(cache_max_age("max-age=abc"), None);
        assert_eq!(cache_max_age("private"), None);
    }

    #[test]
    fn discovery_url_forms() {
        let u = discovery_urls("https://iam.example.com").unwrap();
        assert_eq!(
            u[0].as_str(),
            "https://iam.example.com/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            u[1].as_str(),
            "https://iam.example.com/.well-known/openid-configuration"
        );
        let u = discovery_urls("https://iam.example.com/tenant/1").unwrap();
        assert_eq!(
            u[0].as_str(),
            "https://iam.example.com/.well-known/oauth-authorization-server/tenant/1"
        );
        assert_eq!(
            u[1].as_str(),
            "https://iam.example.com/tenant/1/.well-known/openid-configuration"
        );
    }
}
