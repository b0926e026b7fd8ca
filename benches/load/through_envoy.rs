//! The Envoy part: one Envoy process with a listener per variant (the rendered mcp-authz
//! listener, the same pointed at null servers, no auth, jwt_authn + RBAC), rounds alternating
//! between the variants, per-round ratios against the ceiling measured in the same round.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mcp_authz::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, authorization_client::AuthorizationClient,
};
use prost::Message;

use crate::direct::{self, Headers};
use crate::fixture::{self, FILES_HOST, TOOLS_HOST, claims};
use crate::{Args, Setup, envoy, http1, us};

fn pin(pid: u32, cpus: &str) {
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status();
}

pub async fn run(args: &Args, s: &Setup) {
    let bin = envoy::find_envoy(args.envoy.as_deref());
    let (service, ports) = s.service("envoy-authz", 50_000, &[]);
    let mut config = mcp_authz::config::Config::from_yaml(&fixture::config_yaml(
        &ports,
        &s.jwks_file,
        50_000,
        s.identity,
    ))
    .expect("config");
    config.envoy.check_streams_per_connection = args.check_streams;
    let token = s.keys.rs256(&claims(0, "files:list files:read"));
    // mcp-authz's own allow answer for this token, for the null server that mimics it: asked
    // as the rendered listener asks (its routes say the listener strips identity headers).
    let answer = {
        let channel = direct::connect(&service, 1).await.remove(0);
        let mut client = AuthorizationClient::new(channel);
        let mut req = CheckRequest::decode(direct::check_request(
            "files",
            FILES_HOST,
            Some(&token),
            Headers::Lean,
            None,
        ))
        .expect("request decodes");
        if let Some(a) = req.attributes.as_mut() {
            a.context_extensions.insert(
                mcp_authz::config::IDENTITY_CONTEXT_KEY.into(),
                mcp_authz::config::IDENTITY_STRIPPED_BY_PROXY.into(),
            );
        }
        client
            .check(req)
            .await
            .expect("mcp-authz answers")
            .into_inner()
    };
    let previous = previous_answer(&answer);
    let null_server = |name: &str, answer: Option<CheckResponse>| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let stat = envoy::spawn_thread(name, move || async move {
            let l = tokio::net::TcpListener::from_std(l).expect("listener");
            envoy::serve_null(l, answer).await
        });
        (addr, stat)
    };
    let (null_addr, null_stat) = null_server("null-authz", None);
    let mut null_rich_addrs = vec![];
    let mut null_rich_stats = vec![];
    for a in envoy::Answer::ALL {
        let (addr, stat) = null_server(a.cluster(), Some(a.of(&answer, &previous)));
        null_rich_addrs.push((a, addr));
        null_rich_stats.push((a, stat));
    }
    let up = std::net::TcpListener::bind(("127.0.0.1", ports.upstream)).expect("bind upstream");
    up.set_nonblocking(true).expect("nonblocking");
    envoy::spawn_thread("upstream", move || async move {
        let l = tokio::net::TcpListener::from_std(up).expect("listener");
        envoy::serve_upstream(l).await
    });
    let mut variants =
        envoy::variants(!args.skip_tools, !args.skip_legacy, !args.skip_answer_parts);
    let yaml = envoy::bootstrap(
        &config,
        service.grpc,
        null_addr,
        &null_rich_addrs,
        &s.jwks,
        &mut variants,
    );
    let pinned = !args.no_pin && std::thread::available_parallelism().map_or(1, |p| p.get()) >= 2;
    let admin = ([127, 0, 0, 1], ports.envoy_admin).into();
    let proxy = envoy::Envoy::start(&bin, &s.dir, &yaml, admin, pinned.then_some("0"));
    if pinned {
        pin(std::process::id(), "1");
        pin(service.pid(), "1");
    }
    // Every variant must answer 200 before anything is measured.
    for v in &variants {
        let mut c = http1::Conn::connect(([127, 0, 0, 1], v.port()).into())
            .await
            .expect("connect");
        let status = c
            .round_trip(&envoy::request(v.host, &token))
            .await
            .expect("answer");
        assert_eq!(status, 200, "{}: first request answered {status}", v.name);
    }
    // The null server on the per-tool route must receive the body mcp-authz receives there
    // (the ceiling of the per-tool row is a null server given the same work to receive).
    let tools_null = variants
        .iter()
        .position(|v| v.chain == envoy::Chain::Null { legacy: false } && v.host == TOOLS_HOST);
    let tools_authz = variants
        .iter()
        .position(|v| v.chain == envoy::Chain::McpAuthz { legacy: false } && v.host == TOOLS_HOST);
    if let Some(i) = tools_null {
        let v = &variants[i];
        let request = envoy::request(v.host, &token);
        envoy::NULL_LAST_BODY.store(0, Ordering::Relaxed);
        let mut c = http1::Conn::connect(([127, 0, 0, 1], v.port()).into())
            .await
            .expect("connect");
        let status = c.round_trip(&request).await.expect("answer");
        assert_eq!(status, 200, "{}", v.name);
        assert_eq!(
            envoy::NULL_LAST_BODY.load(Ordering::Relaxed),
            envoy::body_len(&request),
            "{}: the null server did not receive the request body",
            v.name
        );
    }
    let authz_port = variants
        .iter()
        .find(|v| v.chain == envoy::Chain::McpAuthz { legacy: false })
        .expect("mcp-authz variant")
        .port();
    let probes = envoy::probes(authz_port, &token).await;
    for (name, want, got) in &probes {
        assert_eq!(got, want, "decision through Envoy changed: {name}");
    }
    if let Some(hold) = args.hold_seconds {
        println!(
            "envoy pid {}, mcp-authz pid {}; token in {}",
            proxy.pid(),
            service.pid(),
            s.dir.join("token").display()
        );
        std::fs::write(s.dir.join("token"), &token).expect("write token");
        for v in &variants {
            println!("- {}: 127.0.0.1:{} (Host: {})", v.name, v.port(), v.host);
        }
        tokio::time::sleep(Duration::from_secs(hold)).await;
        return;
    }
    let procs = envoy::Processes {
        envoy: &proxy,
        authz_pid: service.pid(),
        null_stat: &null_stat,
        null_rich_stat: &null_rich_stats,
    };
    let mut tallies: Vec<envoy::Tally> = variants.iter().map(|_| envoy::Tally::new()).collect();
    // Throughput of each variant in each round, for ratios paired within a round.
    let mut per_round: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    // Checks that reached a null server with the request body, per variant.
    let mut bodies: Vec<u64> = vec![0; variants.len()];
    let n = variants.len();
    for r in 0..args.rounds {
        // Each round starts one variant later, so no variant always runs in the same position
        // (right after the same neighbour, at the same distance from the round's start).
        for i in (0..n).map(|k| (k + r) % n) {
            let (v, t) = (&variants[i], &mut tallies[i]);
            let (requests, seconds) = (t.requests, t.seconds);
            eprintln!("envoy: round {}/{}: {}", r + 1, args.rounds, v.name);
            let bodies_before = envoy::NULL_BODIES.load(Ordering::Relaxed);
            envoy::round(
                v,
                &token,
                args.http_connections,
                Duration::from_millis(500),
                Duration::from_secs_f64(args.round_seconds),
                &procs,
                t,
            )
            .await;
            per_round[i].push((t.requests - requests) as f64 / (t.seconds - seconds).max(1e-9));
            bodies[i] += envoy::NULL_BODIES.load(Ordering::Relaxed) - bodies_before;
        }
    }
    if pinned {
        let all = format!(
            "0-{}",
            std::thread::available_parallelism().map_or(1, |p| p.get()) - 1
        );
        pin(std::process::id(), &all);
    }
    let ceiling = variants
        .iter()
        .position(|v| v.chain == envoy::Chain::Null { legacy: false } && v.host == FILES_HOST)
        .expect("ceiling variant");
    let none = 0;
    let (c_rps, c_p99) = (
        tallies[ceiling].rps(),
        tallies[ceiling].latency.value_at_quantile(0.99) as f64,
    );
    println!("\n### Through Envoy 1.40 (--concurrency 1)\n");
    println!(
        "Decisions through the rendered config, checked before measuring: {}.\n",
        probes
            .iter()
            .map(|(name, _, _)| *name)
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!(
        "One Envoy process, one listener per chain, {} rounds × {} s per variant, variants \
         alternating (each round starts one variant later); per-round ratios pair a variant \
         with the ceiling measured in the same round; {} keep-alive HTTP/1.1 connections, closed loop; the same RS256 token; \
         `POST /mcp` with a {}-byte JSON-RPC body (per-tool rows: `tools/call`, {} bytes, \
         Mcp-Method/Mcp-Name). {}\n",
        args.rounds,
        args.round_seconds,
        args.http_connections,
        envoy::body_len(&envoy::request(FILES_HOST, &token)),
        envoy::body_len(&envoy::request(TOOLS_HOST, &token)),
        if pinned {
            "Envoy pinned to CPU 0; load generator, upstream, null server and mcp-authz on CPU 1."
        } else {
            "No CPU pinning."
        }
    );
    println!(
        "| variant | req/s | p50 | p99 | Envoy CPU µs/req | authz server CPU µs/req | ext_authz bytes/Check | req/s vs ceiling | per-round vs ceiling: median [min–max] | p99 vs ceiling | req/s vs no auth | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, (v, t)) in variants.iter().zip(&tallies).enumerate() {
        let p99 = t.latency.value_at_quantile(0.99) as f64;
        let server = match v.chain {
            envoy::Chain::McpAuthz { .. } => format!("{:.1}", t.per_request(t.authz_cpu_us)),
            envoy::Chain::Null { .. } | envoy::Chain::NullRich(_) => {
                format!("{:.1} (null)", t.per_request(t.null_cpu_us))
            }
            _ => "—".into(),
        };
        let bytes = if t.authz_rq > 0 {
            format!("{:.0}", t.authz_tx_bytes as f64 / t.authz_rq as f64)
        } else {
            "—".into()
        };
        let paired = paired(&per_round[i], &per_round[ceiling]);
        println!(
            "| {} | {:.0} | {} | {} | {:.1} | {server} | {bytes} | {:.3} | {paired} | {:.2} | {:.2} | {} |",
            v.name,
            t.rps(),
            us(t.latency.value_at_quantile(0.5)),
            us(t.latency.value_at_quantile(0.99)),
            t.per_request(t.envoy_cpu_us),
            t.rps() / c_rps,
            p99 / c_p99,
            t.rps() / tallies[none].rps(),
            t.errors
        );
    }
    if let (Some(n), Some(a)) = (tools_null, tools_authz) {
        println!(
            "\nPer-tool route (body): the null server there received the {}-byte request body, \
             as mcp-authz does (checked before measuring; {} body-carrying Checks reached it \
             during its rounds, warm-up included). mcp-authz ÷ that null server, per-round \
             paired req/s: {} (issue 15 target ≥ 0.95×); whole-run req/s ratio {:.3}.",
            envoy::body_len(&envoy::request(TOOLS_HOST, &token)),
            bodies[n],
            paired(&per_round[a], &per_round[n]),
            tallies[a].rps() / tallies[n].rps().max(1e-9)
        );
    }
}

