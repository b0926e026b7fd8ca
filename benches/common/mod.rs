//! What the in-process benchmarks share: how they are told apart from `cargo test --benches`,
//! and their one numeric option.

/// Whether `cargo bench` started this binary. `cargo test --benches` runs bench binaries
/// without `--bench`: compile-only there, with a hint on how to run `name`.
pub fn started_by_cargo_bench(name: &str) -> bool {
    let yes = std::env::args().any(|a| a == "--bench");
    if !yes {
        eprintln!("{name} benchmark: run it with `cargo bench --bench {name}`");
    }
    yes
}

/// The value of `--<flag> N` on the command line, else `default`.
#[allow(dead_code)] // not every benchmark takes a count
pub fn count_arg(flag: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a.strip_prefix("--") == Some(flag))
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
