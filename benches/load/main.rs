//! mcp-authz load benchmark: direct gRPC Check load, the same token through a real Envoy next
//! to Envoy's own jwt_authn + RBAC and a null ext_authz server, and memory with 100k cached
//! tokens. Prints Markdown tables (the ones in benches/BENCHMARKS.md).
//!
//! `cargo bench --bench load -- [all|direct|envoy|memory] [options]`

mod ceiling;
mod direct;
mod envoy;
mod fixture;
mod http1;
mod paths;
mod through_envoy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use prost::bytes::Bytes;

use ceiling::{CEILED, NEW_ROWS};
use direct::{Headers, Load, Outcome, Pick};
use fixture::{FILES_HOST, Keys, Ports, Service, TOOLS_HOST, claims, mib};
use mcp_authz::config::Alg;
use mcp_authz::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;

#[derive(Parser)]
#[command(about = "mcp-authz load benchmark (see benches/BENCHMARKS.md)")]
struct Args {
    /// Which part to run.
    #[arg(value_enum, default_value = "all")]
    what: What,
    /// Measured seconds per direct scenario.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Concurrent Check streams (direct).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the streams share (direct).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// One-use RS256 tokens for the distinct-token flood (the cache holds 50,000 by default).
    #[arg(long, default_value_t = 60_000)]
    distinct_tokens: usize,
    /// One-use ML-DSA-65 tokens, opaque tokens and DPoP proofs for the `mldsa-first`,
    /// `introspect-miss` and `dpop` rows (each ends after `--seconds` or when they are used up).
    #[arg(long, default_value_t = 60_000)]
    one_use_tokens: usize,
    /// CPU seconds for each in-process measurement a ceiling is made of (verification alone,
    /// the bare introspection client).
    #[arg(long, default_value_t = 2.0)]
    alone_seconds: f64,
    /// Tokens cached for the memory measurement.
    #[arg(long, default_value_t = 100_000)]
    cached_tokens: usize,
    /// Rounds per Envoy variant (variants alternate within each round).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured seconds per Envoy round.
    #[arg(long, default_value_t = 5.0)]
    round_seconds: f64,
    /// Keep-alive HTTP/1.1 connections to Envoy.
    #[arg(long, default_value_t = 16)]
    http_connections: usize,
    /// Skip the pre-lean ext_authz config variants (body and every header to the server).
    #[arg(long)]
    skip_legacy: bool,
    /// Skip the per-tool route (JSON-RPC body inspected) variants.
    #[arg(long)]
    skip_tools: bool,
    /// Skip the null servers answering with part of mcp-authz's answer (headers only,
    /// metadata only).
    #[arg(long)]
    skip_answer_parts: bool,
    /// Run mcp-authz with every identity header `null` and `identity.dynamic_metadata: false`:
    /// its allow is a bare OK.
    #[arg(long)]
    lean_answer: bool,
    /// Envoy: render with `envoy.check_streams_per_connection: N` (Envoy opens another HTTP/2
    /// connection to mcp-authz past N Checks in flight; each connection gets a worker thread).
    #[arg(long)]
    check_streams: Option<u32>,
    /// Do not pin Envoy to CPU 0 and everything else to CPU 1.
    #[arg(long)]
    no_pin: bool,
    /// Envoy: after setup, print the listeners and wait this long instead of measuring (to
    /// drive them with wrk/h2load or profile Envoy and mcp-authz by hand).
    #[arg(long)]
    hold_seconds: Option<u64>,
    /// The Envoy binary (default: the project venv's real binary).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Direct: run only these rows (comma-separated ids): null repeated half all-headers
    /// deny10 body worker1 distinct mldsa-first mldsa-cached introspect-hit introspect-miss
    /// dpop. A row with a ceiling also runs the rows its ceiling is made of (null, repeated).
    #[arg(long)]
    only: Option<String>,
    /// Run mcp-authz under this command, e.g. "valgrind --tool=callgrind" (profiling).
    #[arg(long)]
    wrap: Option<String>,
    /// (internal) Port for `null-server`.
    #[arg(long, hide = true)]
    port: Option<u16>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum What {
    All,
    Direct,
    Envoy,
    Memory,
    /// (internal) The null ext_authz server as its own process, on `--port`.
    #[value(hide = true)]
    NullServer,
}

fn us(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.0} ms", ns as f64 / 1e6)
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.0} µs", ns as f64 / 1e3)
    }
}

fn quantiles(h: &Histogram<u64>) -> [String; 4] {
    [
        us(h.value_at_quantile(0.50)),
        us(h.value_at_quantile(0.90)),
        us(h.value_at_quantile(0.99)),
        us(h.max()),
    ]
}

