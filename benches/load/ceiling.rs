//! The new token paths' direct rows (issue 15) and each row's own ceiling, measured in the same
//! run: the null server's CPU per Check (the transport floor) or the cached RS256 row, plus
//! what the path cannot avoid, measured in process (a signature verification alone, a bare
//! client's introspection round trip).

use std::collections::HashMap;

use prost::bytes::Bytes;

use crate::direct::{self, Headers, Load, Pick};
use crate::paths::{BareClient, DPOP_HOST, OPAQUE_HOST, PQ_HOST, Paths};
use crate::{Scenario, Setup, direct_row, fixture, run_scenario};

/// Rows printed with a ceiling.
pub const CEILED: [&str; 6] = [
    "distinct",
    "mldsa-first",
    "mldsa-cached",
    "introspect-hit",
    "introspect-miss",
    "dpop",
];

/// The new token paths' rows, in run order.
pub const NEW_ROWS: [&str; 5] = [
    "mldsa-first",
    "mldsa-cached",
    "introspect-hit",
    "introspect-miss",
    "dpop",
];

fn on(resource: &str, host: &str, token: &str) -> Bytes {
    direct::check_request(resource, host, Some(token), Headers::Lean, None)
}

/// Run the new rows `wanted` says, each printed in the direct table; their server CPU per Check
/// goes into `cpu`. Returns the endpoint's own CPU per call during `introspect-miss`, and its
/// calls per Check there.
pub async fn run_new_rows(
    s: &Setup,
    p: &Paths,
    load: Load,
    one_use: usize,
    wanted: &dyn Fn(&str) -> bool,
    cpu: &mut HashMap<&'static str, f64>,
) -> Option<(f64, f64)> {
    let n = one_use;
    let mut endpoint = None;
    for id in NEW_ROWS {
        if !wanted(id) {
            continue;
        }
        // One-use requests are minted right before their row (DPoP proofs must be fresh:
        // `iat` within 60 s, RFC 9449 §11.1).
        let (name, requests, pick): (String, Vec<Bytes>, Pick) = match id {
            "mldsa-first" => {
                eprintln!("minting {n} ML-DSA-65 tokens...");
                let tokens = fixture::many(n, |i| p.mldsa(i as u64 + 1));
                (
                    format!("first-seen ML-DSA-65 (`MLDSA65`; {n} one-use tokens)"),
                    tokens.iter().map(|t| on("pq", PQ_HOST, t)).collect(),
                    Pick::Once,
                )
            }
            "mldsa-cached" => (
                "repeated ML-DSA-65 token (`MLDSA65`, cached)".into(),
                vec![on("pq", PQ_HOST, &p.mldsa(0))],
                Pick::Cycle,
            ),
            "introspect-hit" => (
                "repeated opaque token, introspection answer cached".into(),
                vec![on("opaque", OPAQUE_HOST, &Paths::opaque(u64::MAX))],
                Pick::Cycle,
            ),
            "introspect-miss" => (
                format!(
                    "opaque tokens, one introspection call each ({n} one-use tokens; loopback endpoint)"
                ),
                (0..n as u64)
                    .map(|i| on("opaque", OPAQUE_HOST, &Paths::opaque(i)))
                    .collect(),
                Pick::Once,
            ),
            "dpop" => {
                eprintln!("minting {n} DPoP proofs...");
                let token = s.keys.rs256(&p.dpop_claims());
                let now = fixture::unix_now();
                let proofs = fixture::many(n, |i| p.proof(&token, i, now));
                let base = direct::check_request("dpop", DPOP_HOST, None, Headers::Lean, None);
                let auth = format!("DPoP {token}");
                (
                    format!(
                        "DPoP-bound RS256 token (cached), a fresh ES256 proof per Check ({n} proofs; `dpop.mode: required`)"
                    ),
                    proofs
                        .iter()
                        .map(|proof| {
                            direct::with_headers(
                                &base,
                                &[("authorization", &auth), ("dpop", proof)],
                            )
                        })
                        .collect(),
                    Pick::Once,
                )
            }
            _ => unreachable!("every new row is matched"),
        };
        // One-use rows start measuring at once, as the `distinct` row does: every Check is
        // first-seen, there is nothing to warm up but the connections.
        let load = if pick == Pick::Once {
            Load {
                warmup: std::time::Duration::ZERO,
                ..load
            }
        } else {
            load
        };
        let before = p.endpoint.usage();
        let (o, _, _) = run_scenario(
            s,
            Scenario {
                id,
                name: name.clone(),
                requests,
                pick,
                load,
                env: vec![],
                null: false,
                resources: p.resources.clone(),
            },
        )
        .await;
        if id == "introspect-miss" {
            let after = p.endpoint.usage();
            endpoint = Some((
                after.per_call_since(before),
                after.calls_since(before) as f64 / o.checks.max(1) as f64,
            ));
        }
        println!("{}", direct_row(&name, &o));
        cpu.insert(id, o.cpu_per_check());
    }
    endpoint
}

