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
        assert_no_fragment_in(t, &logs);
    }
    // The scan itself can fail: a 12-character piece from the middle of a segment is found.
    let sig = good.rsplit('.').next().unwrap();
    let planted = format!("{logs} ... {} ...", &sig[37..49]);
    let caught = std::panic::catch_unwind(|| assert_no_fragment_in(&good, &planted));
    assert!(caught.is_err(), "a planted fragment was not found");
}

/// No 12-character window of any segment of `token`, at any offset, appears in `logs`
/// (README "Logs": no 12-character fragment of any token appears).
fn assert_no_fragment_in(token: &str, logs: &str) {
    for (i, part) in token.split('.').enumerate() {
        for start in 0..=part.len().saturating_sub(12) {
            let Some(w) = part.get(start..start + 12) else {
                continue;
            };
            assert!(
                !logs.contains(w),
                "token segment {i} fragment {w:?} at offset {start} found in logs"
            );
        }
    }
}

type Client = mcp_authz::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient<
    tonic::transport::Channel,
>;

/// A client on a new connection to a `serve` process starting on `grpc`, returned once the
/// process has keys and allows `token` (each call opens its own HTTP/2 connection).
async fn connect_when_allowed(grpc: u16, token: &str) -> Client {
    // 600 × 50 ms: a 30 s deadline for a process start on a loaded machine.
    for _ in 0..600 {
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
    eventually(
        "the swapped-in config is used",
        Duration::from_secs(30),
        async || {
            let a = h.bearer("GET", "/other-2", &t).await;
            a.status == 403 && a.json()["scope"] == "files:list files:admin"
        },
    )
    .await;
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
    // fetch_timeout_seconds 10 and check_timeout_ms 10000: the Check waits on the refetch
    // (at most half of Envoy's timeout) far longer than the drain timeouts below, however
    // slowly this machine runs.
    let yaml = config_yaml(&idp.issuer, "", ROUTES)
        .replace("fetch_timeout_seconds: 2", "fetch_timeout_seconds: 10")
        + "envoy: {check_timeout_ms: 10000}
";
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
    // In flight for sure: the refetch it waits on has reached the identity provider.
    eventually(
        "the Check waits on the refetch",
        Duration::from_secs(30),
        async || h.idp.fetches() == 2,
    )
    .await;
    assert!(!inflight.is_finished());
    (h, inflight)
}

#[tokio::test]
async fn shutdown_drains_in_flight_checks() {
    let (h, inflight) = check_waiting_on_a_slow_refetch(Duration::from_secs(2)).await;
    let ready = h.app.ready.clone();
    let shutdown = tokio::spawn(h.app.shutdown(Duration::from_secs(60)));
    eventually(
        "not ready while draining",
        Duration::from_secs(30),
        async || !ready.get(),
    )
    .await;
    let answer = inflight.await.unwrap().expect("in-flight Check completed");
    assert_eq!(Answer::from(answer.into_inner()).status, 200);
    shutdown.await.unwrap();
}

#[tokio::test]
async fn shutdown_gives_up_on_checks_past_the_drain_timeout() {
    // The in-flight Check waits on a refetch that never answers in time (its own bound is
    // 21 s); the drain timeout is 500 ms. Had shutdown waited for it, the Check would have
    // completed with a 401 instead of being cut off.
    let (h, inflight) = check_waiting_on_a_slow_refetch(Duration::from_secs(300)).await;
    tokio::time::timeout(
        Duration::from_secs(15),
        h.app.shutdown(Duration::from_millis(500)),
    )
    .await
    .expect("shutdown returned (it hangs only if the drain timeout is not applied)");
    let answer = inflight.await.unwrap();
    assert!(answer.is_err(), "the Check was cut off: {answer:?}");
}

#[tokio::test]
async fn reload_clears_the_verified_token_cache() {
    // Before: the Casdoor-style client-id audience is accepted. After: only the resource URI.
    let idp = Idp::start(&[&RSA]).await;
    let lenient = config_yaml(&idp.issuer, "", ROUTES).replace(
        "algorithms: [RS256, ES256, EdDSA]",
        "algorithms: [RS256]\n        extra_audiences: [casdoor-client-id]",
    );
    let strict = config_yaml(&idp.issuer, "", ROUTES);
    let dir = tempdir();
    let path = dir.join("config.yaml");
    let mut h = Harness::start(idp, &lenient, true).await;
    let mut c = h.claims("files:list");
    c["aud"] = json!("casdoor-client-id");
    let t = RSA.mint(&c);
    let hits = |h: &Harness| {
        h.app
            .metrics
            .counter("mcp_authz_token_cache_requests_total", &[("result", "hit")])
    };
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    let before = hits(&h);
    assert_eq!(h.bearer("POST", "/mcp", &t).await.status, 200);
    assert_eq!(
        hits(&h),
        before + 1,
        "the token is now served from the cache"
    );
    std::fs::write(&path, strict).unwrap();
    h.app.reload(&path).expect("stricter config loads");
    let a = h.bearer("POST", "/mcp", &t).await;
    assert_eq!((a.status, a.reason()), (401, "token_wrong_audience"));
}

#[tokio::test]
async fn reload_adding_an_issuer_fetches_its_keys_at_once() {
    let a = Idp::start(&[&RSA]).await;
    let b = Idp::start(&[&RSA2]).await;
    // No routes: the default route, any valid token (issuers are the resource's last key).
    let one = config_yaml(&a.issuer, "", "");
    let two = format!(
        "{one}      - issuer: {}\n        algorithms: [RS256]\n",
        b.issuer
    );
    let dir = tempdir();
    let path = dir.join("config.yaml");
    let mut h = Harness::start(a, &one, true).await;
    let mut c = h.claims("files:list");
    c["iss"] = json!(b.issuer);
    let from_b = RSA2.mint(&c);
    assert_eq!(
        h.bearer("POST", "/mcp", &from_b).await.reason(),
        "token_unknown_issuer"
    );
    assert_eq!(b.fetches(), 0);
    std::fs::write(&path, two).unwrap();
    h.app
        .reload(&path)
        .expect("config with a second issuer loads");
    // No Check asks for them: the reload itself starts the fetch (refresh_seconds is 300).
    eventually(
        "the new issuer's keys fetched",
        Duration::from_secs(30),
        async || b.fetches() >= 1,
    )
    .await;
    eventually(
        "ready with both issuers",
        Duration::from_secs(30),
        async || h.app.ready.get(),
    )
    .await;
    assert_eq!(h.bearer("POST", "/mcp", &from_b).await.status, 200);
    // The unchanged issuer kept its keys: not fetched again.
    assert_eq!(h.idp.fetches(), 1);
}

/// Lines a child process writes to stderr, collected as they come.
fn collect_stderr(child: &mut std::process::Child) -> Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let out = Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    out
}

