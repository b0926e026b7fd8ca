//! The verified-token cache's insert cost below capacity and at capacity (every insert then
//! evicts), which a flood of distinct tokens pays on top of signature verification.
//!
//! `cargo bench --bench cache`

mod common;

use std::time::Instant;

use mcp_authz::cache::TokenCache;
use mcp_authz::metrics::Metrics;
use mcp_authz::scope::Scopes;
use mcp_authz::token::Principal;

fn main() {
    if !common::started_by_cargo_bench("cache") {
        return;
    }
    let capacity = 50_000;
    let flood = 20_000;
    let now = 1_700_000_000;
    let cache = TokenCache::new(capacity, Metrics::new());
    let principal = |i: usize| Principal {
        issuer: "https://iam.example.com".into(),
        subject: Some(format!("user-{i:08}-2f4b-4a53-9c1e-5b7f0c7d9e21")),
        client_id: Some("mcp-client-1".into()),
        scopes: Scopes::parse_space("files:list files:read"),
        expires_at: now + 3600,
        cnf_jkt: None,
    };
    let keys: Vec<_> = (0..capacity + flood)
        .map(|i| TokenCache::key("files", &format!("token-{i}")))
        .collect();
    let entries: Vec<_> = (0..capacity + flood).map(principal).collect();
    let mut entries = entries.into_iter();
    let started = Instant::now();
    for key in &keys[..capacity] {
        let p = entries.next().expect("entry");
        cache.insert(*key, p, 1, now + 3630, now, 0);
    }
    let below = started.elapsed().as_secs_f64() * 1e6 / capacity as f64;
    let started = Instant::now();
    for key in &keys[capacity..] {
        let p = entries.next().expect("entry");
        cache.insert(*key, p, 1, now + 3630, now, 0);
    }
    let at = started.elapsed().as_secs_f64() * 1e6 / flood as f64;
    println!("| cache insert | µs per insert |");
    println!("|---|---|");
    println!("| below capacity (0 → {capacity} entries) | {below:.2} |");
    println!(
        "| at capacity ({flood} more, evicting; {} entries after) | {at:.2} |",
        cache.len()
    );
}