struct Setup {
    wrap: Option<String>,
    /// `identity:` section for every service (`--lean-answer`), else empty.
    identity: &'static str,
    dir: PathBuf,
    keys: Keys,
    jwks: String,
    jwks_file: PathBuf,
}

impl Setup {
    fn new(wrap: Option<String>, lean_answer: bool) -> Setup {
        let dir = fixture::work_dir();
        let keys = Keys::generate();
        let jwks = keys.jwks().to_string();
        let jwks_file = dir.join("jwks.json");
        std::fs::write(&jwks_file, &jwks).expect("write jwks");
        Setup {
            wrap,
            identity: if lean_answer {
                fixture::LEAN_IDENTITY
            } else {
                ""
            },
            dir,
            keys,
            jwks,
            jwks_file,
        }
    }

    fn service(&self, name: &str, cache: usize, env: &[(&str, &str)]) -> (Service, Ports) {
        self.service_with(name, cache, env, "")
    }

    /// With `resources` appended to the configuration's `resources:` list.
    fn service_with(
        &self,
        name: &str,
        cache: usize,
        env: &[(&str, &str)],
        resources: &str,
    ) -> (Service, Ports) {
        let ports = Ports::pick();
        let yaml = fixture::config_yaml(&ports, &self.jwks_file, cache, self.identity) + resources;
        (
            Service::start(&self.dir, name, &yaml, env, self.wrap.as_deref()),
            ports,
        )
    }
}

fn direct_row(name: &str, o: &Outcome) -> String {
    let [p50, p90, p99, max] = quantiles(&o.latency);
    format!(
        "| {name} | {:.0} | {p50} | {p90} | {p99} | {max} | {:.1} | {:.1} | {} | {}/{}/{} |",
        o.throughput(),
        o.cpu_per_check(),
        o.client_cpu_per_check(),
        mib(o.peak_rss_kib),
        o.allowed,
        o.denied,
        o.errors,
    )
}

/// One direct scenario: what is sent, how, and the row label.
struct Scenario {
    /// Short name for `--only`.
    id: &'static str,
    name: String,
    requests: Vec<Bytes>,
    pick: Pick,
    load: Load,
    env: Vec<(&'static str, &'static str)>,
    /// Against the null server instead of mcp-authz (the floor on this machine).
    null: bool,
    /// Resources appended to the configuration (the new token paths' rows).
    resources: String,
}

async fn run_scenario(s: &Setup, sc: Scenario) -> (Outcome, f64, f64) {
    eprintln!("direct: {}", sc.name);
    let sc_id = sc.id;
    let service = if sc.null {
        Service::null(&s.dir, &sc.env)
    } else {
        s.service_with("direct", 50_000, &sc.env, &sc.resources).0
    };
    let o = direct::run(&service, Arc::new(sc.requests), sc.pick, sc.load).await;
    // Let the runtime close the client connections, so the service drains at once on SIGTERM.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let entries = service.metric("mcp_authz_token_cache_entries");
    let evictions = service.metric("mcp_authz_token_cache_evictions_total");
    if s.wrap.is_some() {
        // Under a profiler: every Check the process served, warm-up included.
        eprintln!(
            "{}: the service answered {:.0} checks in all",
            sc_id,
            service.metric("mcp_authz_checks_total")
        );
    }
    (o, entries, evictions)
}

