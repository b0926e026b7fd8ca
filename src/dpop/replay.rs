//! The `jti` replay cache (RFC 9449 §11.1): a proof's (key, `jti`) is remembered until its
//! `iat` falls out of the acceptance window, in a bounded, lock-free map local to this
//! replica. When the map is full of live entries a proof is refused, never remembered by
//! evicting another: evicting would let that other proof be replayed.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest;

/// Why a proof could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// This key already sent this `jti` within the window.
    Replayed,
    /// Full of live entries: fail closed.
    Full,
}

pub type Key = [u8; 32];

pub struct ReplayCache {
    /// Key → first second at which the proof can no longer be accepted (so may be forgotten).
    map: papaya::HashMap<Key, u64>,
    capacity: usize,
    /// When the last sweep of expired entries ran: at most one per second, so a flood at
    /// capacity does not turn every Check into a full scan.
    last_sweep: AtomicU64,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("len", &self.map.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl ReplayCache {
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            map: papaya::HashMap::new(),
            capacity,
            last_sweep: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// SHA-256 of (resource, key thumbprint, `jti`), length-prefixed: `jti` values are only
    /// unique per key (RFC 9449 §11.1), and never stored as sent.
    pub fn key(resource_id: &str, jkt: &str, jti: &str) -> Key {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for part in [resource_id, jkt, jti] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// Remember `key` until `until`, or say it was already seen (or there is no room).
    pub fn record(&self, key: Key, until: u64, now: u64) -> Result<(), ReplayError> {
        let map = self.map.pin();
        if map.len() >= self.capacity {
            let last = self.last_sweep.load(Ordering::Relaxed);
            if now > last
                && self
                    .last_sweep
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                map.retain(|_, exp| now < *exp);
            }
            if map.len() >= self.capacity {
                return Err(ReplayError::Full);
            }
        }
        match map.try_insert(key, until) {
            Ok(_) => Ok(()),
            Err(_) => Err(ReplayError::Replayed),
        }
    }

    /// Drop entries whose proofs can no longer be accepted (run periodically).
    pub fn sweep(&self, now: u64) {
        self.map.pin().retain(|_, exp| now < *exp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_is_refused_and_expiry_frees_room() {
        let c = ReplayCache::new(2);
        let a = ReplayCache::key("r", "k", "a");
        assert_eq!(c.record(a, 100, 10), Ok(()));
        assert_eq!(c.record(a, 100, 11), Err(ReplayError::Replayed));
        assert_eq!(c.record(ReplayCache::key("r", "k", "b"), 50, 11), Ok(()));
        // Full of live entries: refused, nothing evicted, the first is still a replay.
        assert_eq!(
            c.record(ReplayCache::key("r", "k", "c"), 100, 12),
            Err(ReplayError::Full)
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c.record(a, 100, 12), Err(ReplayError::Full));
        // Once `b` expired there is room again.
        assert_eq!(c.record(ReplayCache::key("r", "k", "c"), 100, 60), Ok(()));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn keys_separate_resources_keys_and_jtis() {
        let k = ReplayCache::key;
        assert_ne!(k("r", "k", "j"), k("r2", "k", "j"));
        assert_ne!(k("r", "k", "j"), k("r", "k2", "j"));
        assert_ne!(k("r", "kj", ""), k("r", "k", "j"));
    }
}