/// `rows[r] / ceiling[r]` per round: "median [min–max]".
fn paired(rows: &[f64], ceiling: &[f64]) -> String {
    let mut paired: Vec<f64> = rows
        .iter()
        .zip(ceiling)
        .map(|(rps, c)| rps / c.max(1e-9))
        .collect();
    paired.sort_by(f64::total_cmp);
    match (paired.first(), paired.last()) {
        (Some(lo), Some(hi)) => format!("{:.3} [{lo:.3}–{hi:.3}]", paired[paired.len() / 2]),
        _ => "—".into(),
    }
}

/// What mcp-authz answered for this token with the defaults before issue 15: the subject and
/// client id headers it sends now, plus `x-mcp-authz-scopes` and `x-mcp-authz-issuer`, and 8
/// dynamic-metadata fields (what `identity: {scopes_header: …, issuer_header: …,
/// dynamic_metadata: true}` still answers).
fn previous_answer(now: &CheckResponse) -> CheckResponse {
    use mcp_authz::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
    use mcp_authz::pb::envoy::service::auth::v3::check_response::HttpResponse;
    use prost_types::{Struct, Value, value::Kind};
    let mut a = now.clone();
    let Some(HttpResponse::OkResponse(ok)) = a.http_response.as_mut() else {
        panic!("mcp-authz did not allow the bench token: {now:?}");
    };
    let template = ok.headers.first().expect("an identity header").clone();
    let value_of = |name: &str| {
        ok.headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key == name)
            .map(|h| h.value.clone())
            .unwrap_or_else(|| panic!("mcp-authz sent no {name}: {now:?}"))
    };
    let (sub, client) = (
        value_of("x-mcp-authz-subject"),
        value_of("x-mcp-authz-client-id"),
    );
    for (k, v) in [
        ("x-mcp-authz-scopes", "files:list files:read"),
        ("x-mcp-authz-issuer", fixture::ISSUER),
    ] {
        ok.headers.push(HeaderValueOption {
            header: Some(HeaderValue {
                key: k.into(),
                value: v.into(),
                raw_value: Vec::new(),
            }),
            ..template.clone()
        });
    }
    ok.headers_to_remove.clear();
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    a.dynamic_metadata = Some(Struct {
        fields: [
            ("decision", s("allow")),
            ("reason", s("ok")),
            ("resource", s("files")),
            ("route", s("mcp")),
            ("sub", s(&sub)),
            ("client_id", s(&client)),
            ("iss", s(fixture::ISSUER)),
            ("scope", s("files:list files:read")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    });
    a
}
