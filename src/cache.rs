//! The verified-token fast path: a bounded, lock-free cache of tokens that passed full
//! validation for a resource, keyed by SHA-256 of (resource id, token) — never the token
//! itself. An entry is used only while the token is unexpired and its issuer's key set is
//! the one it was verified against, so cached decisions equal uncached ones.

use aws_lc_rs::digest;

use crate::jwks::{JwksManager, KeysState};
use crate::metrics::Metrics;
use crate::token::Principal;

/// How many entries one overflow evicts (amortises the scan).
const EVICT_BATCH: usize = 64;
/// How many entries one overflow looks at for expired ones to evict first. Bounded: scanning
/// the whole map on every overflow made each insert at capacity cost ~50 µs under a flood of
/// distinct tokens (benches/BENCHMARKS.md); `sweep` drops the expired entries elsewhere.
const EVICT_SCAN: usize = 1024;

#[derive(Debug, Clone)]
struct Entry {
    principal: Principal,
    /// Generation of the issuer's key set that verified the signature.
    key_generation: u64,
    /// First second at which the token counts as expired (`exp + leeway`).
    expires_at: u64,
}

pub type Key = [u8; 32];

pub struct TokenCache {
    map: papaya::HashMap<Key, Entry>,
    capacity: usize,
    metrics: Metrics,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.map.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl TokenCache {
    /// `capacity` 0 disables caching.
    pub fn new(capacity: usize, metrics: Metrics) -> TokenCache {
        TokenCache {
            map: papaya::HashMap::new(),
            capacity,
            metrics,
        }
    }

    pub fn key(resource_id: &str, token: &str) -> Key {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(resource_id.as_bytes());
        ctx.update(&[0]);
        ctx.update(token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// A previously verified principal, if still valid at `now` under the current keys.
    pub fn get(&self, key: &Key, now: u64, jwks: &JwksManager) -> Option<Principal> {
        if self.capacity == 0 {
            return None;
        }
        let map = self.map.pin();
        let hit = map.get(key).and_then(|e| {
            let keys_same = match jwks.keys(&e.principal.issuer) {
                KeysState::Ready(set) => set.generation == e.key_generation,
                KeysState::Unavailable => false,
            };
            (now < e.expires_at && keys_same).then(|| e.principal.clone())
        });
        self.metrics.token_cache(hit.is_some());
        hit
    }

    pub fn insert(
        &self,
        key: Key,
        principal: Principal,
        key_generation: u64,
        expires_at: u64,
        now: u64,
    ) {
        if self.capacity == 0 || now >= expires_at {
            return;
        }
        let map = self.map.pin();
        if map.len() >= self.capacity {
            // Hash order is effectively random: evict a batch, expired entries first.
            let mut victims: Vec<Key> = map
                .iter()
                .take(EVICT_SCAN)
                .filter(|(_, e)| now >= e.expires_at)
                .map(|(k, _)| *k)
                .take(EVICT_BATCH)
                .collect();
            if victims.len() < EVICT_BATCH {
                victims.extend(map.keys().take(EVICT_BATCH - victims.len()).copied());
            }
            for k in victims {
                if map.remove(&k).is_some() {
                    self.metrics.token_cache_eviction();
                }
            }
        }
        map.insert(
            key,
            Entry {
                principal,
                key_generation,
                expires_at,
            },
        );
        self.metrics.token_cache_entries(map.len());
    }

    /// Drop expired entries (run periodically).
    pub fn sweep(&self, now: u64) {
        let map = self.map.pin();
        map.retain(|_, e| now < e.expires_at);
        self.metrics.token_cache_entries(map.len());
    }

    /// Forget everything (configuration reload: issuers, audiences or leeway may have changed).
    pub fn clear(&self) {
        self.map.pin().clear();
        self.metrics.token_cache_entries(0);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