/// The value of one exact series (`name{labels}`) in a Prometheus text exposition.
fn series(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(admin: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn serve_reloads_on_sighup_and_on_file_change() {
    let idp = Idp::start(&[&RSA]).await;
    let dir = tempdir();
    let (grpc, admin) = (free_port(), free_port());
    let on_ports = |yaml: String, admin: u16| {
        yaml.replace(
            "grpc: \"127.0.0.1:0\"",
            &format!("grpc: \"127.0.0.1:{grpc}\""),
        )
        .replace(
            "admin: \"127.0.0.1:0\"",
            &format!("admin: \"127.0.0.1:{admin}\""),
        )
    };
    let path = dir.join("config.yaml");
    std::fs::write(&path, on_ports(variant(&idp.issuer, 0), admin)).unwrap();
    let mut child = Serve(Some(
        Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let logs = collect_stderr(child.0.as_mut().unwrap());
    let claims = json!({"iss": idp.issuer, "sub": "user-1", "aud": "https://mcp.example.com/mcp", "exp": now() + 600, "scope": "files:list"});
    let t = RSA.mint(&claims);
    let mut client = connect_when_allowed(grpc, &t).await;
    let reloads = async |result: &str| {
        series(
            &scrape(admin).await,
            &format!("mcp_authz_config_reloads_total{{result=\"{result}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    let successful = async || {
        series(
            &scrape(admin).await,
            "mcp_authz_config_last_reload_successful",
        )
        .unwrap_or(-1.0)
    };
    assert_eq!(reloads("ok").await, 1.0, "the start counts as one");
    assert_eq!(successful().await, 1.0);

    // SIGHUP with the file unchanged: the content poll would not reload, the signal does.
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually("SIGHUP reloaded", Duration::from_secs(30), async || {
        reloads("ok").await == 2.0
    })
    .await;
    assert!(
        logs.lock()
            .unwrap()
            .contains("SIGHUP: reloading configuration")
    );

    // A changed file is picked up by the 2 s poll, with no signal.
    let mut decide = async |path: &str| {
        let req = Req::new("GET", path).header("authorization", &format!("Bearer {t}"));
        Answer::from(client.check(req.into_proto()).await.unwrap().into_inner())
            .reason()
            .to_owned()
    };
    assert_eq!(decide("/other-1").await, "no_route");
    std::fs::write(&path, on_ports(variant(&idp.issuer, 1), admin)).unwrap();
    eventually(
        "the poll reloaded the changed file",
        Duration::from_secs(60),
        async || decide("/other-1").await == "insufficient_scope",
    )
    .await;
    assert_eq!(reloads("ok").await, 3.0);

    // A bad file: refused, counted, the gauge drops to 0, the running policy stays.
    std::fs::write(&path, "resources: [{id: broken}]").unwrap();
    eventually(
        "the bad file refused",
        Duration::from_secs(60),
        async || successful().await == 0.0,
    )
    .await;
    assert!(reloads("error").await >= 1.0);
    assert_eq!(decide("/other-1").await, "insufficient_scope");
    assert!(logs.lock().unwrap().contains("configuration reload failed"));

    // Restart-only settings: the new file loads (gauge back to 1) with a warning for each, and
    // the listeners stay where they are.
    let other_admin = free_port();
    let restart_only = on_ports(variant(&idp.issuer, 2), other_admin)
        .replace("retry_seconds: 1", "retry_seconds: 7")
        .replace("listen:", "limits: {token_cache_entries: 10}\nlisten:");
    std::fs::write(&path, restart_only).unwrap();
    eventually(
        "the restart-only file loaded",
        Duration::from_secs(60),
        async || successful().await == 1.0,
    )
    .await;
    assert_eq!(decide("/other-2").await, "insufficient_scope");
    let text = logs.lock().unwrap().clone();
    for warning in [
        "listener addresses changed; they take effect after a restart",
        "jwks settings changed; they take effect after a restart",
        "limits.token_cache_entries changed; it takes effect after a restart",
    ] {
        assert!(
            text.contains(warning),
            "missing warning {warning:?} in\n{text}"
        );
    }
    assert!(
        reqwest::get(format!("http://127.0.0.1:{other_admin}/metrics"))
            .await
            .is_err(),
        "the admin listener did not move before a restart"
    );
    drop(client);
    sigterm_exits_cleanly(child).await;
}

/// A `serve` process on fresh ports trusting `idp`, with its gRPC port.
fn spawn_serve(idp: &Idp, dir: &std::path::Path) -> (Serve, u16) {
    let grpc = free_port();
    let yaml = config_yaml(&idp.issuer, "", ROUTES).replace(
        "grpc: \"127.0.0.1:0\"",
        &format!("grpc: \"127.0.0.1:{grpc}\""),
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Serve(Some(child)), grpc)
}

#[tokio::test]
async fn serve_discovers_keys_by_oidc_fallback_and_refuses_a_mismatched_issuer() {
    // Only /.well-known/openid-configuration answers (RFC 8414's path is 404).
    let idp = Idp::start(&[&RSA]).await;
    *idp.state.discovery.lock().unwrap() = Discovery::OidcOnly;
    let (child, grpc) = spawn_serve(&idp, &tempdir());
    let claims = json!({"iss": idp.issuer, "sub": "user-1", "aud": "https://mcp.example.com/mcp", "exp": now() + 300, "scope": "files:list"});
    connect_when_allowed(grpc, &RSA.mint(&claims)).await;
    assert_eq!(idp.fetches(), 1, "keys from the OIDC document's jwks_uri");
    sigterm_exits_cleanly(child).await;

    // The document names another issuer (RFC 8414 §3.3, OIDC Discovery §4.3): no keys, 503.
    let idp = Idp::start(&[&RSA]).await;
    *idp.state.metadata_issuer.lock().unwrap() = Some("https://evil.example".into());
    let (child, grpc) = spawn_serve(&idp, &tempdir());
    let claims = json!({"iss": idp.issuer, "sub": "user-1", "aud": "https://mcp.example.com/mcp", "exp": now() + 300, "scope": "files:list"});
    let token = RSA.mint(&claims);
    let mut answered = None;
    eventually(
        "serve answers Checks",
        Duration::from_secs(30),
        async || {
            let Ok(mut c) = Client::connect(format!("http://127.0.0.1:{grpc}")).await else {
                return false;
            };
            let req = Req::new("POST", "/mcp").header("authorization", &format!("Bearer {token}"));
            match c.check(req.into_proto()).await {
                Ok(a) => {
                    let a = Answer::from(a.into_inner());
                    answered = Some((a.status, a.reason().to_owned()));
                    // A second discovery is the retry (retry_seconds 1) after the first
                    // failed; with the issuer accepted there would be none for 300 s.
                    idp.state.metadata_fetches.load(Ordering::SeqCst) >= 2
                }
                Err(_) => false,
            }
        },
    )
    .await;
    assert_eq!(answered, Some((503, "no_signing_keys".to_owned())));
    assert_eq!(
        idp.fetches(),
        0,
        "the mismatched document's jwks_uri is never fetched"
    );
    sigterm_exits_cleanly(child).await;
}

/// `mcp-authz check-config … | head -1`: a reader that leaves early is not a crash. std's
/// `println!` panics on EPIPE (exit 101 and a panic message); the commands end quietly instead.
#[test]
fn printing_commands_end_quietly_when_the_reader_goes_away() {
    let config = "deploy/mcp-authz.yaml";
    let commands: [&[&str]; 4] = [
        &["check-config", config],
        &["render", "envoy", "--config", config],
        &["render", "istio", "--config", config],
        &["render", "prm", "--config", config],
    ];
    for args in commands {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mcp-authz");
        // The reader goes away before the command has parsed its config, let alone printed.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait for mcp-authz");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?}: {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
