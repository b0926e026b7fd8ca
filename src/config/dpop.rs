//! `dpop:` of a resource (RFC 9449, DPoP-bound access tokens): the schema, the validated
//! settings and their checks.

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::hmac;
use serde::Deserialize;

use super::{Alg, ConfigError, invalid};

/// Whether a resource takes DPoP-bound tokens (RFC 9449 §7).
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DpopMode {
    /// Only `Bearer` (default). A token bound with `cnf.jkt` is still refused as a bearer
    /// token (RFC 9449 §7.2).
    #[default]
    Off,
    /// `DPoP` and `Bearer` both accepted; challenges name both schemes.
    Allowed,
    /// Only `DPoP`: a plain `Bearer` token is refused.
    Required,
}

impl DpopMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DpopMode::Off => "off",
            DpopMode::Allowed => "allowed",
            DpopMode::Required => "required",
        }
    }
}

/// `resources[].dpop`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpop {
    /// `off` (default), `allowed` or `required`.
    #[serde(default)]
    pub mode: DpopMode,
    /// JWS algorithms a proof may be signed with (default ES256, EdDSA, RS256, PS256):
    /// asymmetric only (RFC 9449 §4.3 item 5: never `none`, never a MAC).
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// How far a proof's `iat` may be from now, either way, in seconds (default 60, 1..=600);
    /// also how long its `jti` is remembered (RFC 9449 §11.1).
    #[serde(default = "d60")]
    pub iat_window_seconds: u64,
    /// Proofs remembered for replay detection on this replica (default 100000,
    /// 1..=10000000). When full of live entries, new proofs are refused (fail closed).
    #[serde(default = "d100000")]
    pub replay_cache_entries: usize,
    /// A replay store shared by every replica (Redis or Valkey), behind the local cache: a
    /// proof replayed to another replica is caught too. Absent: replica-local only.
    #[serde(default)]
    pub replay_store: Option<RawReplayStore>,
    /// Server-issued nonces (RFC 9449 §8–9): `off` (default) or `required`.
    #[serde(default)]
    pub nonce: NonceMode,
    /// The HMAC key of the nonces (at least 32 bytes, whitespace around it ignored), the same
    /// file on every replica; required with `nonce: required`.
    #[serde(default)]
    pub nonce_key_file: Option<PathBuf>,
    /// How long a nonce is accepted (default 300, 10..=86400).
    #[serde(default = "d300")]
    pub nonce_seconds: u64,
}

/// `dpop.nonce`.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NonceMode {
    #[default]
    Off,
    Required,
}

fn d300() -> u64 {
    300
}

/// The validated nonce settings.
#[derive(Debug, Clone)]
pub struct NonceSettings {
    pub key: NonceKey,
    pub seconds: u64,
}

/// `resources[].dpop.replay_store`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplayStore {
    /// `redis://host:port[/db]` (Redis or Valkey; no TLS).
    pub url: String,
    /// Time for one `SET NX` round trip, connecting included (default 250, 1..=5000);
    /// beyond it the request is refused with 503 (fail closed).
    #[serde(default = "d250")]
    pub timeout_ms: u64,
}

fn d250() -> u64 {
    250
}

fn d60() -> u64 {
    60
}

fn d100000() -> usize {
    100_000
}

/// The validated `dpop:` of a resource.
#[derive(Debug, Clone)]
pub struct DpopSettings {
    pub mode: DpopMode,
    pub algorithms: Vec<Alg>,
    pub iat_window_seconds: u64,
    pub replay_cache_entries: usize,
    pub replay_store: Option<ReplayStoreSettings>,
    /// `Some` with `nonce: required`.
    pub nonce: Option<NonceSettings>,
}

/// The validated `replay_store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayStoreSettings {
    pub url: String,
    pub timeout_ms: u64,
}

impl Default for DpopSettings {
    fn default() -> Self {
        DpopSettings {
            mode: DpopMode::Off,
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            iat_window_seconds: 60,
            replay_cache_entries: 100_000,
            replay_store: None,
            nonce: None,
        }
    }
}

impl DpopSettings {
    /// The `algs` attribute of the `DPoP` challenge (RFC 9449 §7.1): space-separated.
    pub fn algs(&self) -> String {
        let names: Vec<&str> = self.algorithms.iter().map(|a| a.as_str()).collect();
        names.join(" ")
    }
}

const DEFAULT_ALGORITHMS: [Alg; 4] = [Alg::ES256, Alg::EdDSA, Alg::RS256, Alg::PS256];

