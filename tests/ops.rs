//! Operations: logs never carry tokens, hot reload under load (file watch with a ConfigMap-style
//! symlink swap, invalid configs kept out), graceful shutdown draining in-flight Checks.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn logs_never_contain_tokens_and_sigterm_exits_cleanly() {
    let idp = Idp::start(&[&RSA]).await;
    let dir = tempdir();
    let (grpc, admin) = (free_port(), free_port());
    let yaml = config_yaml(&idp.issuer, "", ROUTES)
        .replace(
            "grpc: \"127.0.0.1:0\"",
            &format!("grpc: \"127.0.0.1:{grpc}\""),
        )
        .replace(
            "admin: \"127.0.0.1:0\"",
            &format!("admin: \"127.0.0.1:{admin}\""),
        );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut child = Serve(Some(
        Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let mut stderr = child.0.as_mut().unwrap().stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let claims = json!({"iss": idp.issuer, "sub": "user-1", "aud": "https://mcp.example.com/mcp", "exp": now() + 300, "scope": "files:list"});
    let good = RSA.mint(&claims);
    let mut client = connect_when_allowed(grpc, &good).await;
    let expired = RSA.mint(
        &json!({"iss": idp.issuer, "aud": "https://mcp.example.com/mcp", "exp": now() - 300}),
    );
    let forged = format!("{}.{}", good.rsplit_once('.').unwrap().0, b64(&[7u8; 256]));
    let unknown_kid = RSA.mint_with_header(&json!({"alg":"RS256","kid":"nope"}), &claims);
    let tokens = [&good, &expired, &forged, &unknown_kid];
    for t in tokens {
        for req in [
            Req::new("POST", "/mcp").header("authorization", &format!("Bearer {t}")),
            Req::new("GET", "/mcp/files/x").header("authorization", &format!("Bearer {t}")),
            Req::new("POST", &format!("/mcp?access_token={t}")),
            Req::new("POST", "/mcp").header("authorization", &format!("Bearer {t},Bearer {t}")),
            Req::new("POST", "/mcp").header("authorization", &format!("Basic {t}")),
        ] {
            client.check(req.into_proto()).await.unwrap();
        }
    }
    // SIGTERM: graceful shutdown, exit 0.
    sigterm_exits_cleanly(child).await;
    let logs = reader.join().unwrap();
    assert!(
        logs.contains("\"reason\":\"token_expired\""),
        "access log events present"
    );
    assert!(logs.contains("mcp_authz::audit"), "audit events present");
    assert!(logs.lines().count() > 20, "trace logging was on");
    for t in tokens {
        for (i, part) in t.split('.').enumerate() {
            // Any 12-byte window of any segment would be a fragment.
            let windows: Vec<&str> = (0..part.len().saturating_sub(12))
                .step_by(6)
                .map(|s| &part[s..s + 12])
                .collect();
            for w in windows {
                assert!(
                    !logs.contains(w),
                    "token segment {i} fragment {w:?} found in logs"
                );
            }
        }
    }
}

type Client = mcp_authz::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
    tonic::transport::Channel,
>;

/// A client on a new connection to a `serve` process starting on `grpc`, returned once the
/// process has keys and allows `token` (each call opens its own HTTP/2 connection).
async fn connect_when_allowed(grpc: u16, token: &str) -> Client {
    for _ in 0..200 {
        if let Ok(mut c) = Client::connect(format!("http://127.0.0.1:{grpc}")).await {
            let req = Req::new("POST", "/mcp").header("authorization", &format!("Bearer {token}"));
            if let Ok(a) = c.check(req.into_proto()).await
                && Answer::from(a.into_inner()).status == 200
            {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service did not start allowing the token on 127.0.0.1:{grpc}");
}

/// A `serve` process, killed if the test fails before it is stopped.
struct Serve(Option<std::process::Child>);

impl Serve {
    fn id(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIGTERM `child`: it must drain and exit 0.
async fn sigterm_exits_cleanly(mut serve: Serve) {
    let mut child = serve.0.take().unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}

/// CPU ticks (utime + stime) of each thread of `pid` whose name starts with `prefix`.
fn thread_ticks(pid: u32, prefix: &str) -> Vec<(String, u64)> {
    let mut out = vec![];
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let name = name.trim().to_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
        out.push((name, ticks));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_spreads_connections_over_its_check_workers() {
    let idp = Idp::start(&[&RSA]).await;
    let dir = tempdir();
    let grpc = free_port();
    let yaml = config_yaml(&idp.issuer, "", ROUTES).replace(
        "grpc: \"127.0.0.1:0\"",
        &format!("grpc: \"127.0.0.1:{grpc}\", workers: 1"),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    // The flag overrides `listen.workers`.
    let child = Serve(Some(
        Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
            .args(["serve", "--workers", "3", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let claims = json!({"iss": idp.issuer, "sub": "user-1", "aud": "https://mcp.example.com/mcp", "exp": now() + 300, "scope": "files:list"});
    let token = RSA.mint(&claims);
    let mut clients = vec![];
    for _ in 0..3 {
        clients.push(connect_when_allowed(grpc, &token).await);
    }
    let before = thread_ticks(child.id(), "check-worker-");
    let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["check-worker-0", "check-worker-1", "check-worker-2"]
    );
    // Each connection went to its own worker: load on all three makes all three work.
    let mut load = vec![];
    for c in clients {
        let token = token.clone();
        load.push(tokio::spawn(async move {
            let mut c = c;
            for i in 0..1500 {
                let req = Req::new("POST", "/mcp")
                    .header("authorization", &format!("Bearer {token}"))
                    .header("x-request-id", &i.to_string());
                let a = Answer::from(c.check(req.into_proto()).await.unwrap().into_inner());
                assert_eq!(a.status, 200);
            }
        }));
    }
    for l in load {
        l.await.unwrap();
    }
    let after = thread_ticks(child.id(), "check-worker-");
    for ((name, b), (_, a)) in before.iter().zip(&after) {
        assert!(
            a > b,
            "{name} served none of the Checks: {before:?} -> {after:?}"
        );
    }
    sigterm_exits_cleanly(child).await;
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mcp-authz-test-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Two policies that decide the probe requests identically but differ elsewhere.
fn variant(issuer: &str, n: usize) -> String {
    config_yaml(issuer, "", ROUTES).replace(
        "      - {name: mcp, path_prefix: /mcp, scopes: [files:list]}",
        &format!("      - {{name: extra, path: /other-{n}, scopes: [files:admin]}}\n      - {{name: mcp, path_prefix: /mcp, scopes: [files:list]}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_reloads_under_concurrent_load_change_no_decision() {
    let idp = Idp::start(&[&RSA]).await;
    let dir = tempdir();
    let path = dir.join("config.yaml");
    std::fs::write(&path, variant(&idp.issuer, 0)).unwrap();
    let yaml = variant(&idp.issuer, 0);
    let mut h = Harness::start(idp, &yaml, true).await;
    let good = RSA.mint(&h.claims("files:list"));
    let stop = Arc::new(AtomicUsize::new(0));
    let (checked, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for w in 0..4 {
        let mut c = h.client.clone();
        let (good, stop, checked, wrong) =
            (good.clone(), stop.clone(), checked.clone(), wrong.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while stop.load(Ordering::Relaxed) == 0 {
                let (req, want) = match (i + w) % 3 {
                    0 => (
                        Req::new("POST", "/mcp").header("authorization", &format!("Bearer {good}")),
                        200,
                    ),
                    1 => (Req::new("POST", "/mcp"), 401),
                    _ => (
                        Req::new("GET", "/mcp/files/a")
                            .header("authorization", &format!("Bearer {good}")),
                        403,
                    ),
                };
                let got = c
                    .check(req.into_proto())
                    .await
                    .map(|r| Answer::from(r.into_inner()).status);
                if !matches!(got, Ok(s) if s == want) {
                    wrong.fetch_add(1, Ordering::Relaxed);
                }
                checked.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for n in 1..=50 {
        std::fs::write(&path, variant(&h.idp.issuer, n)).unwrap();
        h.app
            .reload(&path)
            .unwrap_or_else(|e| panic!("reload {n}: {e}"));
        if n % 10 == 0 {
            // An invalid config is refused and the running one kept.
            std::fs::write(&path, "resources: [{id: broken}]").unwrap();
            assert!(h.app.reload(&path).is_err());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(1, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        wrong.load(Ordering::Relaxed),
        0,
        "wrong or failed decisions during reloads"
    );
    // The machine is shared; what matters is that Checks ran throughout the reloads.
    assert!(
        checked.load(Ordering::Relaxed) >= 50,
        "load ran: {}",
        checked.load(Ordering::Relaxed)
    );
    assert_eq!(
        h.app
            .metrics
            .counter("mcp_authz_config_reloads_total", &[("result", "ok")]),
        1 + 50
    );
    assert_eq!(
        h.app
            .metrics
            .counter("mcp_authz_config_reloads_total", &[("result", "error")]),
        5
    );
    // The last good policy (variant 50) is the one running.
    let t = RSA.mint(&h.claims("files:list"));
    assert_eq!(
        h.bearer("GET", "/other-50", &t).await.reason(),
        "insufficient_scope"
    );
    assert_eq!(h.bearer("GET", "/other-49", &t).await.reason(), "no_route");
}

#[tokio::test]
async fn configmap_symlink_swap_is_picked_up() {
    let idp = Idp::start(&[&RSA]).await;
    let dir = tempdir();
    // Kubernetes ConfigMap volume layout: config.yaml -> ..data/config.yaml, ..data -> ..v1
    let v1 = dir.join("..v1");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::write(v1.join("config.yaml"), variant(&idp.issuer, 1)).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
    let yaml = variant(&idp.issuer, 1);
    let mut h = Harness::start(idp, &yaml, true).await;
    h.app
        .reload(&dir.join("config.yaml"))
        .expect("symlinked config loads");
    h.app
        .watch_config(dir.join("config.yaml"), Duration::from_millis(100))
        .unwrap();
    let t = RSA.mint(&h.claims("files:list"));
    assert_eq!(
        h.bearer("GET", "/other-2", &t).await.status,
        403,
        "not yet configured: default deny"
    );
    // Atomic swap of ..data to a new version directory, as the kubelet does.
    let v2 = dir.join("..v2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("config.yaml"), variant(&h.idp.issuer, 2)).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let mut status = 0;
    for _ in 0..50 {
        let a = h.bearer("GET", "/other-2", &t).await;
        status = a.status;
        if status == 403 && a.json()["scope"] == "files:list files:admin" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 403);
    let a = h.bearer("GET", "/other-2", &t).await;
    assert_eq!(
        a.reason(),
        "insufficient_scope",
        "the new route requires files:admin"
    );
}

type Inflight = tokio::task::JoinHandle<
    Result<tonic::Response<mcp_authz::pb::envoy::service::auth::v3::CheckResponse>, tonic::Status>,
>;

/// A started service with one Check in flight: the next key fetch answers after `fetch`, and
/// the Check carries a token with a new kid, so it waits on that refetch.
async fn check_waiting_on_a_slow_refetch(fetch: Duration) -> (Harness, Inflight) {
    let idp = Idp::start(&[&RSA]).await;
    // A Check waits for a refetch at most half of Envoy's timeout: give it the longest.
    let yaml = config_yaml(&idp.issuer, "", ROUTES) + "envoy: {check_timeout_ms: 10000}\n";
    let h = Harness::start(idp, &yaml, true).await;
    h.idp.set_mode(Mode::Slow(fetch));
    h.idp.set_keys(&[&RSA, &RSA2]);
    let t = RSA2.mint(&h.claims("files:list"));
    let mut c = h.client.clone();
    let inflight = tokio::spawn(async move {
        c.check(
            Req::new("POST", "/mcp")
                .header("authorization", &format!("Bearer {t}"))
                .into_proto(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    (h, inflight)
}

#[tokio::test]
async fn shutdown_drains_in_flight_checks() {
    let (h, inflight) = check_waiting_on_a_slow_refetch(Duration::from_millis(1500)).await;
    let ready = h.app.ready.clone();
    let shutdown = tokio::spawn(h.app.shutdown(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!ready.get(), "not ready while draining");
    let answer = inflight.await.unwrap().expect("in-flight Check completed");
    assert_eq!(Answer::from(answer.into_inner()).status, 200);
    shutdown.await.unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_checks_past_the_drain_timeout() {
    // The in-flight Check waits on a refetch slower than the drain timeout.
    let (h, inflight) = check_waiting_on_a_slow_refetch(Duration::from_secs(4)).await;
    let started = std::time::Instant::now();
    h.app.shutdown(Duration::from_millis(500)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "shutdown waited {took:?}, past its drain timeout"
    );
    let answer = inflight.await.unwrap();
    assert!(answer.is_err(), "the Check was cut off: {answer:?}");
}
