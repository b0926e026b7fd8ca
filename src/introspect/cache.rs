//! Introspection answers remembered per issuer: a bounded, lock-free map keyed by SHA-256 of
//! the token (never the token), each answer until `judge::cache_until` (never past `exp`;
//! inactive ones briefly). Bounded by two generations (see [`AnswerCache`]).

use std::sync::Arc;

use arc_swap::ArcSwap;
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

type Generation = Arc<papaya::HashMap<Key, Entry>>;

/// The two generations: lookups read both, inserts go to `young`.
struct Generations {
    young: Generation,
    old: Generation,
}

/// Bounded by generations, never by removing entries one by one. An introspection flood (one-use
/// opaque tokens: anyone can send them, and inactive answers are cached too) makes every insert
/// an eviction; under that churn papaya 0.2.5 entered a resize loop that allocated without end
/// (3.6 GB in 20 s on the load bench's `introspect-miss` row, still growing after the flood).
/// Here no entry is ever removed: when the young generation holds half the capacity it becomes
/// the old one and the previous old one is dropped whole, so at most `capacity` answers are
/// held and no map sees a deletion. Lookups and inserts stay lock-free (`ArcSwap`).
pub struct AnswerCache {
    generations: ArcSwap<Generations>,
    capacity: usize,
}

fn generation() -> Generation {
    Arc::new(papaya::HashMap::new())
}

impl AnswerCache {
    /// `capacity` 0 disables caching.
    pub fn new(capacity: usize) -> AnswerCache {
        AnswerCache {
            generations: ArcSwap::from_pointee(Generations {
                young: generation(),
                old: generation(),
            }),
            capacity,
        }
    }

    pub fn get(&self, key: &Key, now: u64) -> Option<Arc<Map<String, Value>>> {
        if self.capacity == 0 {
            return None;
        }
        let g = self.generations.load();
        let found = |map: &Generation| {
            map.pin()
                .get(key)
                .filter(|e| now < e.until)
                .map(|e| e.answer.clone())
        };
        found(&g.young).or_else(|| found(&g.old))
    }

    pub fn insert(&self, key: Key, answer: Arc<Map<String, Value>>, until: u64, now: u64) {
        if self.capacity == 0 || now >= until {
            return;
        }
        let half = self.capacity.div_ceil(2);
        let g = self.generations.load();
        if g.young.len() >= half {
            // The young generation is full: it becomes the old one. Whoever loses the race
            // inserts into the winner's young generation.
            let next = Arc::new(Generations {
                young: generation(),
                old: g.young.clone(),
            });
            let _ = self.generations.compare_and_swap(&g, next);
        }
        let g = self.generations.load();
        g.young.pin().insert(key, Entry { answer, until });
    }

    /// Answers held, both generations (a key in both counts twice).
    pub fn len(&self) -> usize {
        let g = self.generations.load();
        g.young.len() + g.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        // The most recent half-capacity is always there.
        for i in 950..1000 {
            assert!(c.get(&key(&format!("t{i}")), 11).is_some(), "t{i}");
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

    #[test]
    fn a_flood_of_one_use_tokens_stays_bounded() {
        // Every insert past the first `capacity` would be an eviction: from two threads, as
        // the control runtime's workers insert (the load bench's `introspect-miss` row).
        let c = Arc::new(AnswerCache::new(1000));
        let a = Arc::new(Map::new());
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (c, a) = (c.clone(), a.clone());
                std::thread::spawn(move || {
                    for i in 0..50_000 {
                        c.insert(key(&format!("{t}-{i}")), a.clone(), 50, 10);
                        assert!(c.len() <= 1000 + 4, "{}", c.len());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        c.insert(key("last"), a.clone(), 50, 10);
        assert!(c.get(&key("last"), 11).is_some());
        assert!(c.len() <= 1000 + 4, "{}", c.len());
    }
}