/// Check `resources[i].dpop` (`at` is that YAML path).
pub fn validate_dpop(at: &str, raw: Option<RawDpop>) -> Result<DpopSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(DpopSettings::default());
    };
    let algorithms = match raw.algorithms {
        None => DEFAULT_ALGORITHMS.to_vec(),
        Some(list) => {
            if list.is_empty() {
                return Err(invalid(
                    format!("{at}.algorithms"),
                    "must name at least one algorithm",
                ));
            }
            let mut out = Vec::new();
            for (i, name) in list.iter().enumerate() {
                let here = format!("{at}.algorithms[{i}]");
                if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS")
                {
                    return Err(invalid(
                        here,
                        format!(
                            "{name:?} is not allowed: DPoP proofs are signed with an asymmetric key (RFC 9449 §4.3)"
                        ),
                    ));
                }
                let alg = Alg::parse(name).ok_or_else(|| {
                    invalid(
                        &here,
                        format!("unknown algorithm {name:?} (ES256, ES384, EdDSA, RS256, RS384, RS512, PS256, PS384, PS512)"),
                    )
                })?;
                if !matches!(
                    alg,
                    Alg::ES256
                        | Alg::ES384
                        | Alg::EdDSA
                        | Alg::RS256
                        | Alg::RS384
                        | Alg::RS512
                        | Alg::PS256
                        | Alg::PS384
                        | Alg::PS512
                ) {
                    return Err(invalid(
                        here,
                        format!("{name:?} has no RFC 7638 key thumbprint to bind a token to"),
                    ));
                }
                if !out.contains(&alg) {
                    out.push(alg);
                }
            }
            out
        }
    };
    if !(1..=600).contains(&raw.iat_window_seconds) {
        return Err(invalid(
            format!("{at}.iat_window_seconds"),
            format!("must be 1..=600, not {}", raw.iat_window_seconds),
        ));
    }
    if !(1..=10_000_000).contains(&raw.replay_cache_entries) {
        return Err(invalid(
            format!("{at}.replay_cache_entries"),
            format!("must be 1..=10000000, not {}", raw.replay_cache_entries),
        ));
    }
    let replay_store = match raw.replay_store {
        None => None,
        Some(s) => Some(validate_store(&format!("{at}.replay_store"), s)?),
    };
    let nonce = match (raw.nonce, raw.nonce_key_file) {
        (NonceMode::Off, None) => None,
        (NonceMode::Off, Some(_)) => {
            return Err(invalid(
                format!("{at}.nonce_key_file"),
                "is only used with nonce: required",
            ));
        }
        (NonceMode::Required, None) => {
            return Err(invalid(
                format!("{at}.nonce_key_file"),
                "is required with nonce: required (the same key file on every replica)",
            ));
        }
        (NonceMode::Required, Some(path)) => {
            if !(10..=86_400).contains(&raw.nonce_seconds) {
                return Err(invalid(
                    format!("{at}.nonce_seconds"),
                    format!("must be 10..=86400, not {}", raw.nonce_seconds),
                ));
            }
            let key = NonceKey::from_file(&path)
                .map_err(|e| invalid(format!("{at}.nonce_key_file"), e))?;
            Some(NonceSettings {
                key,
                seconds: raw.nonce_seconds,
            })
        }
    };
    Ok(DpopSettings {
        mode: raw.mode,
        algorithms,
        iat_window_seconds: raw.iat_window_seconds,
        replay_cache_entries: raw.replay_cache_entries,
        replay_store,
        nonce,
    })
}

fn validate_store(at: &str, raw: RawReplayStore) -> Result<ReplayStoreSettings, ConfigError> {
    let url = url::Url::parse(&raw.url)
        .map_err(|e| invalid(format!("{at}.url"), format!("not a URL: {e}")))?;
    if url.scheme() != "redis" || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(
            format!("{at}.url"),
            "must be redis://host:port[/db] (Redis or Valkey)",
        ));
    }
    if !(1..=5000).contains(&raw.timeout_ms) {
        return Err(invalid(
            format!("{at}.timeout_ms"),
            format!("must be 1..=5000, not {}", raw.timeout_ms),
        ));
    }
    Ok(ReplayStoreSettings {
        url: raw.url,
        timeout_ms: raw.timeout_ms,
    })
}

/// Shortest nonce key accepted.
pub const MIN_KEY_BYTES: usize = 32;

/// The HMAC key of DPoP nonces (`dpop.nonce_key_file`; issued and checked by
/// `dpop::nonce`).
#[derive(Clone)]
pub struct NonceKey(hmac::Key);

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

impl NonceKey {
    pub(crate) fn hmac(&self) -> &hmac::Key {
        &self.0
    }

    /// A key from its bytes; ASCII whitespace around it is ignored. At least
    /// [`MIN_KEY_BYTES`].
    pub fn from_bytes(raw: &[u8]) -> Result<NonceKey, String> {
        let key = raw.trim_ascii();
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key has {} bytes; at least {MIN_KEY_BYTES} are needed (e.g. `openssl rand -base64 48`)",
                key.len()
            ));
        }
        Ok(NonceKey(hmac::Key::new(hmac::HMAC_SHA256, key)))
    }

    pub fn from_file(path: &Path) -> Result<NonceKey, String> {
        let raw =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        NonceKey::from_bytes(&raw)
    }
}
