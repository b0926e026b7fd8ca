//! The verified-token fast path: a bounded, lock-free cache of tokens that passed full
//! validation for a resource, keyed by SHA-256 of (resource id, token) — never the token
//! itself. An entry is used only while the token is unexpired and its issuer's key set is
//! the one it was verified against, and only under the configuration it was verified under,
//! so cached decisions equal uncached ones.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest;

use crate::jwks::{JwksManager, KeysState};
use crate::metrics::Metrics;
use crate::principal::Principal;

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
    /// The cache epoch (configuration generation) the Check that verified it started in.
    epoch: u64,
}

pub type Key = [u8; 32];

/// Make room in a full map of a bounded cache: remove up to [`EVICT_BATCH`] entries, those
/// expired at `now` (by `until`, the first second an entry is no longer used) first, found
/// in a scan of at most [`EVICT_SCAN`]; hash order is effectively random. Returns how many
/// entries this call removed. Only the verified-token cache evicts this way now: the
/// introspection answer cache, whose every insert can be an eviction under a flood of one-use
/// opaque tokens, is bounded by generations instead (`introspect::cache`).
fn evict_batch<V, S, G>(
    map: &papaya::HashMapRef<'_, Key, V, S, G>,
    now: u64,
    until: impl Fn(&V) -> u64,
) -> usize
where
    S: std::hash::BuildHasher,
    G: papaya::Guard,
{
    let mut victims: Vec<Key> = map
        .iter()
        .take(EVICT_SCAN)
        .filter(|(_, e)| now >= until(e))
        .map(|(k, _)| *k)
        .take(EVICT_BATCH)
        .collect();
    if victims.len() < EVICT_BATCH {
        victims.extend(map.keys().take(EVICT_BATCH - victims.len()).copied());
    }
    victims.iter().filter(|k| map.remove(*k).is_some()).count()
}

pub struct TokenCache {
    map: papaya::HashMap<Key, Entry>,
    capacity: usize,
    metrics: Metrics,
    /// Bumped by [`TokenCache::clear`] (every configuration reload). A Check reads it before
    /// it loads the configuration and stamps its entry with it; entries of another epoch are
    /// never used. Without it a Check that began under the old configuration could insert
    /// after the reload's clear, and its entry would outlive the policy change.
    epoch: AtomicU64,
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
            epoch: AtomicU64::new(0),
        }
    }

    /// The current epoch. Read it *before* loading the configuration a decision uses: a
    /// reload stores the new configuration and then clears (bumps the epoch), so a Check that
    /// saw the old configuration necessarily saw the old epoch (SeqCst orders the two).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
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

    /// A previously verified principal, if still valid at `now` under the current keys and
    /// verified in `epoch`, which must still be the current one.
    pub fn get(&self, key: &Key, now: u64, jwks: &JwksManager, epoch: u64) -> Option<Principal> {
        if self.capacity == 0 {
            return None;
        }
        if epoch != self.epoch() {
            self.metrics.token_cache(false);
            return None;
        }
        let map = self.map.pin();
        let hit = map.get(key).and_then(|e| {
            let keys_same = match jwks.keys(&e.principal.issuer) {
                KeysState::Ready(set) => set.generation == e.key_generation,
                KeysState::Unavailable => false,
            };
            (now < e.expires_at && keys_same && e.epoch == epoch).then(|| e.principal.clone())
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
        epoch: u64,
    ) {
        // A Check that began before a reload must not fill the new epoch's cache.
        if self.capacity == 0 || now >= expires_at || epoch != self.epoch() {
            return;
        }
        let map = self.map.pin();
        if map.len() >= self.capacity {
            for _ in 0..evict_batch(&map, now, |e| e.expires_at) {
                self.metrics.token_cache_eviction();
            }
        }
        map.insert(
            key,
            Entry {
                principal,
                key_generation,
                expires_at,
                epoch,
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
    /// Call it after the new configuration is stored: the epoch bump first retires every entry
    /// at once (an insert racing with the clear carries the old epoch and is never used).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
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