async fn run_direct(args: &Args, s: &Setup) {
    let load = Load {
        connections: args.connections,
        concurrency: args.concurrency,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(args.seconds),
        rate: None,
    };
    let listed = |id: &str| {
        args.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|w| w.trim() == id))
    };
    // A row printed with a ceiling needs the rows that ceiling is made of.
    let ceiled = CEILED.iter().any(|id| listed(id));
    let wanted = |id: &str| listed(id) || (ceiled && (id == "null" || id == "repeated"));
    let ok = s.keys.rs256(&claims(0, "files:list files:read"));
    let low = s.keys.rs256(&claims(1, "openid profile"));
    let req = |token: &str, headers| {
        direct::check_request("files", FILES_HOST, Some(token), headers, None)
    };
    let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/docs/readme.md"}}}"#;
    let mut mix: Vec<Bytes> = (0..9).map(|_| req(&ok, Headers::Lean)).collect();
    mix.push(req(&low, Headers::Lean));
    let cycle = |id: &'static str, name: &str, requests: Vec<Bytes>| Scenario {
        id,
        name: name.to_owned(),
        requests,
        pick: Pick::Cycle,
        load,
        env: vec![],
        null: false,
        resources: String::new(),
    };
    let mut scenarios = vec![
        Scenario {
            null: true,
            ..cycle(
                "null",
                "null ext_authz server, same runtime (the floor on this machine)",
                vec![req(&ok, Headers::Lean)],
            )
        },
        cycle("repeated", "repeated token", vec![req(&ok, Headers::Lean)]),
        cycle(
            "all-headers",
            "repeated token, every header (pre-lean Envoy config)",
            vec![req(&ok, Headers::All)],
        ),
        cycle(
            "deny10",
            "10% denials (403 insufficient_scope, logged)",
            mix,
        ),
        cycle(
            "body",
            "JSON-RPC body, per-tool rule (tools/call read_file)",
            vec![direct::check_request(
                "tools",
                TOOLS_HOST,
                Some(&ok),
                Headers::Lean,
                Some(("tools/call", "read_file", body)),
            )],
        ),
        Scenario {
            env: vec![("MCP_AUTHZ_WORKERS", "1")],
            ..cycle(
                "worker1",
                "repeated token, MCP_AUTHZ_WORKERS=1 (one Check worker)",
                vec![req(&ok, Headers::Lean)],
            )
        },
    ];
    if wanted("distinct") {
        eprintln!(
            "minting {} distinct RS256 tokens (both cores, before any measurement)...",
            args.distinct_tokens
        );
        let distinct = s
            .keys
            .many_rs256(args.distinct_tokens, "files:list")
            .iter()
            .map(|t| req(t, Headers::Lean))
            .collect();
        scenarios.push(Scenario {
            id: "distinct",
            name: format!(
                "distinct tokens, first-seen RS256 ({} one-use tokens; cache capacity 50,000)",
                args.distinct_tokens
            ),
            requests: distinct,
            pick: Pick::Once,
            load: Load {
                warmup: Duration::ZERO,
                duration: Duration::from_secs(600),
                ..load
            },
            env: vec![],
            null: false,
            resources: String::new(),
        });
    }
    let paths = NEW_ROWS
        .iter()
        .any(|id| wanted(id))
        .then(|| paths::Paths::new(&s.dir, &s.jwks_file));
    // What the ceilings are made of, measured in this process before any row.
    let secs = args.alone_seconds;
    let mut alone = ceiling::Alone {
        rs256: wanted("distinct").then(|| {
            eprintln!("in process: RS256 verification alone...");
            paths::verify_alone(&s.keys.jwks()["keys"][0], Alg::RS256, &ok, secs)
        }),
        mldsa: None,
        es256: None,
        bare: None,
        endpoint_in_row: None,
    };
    if let Some(p) = &paths {
        alone.mldsa = wanted("mldsa-first").then(|| {
            eprintln!("in process: ML-DSA-65 verification alone...");
            p.mldsa_alone(secs)
        });
        alone.es256 = wanted("dpop").then(|| {
            eprintln!("in process: ES256 proof signature verification alone...");
            p.es256_alone(secs)
        });
        // 16 in flight: mcp-authz's default `introspection.max_concurrent`.
        alone.bare = wanted("introspect-miss").then(|| {
            eprintln!("in process: a bare client's introspection round trip...");
            p.endpoint.bare_client(16, secs)
        });
    }

    println!("\n### Direct gRPC Check load\n");
    println!(
        "{} streams over {} HTTP/2 connections, {} s measured after 1 s warm-up (the distinct \
         row: until its tokens are used up); a fresh server process per row; latency is the \
         client's, from send to response.{}\n",
        args.concurrency,
        args.connections,
        args.seconds,
        if paths.is_some() {
            " The one-use rows of the new token paths (ML-DSA-65 first-seen, introspection \
             miss, DPoP) have no warm-up and end after the same time or when their one-use \
             tokens or proofs are used up; their resources (`pq`, `opaque`, `dpop`) are added to the configuration \
             of those rows only."
        } else {
            ""
        }
    );
    println!(
        "| scenario | checks/s | p50 | p90 | p99 | max | server CPU µs/check | load-gen CPU µs/check | peak RSS | allow/deny/error |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    // Server CPU µs per Check of each row run.
    let mut cpu: HashMap<&'static str, f64> = HashMap::new();
    for sc in scenarios {
        let half = sc.id == "repeated" && wanted("half");
        if !wanted(sc.id) {
            continue;
        }
        let (id, name) = (sc.id, sc.name.clone());
        let (o, entries, evictions) = run_scenario(s, sc).await;
        cpu.insert(id, o.cpu_per_check());
        let label = if name.starts_with("distinct") {
            format!("{name}: {entries:.0} entries, {evictions:.0} evictions after")
        } else {
            name
        };
        println!("{}", direct_row(&label, &o));
        if half {
            // Latency where a service should run: half of its measured maximum, offered
            // open-loop by 16 streams on one connection (as one Envoy worker sends them).
            let rate = o.throughput() / 2.0;
            let name = format!("repeated token at {rate:.0}/s (half of max), 16 streams");
            let (o, _, _) = run_scenario(
                s,
                Scenario {
                    load: Load {
                        rate: Some(rate),
                        concurrency: 16,
                        connections: 1,
                        ..load
                    },
                    ..cycle("half", &name, vec![req(&ok, Headers::Lean)])
                },
            )
            .await;
            println!("{}", direct_row(&name, &o));
        }
    }
    if let Some(p) = &paths {
        alone.endpoint_in_row =
            ceiling::run_new_rows(s, p, load, args.one_use_tokens, &wanted, &mut cpu).await;
    }
    ceiling::print(&cpu, &alone);
}