/// What a ceiling is made of, measured in process before the rows (CPU µs each).
pub struct Alone {
    pub rs256: Option<f64>,
    pub mldsa: Option<f64>,
    pub es256: Option<f64>,
    pub bare: Option<BareClient>,
    /// The endpoint's CPU per call during `introspect-miss`, and its calls per Check there.
    pub endpoint_in_row: Option<(f64, f64)>,
}

/// The ceilings table: each row next to its ceiling from the same run.
pub fn print(cpu: &HashMap<&str, f64>, alone: &Alone) {
    if !CEILED.iter().any(|id| cpu.contains_key(id)) {
        return;
    }
    let get = |id: &str| cpu.get(id).copied();
    let (null, repeated) = (get("null"), get("repeated"));
    println!("\n### Direct rows next to their own ceilings (same run)\n");
    let mut parts = vec![];
    let mut part = |label: &str, v: Option<f64>| {
        if let Some(v) = v {
            parts.push(format!("{label} {v:.1} µs"));
        }
    };
    part(
        "RS256 (RSA-2048) verification alone (`jwks::Key::verify`, key parsed once)",
        alone.rs256,
    );
    part("ML-DSA-65 verification alone", alone.mldsa);
    part("ES256 proof signature verification alone", alone.es256);
    if let Some(b) = &alone.bare {
        parts.push(format!(
            "a bare reqwest client's introspection round trip to the loopback endpoint \
             ({} in flight): {:.1} µs client CPU per call ({:.0} µs wall), the endpoint's own \
             CPU {:.1} µs per call",
            b.in_flight, b.client_cpu_us, b.wall_us, b.endpoint_cpu_us
        ));
    }
    println!(
        "Measured in this process before the rows, CPU time per operation on one thread: {}. \
         The ceiling adds that to the null server's CPU per Check (the transport floor) or to \
         the cached RS256 row; the ratio is the row's server CPU per Check over the ceiling.\n",
        parts.join("; ")
    );
    println!("| row | server CPU µs/check | ceiling | ceiling µs/check | row ÷ ceiling |");
    println!("|---|---|---|---|---|");
    let line = |id: &str, label: &str, ceiling: Option<f64>| {
        if let (Some(row), Some(c)) = (get(id), ceiling) {
            println!(
                "| {id} | {row:.1} | {label} | {c:.1} | {:.2}× |",
                row / c.max(1e-9)
            );
        }
    };
    let sum = |a: Option<f64>, b: Option<f64>| Some(a? + b?);
    line(
        "distinct",
        "null + RS256 verification (issue 15: ≤ 1.3×)",
        sum(null, alone.rs256),
    );
    line(
        "mldsa-first",
        "null + ML-DSA-65 verification",
        sum(null, alone.mldsa),
    );
    line("mldsa-cached", "null", null);
    line("mldsa-cached", "repeated (cached RS256)", repeated);
    line("introspect-hit", "null", null);
    line("introspect-hit", "repeated (cached RS256 JWT)", repeated);
    line(
        "introspect-miss",
        "null + bare client round trip (client CPU)",
        sum(null, alone.bare.as_ref().map(|b| b.client_cpu_us)),
    );
    line(
        "dpop",
        "repeated (cached bearer RS256) + ES256 proof verification",
        sum(repeated, alone.es256),
    );
    if let Some((e, calls)) = alone.endpoint_in_row {
        println!(
            "\nThe introspection endpoint runs in the load generator's process on its own thread: \
             during `introspect-miss` it answered {calls:.2} calls per Check at {e:.1} µs CPU per \
             call, not in the server column (it is in the load-gen column)."
        );
    }
}
