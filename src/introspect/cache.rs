//! Introspection answers remembered per issuer: a bounded, lock-free map keyed by SHA-256 of
//! the token (never the token), each answer until `judge::cache_until` (never past `exp`;
//! inactive ones briefly). Eviction is the verified-token cache's (`crate::cache::evict_batch`):
//! a batch at a time, expired entries first, from a bounded scan.

use std::sync::Arc;

use aws_lc_rs::digest;
use serde_json::{Map, Value};

pub use crate::cache::Key;

/// SHA-256 of the token, domain-separated from the verified-token cache's keys.
pub fn key(token: &str) -> Key {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"mcp-authz introspection\0");
    ctx.update(token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

struct Entry {
    answer: Arc<Map<String, Value>>,
    /// First second the answer may no longer be used.
    until: u64,
}

pub struct AnswerCache {
    map: papaya::HashMap<Key, Entry>,
    capacity: usize,
}

impl AnswerCache {
    /// `capacity` 0 disables caching.
    pub fn new(capacity: usize) -> AnswerCache {
        AnswerCache {
            map: papaya::HashMap::new(),
            capacity,
        }
    }

    pub fn get(&self, key: &Key, now: u64) -> Option<Arc<Map<String, Value>>> {
        if self.capacity == 0 {
            return None;
        }
        let map = self.map.pin();
        map.get(key)
            .filter(|e| now < e.until)
            .map(|e| e.answer.clone())
    }

    pub fn insert(&self, key: Key, answer: Arc<Map<String, Value>>, until: u64, now: u64) {
        if self.capacity == 0 || now >= until {
            return;
        }
        let map = self.map.pin();
        if map.len() >= self.capacity {
            crate::cache::evict_batch(&map, now, |e| e.until);
        }
        map.insert(key, Entry { answer, until });
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let c = AnswerCache::new(100);
        let a = Arc::new(Map::new());
        for i in 0..1000 {
            c.insert(key(&format!("t{i}")), a.clone(), 50, 10);
            assert!(c.len() <= 100, "{}", c.len());
        }
        c.insert(key("x"), a.clone(), 50, 10);
        assert!(c.get(&key("x"), 49).is_some());
        assert!(c.get(&key("x"), 50).is_none());
        // Never stored once its time is over.
        c.insert(key("y"), a.clone(), 10, 10);
        assert!(c.get(&key("y"), 5).is_none());
        let off = AnswerCache::new(0);
        off.insert(key("x"), a, 50, 10);
        assert!(off.get(&key("x"), 11).is_none());
        assert_ne!(key("a"), key("b"));
    }
}