async fn run_memory(args: &Args, s: &Setup) {
    eprintln!("memory: minting {} EdDSA tokens...", args.cached_tokens);
    let tokens: Vec<Bytes> = s
        .keys
        .many_eddsa(args.cached_tokens, "files:list")
        .iter()
        .map(|t| direct::check_request("files", FILES_HOST, Some(t), Headers::Lean, None))
        .collect();
    // Room for the warm-up token too, so all `cached_tokens` stay cached.
    let (service, _) = s.service("memory", args.cached_tokens + 64, &[]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle, _) = fixture::rss_kib(service.pid());
    let one = s.keys.rs256(&claims(0, "files:list"));
    let warm = direct::run(
        &service,
        Arc::new(vec![direct::check_request(
            "files",
            FILES_HOST,
            Some(&one),
            Headers::Lean,
            None,
        )]),
        Pick::Cycle,
        Load {
            connections: 1,
            concurrency: 8,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            rate: None,
        },
    )
    .await;
    let (after_warm, _) = fixture::rss_kib(service.pid());
    eprintln!("memory: filling the cache...");
    let fill = direct::run(
        &service,
        Arc::new(tokens),
        Pick::Once,
        Load {
            connections: args.connections,
            concurrency: args.concurrency,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(600),
            rate: None,
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (full, peak) = fixture::rss_kib(service.pid());
    let entries = service.metric("mcp_authz_token_cache_entries");
    println!("\n### Memory\n");
    println!("| state | RSS | note |");
    println!("|---|---|---|");
    println!("| idle (keys loaded, no Check yet) | {} | |", mib(idle));
    println!(
        "| after 1 s of repeated-token load | {} | {} checks |",
        mib(after_warm),
        warm.checks
    );
    println!(
        "| {entries:.0} tokens cached | {} (peak {}) | {:.0} bytes per cached token over the warm state; fill: {:.0} checks/s EdDSA first-seen, {:.1} µs CPU/check |",
        mib(full),
        mib(peak),
        (full.saturating_sub(after_warm) * 1024) as f64 / entries.max(1.0),
        fill.throughput(),
        fill.cpu_per_check()
    );
}

fn main() {
    let args = Args::parse();
    if args.what == What::NullServer {
        // Served like mcp-authz serves Check: a control runtime accepting, one single-threaded
        // runtime per worker (one per core unless MCP_AUTHZ_WORKERS), connections round robin.
        let port = args.port.expect("--port");
        let workers = std::env::var("MCP_AUTHZ_WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind null server");
                let routes =
                    tonic::service::Routes::new(AuthorizationServer::new(envoy::Null(None)));
                mcp_authz::app::serve_forever(l, workers, routes)
                    .await
                    .expect("null server")
            });
        return;
    }
    if !args.bench {
        // `cargo test --benches` runs bench binaries without `--bench`: compile-only there.
        eprintln!("load benchmark: run it with `cargo bench --bench load`");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let envoy_version = if matches!(args.what, What::All | What::Envoy) {
        let bin = envoy::find_envoy(args.envoy.as_deref());
        Command::new(&bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    println!("## mcp-authz load benchmark\n");
    println!("- machine: {}", fixture::machine());
    println!("- load average at start: {}", fixture::load_average());
    if !envoy_version.is_empty() {
        println!(
            "- envoy: {}",
            envoy_version.split_whitespace().last().unwrap_or("")
        );
    }
    let s = Setup::new(args.wrap.clone(), args.lean_answer);
    rt.block_on(async {
        if matches!(args.what, What::All | What::Direct) {
            run_direct(&args, &s).await;
        }
        if matches!(args.what, What::All | What::Memory) {
            run_memory(&args, &s).await;
        }
        if matches!(args.what, What::All | What::Envoy) {
            through_envoy::run(&args, &s).await;
        }
    });
    println!("\n- load average at end: {}", fixture::load_average());
    let _ = std::fs::remove_dir_all(&s.dir);
}
