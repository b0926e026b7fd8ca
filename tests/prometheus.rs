//! The Prometheus side of operations, against the real binary and the real tools: a scrape of
//! `/metrics` passes `promtool check metrics`, the shipped alert rules pass `promtool check
//! rules` and their unit tests, a real Prometheus server scrapes the service, evaluates the
//! rules and answers queries, and the rules and the Grafana dashboard name only metrics a real
//! scrape exports. promtool and prometheus come from `MCP_AUTHZ_PROMTOOL` /
//! `MCP_AUTHZ_PROMETHEUS` or PATH; when missing the tests fail, they never skip.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Answer, Req, TestKey, free_port, now};
use mcp_authz::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};

const INSTALL: &str = "apt-get install -y --no-install-recommends prometheus";
const JOB: &str = r#"job="mcp-authz""#;
const ISSUER: &str = "https://iam.example.com";
const RESOURCE_URI: &str = "https://mcp.example.com/mcp";

const ALERTS: [&str; 8] = [
    "McpAuthzDown",
    "McpAuthzIssuerKeysUnusable",
    "McpAuthzJwksStale",
    "McpAuthzJwksFetchFailing",
    "McpAuthzServiceUnavailable",
    "McpAuthzCheckLatencyHigh",
    "McpAuthzDenyRatioSpike",
    "McpAuthzConfigReloadFailing",
];

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/prometheus")
        .join(file)
}

/// `env` when set, else `name` on PATH; a missing tool is a failure naming the install command.
fn tool(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} not found: set {env} or install it: {INSTALL}"))
}

fn promtool() -> PathBuf {
    tool("MCP_AUTHZ_PROMTOOL", "promtool")
}

/// Run promtool with `args` (and `stdin`), assert it exits 0, return its stdout.
fn run_promtool(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(promtool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).unwrap();
    }
    drop(pipe);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr),
    );
    assert!(
        status.success(),
        "promtool {args:?} exited with {status}\nstdout:\n{out}\nstderr:\n{err}"
    );
    out.into_owned()
}

/// A child process that cannot outlive the test: it runs under `sh`, which kills it by PID
/// as soon as its stdin closes — when the guard drops, or when the test process dies in any
/// way. Drop waits for it and, if it lingers, kills it by PID with SIGKILL.
struct Tied {
    name: String,
    wrapper: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    log: PathBuf,
}

impl Tied {
    fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Tied {
        const SCRIPT: &str = r#""$@" >"$TIED_LOG" 2>&1 &
pid=$!
echo "$pid"
read -r _
kill "$pid" 2>/dev/null
wait "$pid""#;
        let mut wrapper = Command::new("sh")
            .args(["-c", SCRIPT, "sh"])
            .arg(program)
            .args(args)
            .env("TIED_LOG", log)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line.trim().parse().expect("the wrapper prints the PID");
        Tied {
            name: name.into(),
            stdin: wrapper.stdin.take(),
            wrapper,
            pid,
            log: log.into(),
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- last lines of the {} log:\n{}",
            self.name,
            tail.join("\n")
        )
    }
}

impl Drop for Tied {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.wrapper.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.wrapper.kill();
        let _ = self.wrapper.wait();
    }
}

/// A scratch directory under the target dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("prometheus-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = http().get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// Poll `probe` every 200 ms until it yields, or fail after `secs` with `what` and `context`.
async fn wait_for<T, F, Fut>(secs: u64, what: &str, context: impl Fn() -> String, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Prometheus instant query; `None` until the API answers `success`.
async fn query(prom: SocketAddr, q: &str) -> Option<Vec<Value>> {
    let url = url::Url::parse_with_params(&format!("http://{prom}/api/v1/query"), &[("query", q)])
        .unwrap();
    let (status, body) = get(url.as_str()).await?;
    let v: Value = serde_json::from_str(&body).ok()?;
    assert!(
        status == 200 && v["status"] == "success",
        "query {q:?} failed: HTTP {status} {body}"
    );
    v["data"]["result"].as_array().cloned()
}

// ---------------------------------------------------------------- metric names

/// `# TYPE name kind` lines of an exposition.
fn exported_types(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.trim().to_owned()))
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Identifiers outside string literals and `$variables` for which `pick(word, next char)`
/// holds.
fn identifiers(expr: &str, pick: impl Fn(&str, char) -> bool) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if (c.is_ascii_alphabetic() || c == '_')
            && (i == 0 || !(is_ident(chars[i - 1]) || chars[i - 1] == '$'))
        {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if pick(&word, chars.get(i).copied().unwrap_or(' ')) {
                out.insert(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Metric names an expression references: `mcp_authz_*` and `process_*` identifiers, and any
/// identifier used as a selector (`name{...}`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    identifiers(expr, |w, next| {
        w.starts_with("mcp_authz_") || w.starts_with("process_") || next == '{'
    })
}

/// Every label selector (`{...}`) in an expression.
fn selectors(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = expr;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').expect("selector closes") + start;
        out.push(rest[start..=end].to_owned());
        rest = &rest[end + 1..];
    }
    out
}

/// The referenced names a real scrape does not export (histogram series resolve to their
/// family: `x_bucket`, `x_sum`, `x_count` of a histogram `x`), minus `allowed`.
fn unexported(
    names: &BTreeSet<String>,
    types: &BTreeMap<String, String>,
    allowed: &[&str],
) -> Vec<String> {
    names
        .iter()
        .filter(|n| !allowed.contains(&n.as_str()) && !types.contains_key(*n))
        .filter(|n| {
            !["_bucket", "_sum", "_count"].iter().any(|s| {
                n.strip_suffix(s)
                    .is_some_and(|base| types.get(base).is_some_and(|t| t == "histogram"))
            })
        })
        .cloned()
        .collect()
}

fn rule_exprs() -> Vec<(String, String)> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(deploy("rules.yaml")).unwrap()).unwrap();
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(deploy("grafana-dashboard.json")).unwrap())
        .expect("the dashboard is JSON")
}

/// (panel title, expr) of every panel target, then (variable name, query) of every
/// templating query.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_owned(),
                    t["expr"]
                        .as_str()
                        .expect("every target has an expr")
                        .to_owned(),
                ));
            }
            walk(
                p["panels"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                out,
            );
        }
    }
    walk(d["panels"].as_array().unwrap(), &mut out);
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            out.push((format!("${}", v["name"].as_str().unwrap()), q.to_owned()));
        }
    }
    out
}

/// A dashboard query with its Grafana variables filled in, as Grafana would send it; for a
/// `label_values(selector, label)` variable query, the selector.
fn grafana_to_promql(expr: &str) -> String {
    let expr = match expr.strip_prefix("label_values(") {
        Some(rest) => {
            rest.rsplit_once(',')
                .expect("label_values(selector, label)")
                .0
        }
        None => expr,
    };
    expr.replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
        .replace("$resource", ".*")
        .replace("$issuer", ".*")
}

// ---------------------------------------------------------------- tests

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let out = run_promtool(
        &["check", "rules", deploy("rules.yaml").to_str().unwrap()],
        None,
    );
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
    let out = run_promtool(
        &["test", "rules", deploy("rules_test.yaml").to_str().unwrap()],
        None,
    );
    assert!(out.contains("SUCCESS"), "{out}");

    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(deploy("rules.yaml")).unwrap()).unwrap();
    let rules: Vec<&serde_yaml::Value> = rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .collect();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(names, ALERTS);
    for r in &rules {
        let name = r["alert"].as_str().unwrap();
        let severity = r["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}"
        );
        for a in ["summary", "description", "runbook"] {
            assert!(
                r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: annotation {a}"
            );
        }
        assert!(
            r["annotations"]["runbook"]
                .as_str()
                .unwrap()
                .starts_with(&format!("README.md#alerts-and-dashboard ({name})")),
            "{name}: the runbook points at its README entry"
        );
        // Every selector names the scrape job the same way.
        let expr = r["expr"].as_str().unwrap();
        for s in selectors(expr) {
            assert!(s.contains(JOB), "{name}: selector {s} lacks {JOB}");
        }
    }
    // Every alert has unit tests showing it firing and not firing.
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(deploy("rules_test.yaml")).unwrap()).unwrap();
    let evals: Vec<&serde_yaml::Value> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap().iter())
        .collect();
    for a in ALERTS {
        let expected: Vec<usize> = evals
            .iter()
            .filter(|e| e["alertname"].as_str() == Some(a))
            .map(|e| e["exp_alerts"].as_sequence().unwrap().len())
            .collect();
        assert!(
            expected.iter().any(|n| *n > 0),
            "no unit test shows {a} firing"
        );
        assert!(expected.contains(&0), "no unit test shows {a} not firing");
    }
}

#[test]
fn example_prometheus_config_is_valid_and_scrapes_the_admin_port() {
    let out = run_promtool(
        &[
            "check",
            "config",
            deploy("prometheus.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");
    let cfg: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(deploy("prometheus.yaml")).unwrap()).unwrap();
    let job = &cfg["scrape_configs"][0];
    assert_eq!(job["job_name"].as_str(), Some("mcp-authz"));
    assert_eq!(
        job["static_configs"][0]["targets"][0].as_str(),
        Some("127.0.0.1:9192")
    );
    assert_eq!(cfg["rule_files"][0].as_str(), Some("rules.yaml"));
}

#[test]
fn dashboard_is_well_formed_and_selects_the_job() {
    let d = dashboard();
    assert_eq!(d["uid"], "mcp-authz");
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
            assert!(!p["targets"].as_array().unwrap().is_empty(), "{title}");
        }
    }
    let queries = dashboard_queries(&d);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for (title, expr) in &queries {
        let sels = selectors(expr);
        assert!(!sels.is_empty(), "{title}: {expr} has no selector");
        for s in sels {
            assert!(s.contains(JOB), "{title}: selector {s} lacks {JOB}");
        }
    }
    for want in [
        "mcp_authz_checks_total",
        "mcp_authz_check_duration_seconds_bucket",
        "mcp_authz_jwks_fetches_total",
        "mcp_authz_jwks_last_success_timestamp_seconds",
        "mcp_authz_jwks_keys",
        "mcp_authz_jwks_keys_skipped_total",
        "mcp_authz_jwks_unknown_kid_refetches_total",
        "mcp_authz_token_cache_requests_total",
        "mcp_authz_config_reloads_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(
            queries.iter().any(|(_, e)| metric_names(e).contains(want)),
            "no dashboard panel shows {want}"
        );
    }
}

#[test]
fn metric_name_extraction() {
    let e = r#"histogram_quantile(0.99, sum by (le) (rate(mcp_authz_check_duration_seconds_bucket{job="mcp-authz", reason=~"process_x"}[5m]))) / up{job="x"} + time() - process_start_time_seconds"#;
    assert_eq!(
        metric_names(e).into_iter().collect::<Vec<_>>(),
        [
            "mcp_authz_check_duration_seconds_bucket",
            "process_start_time_seconds",
            "up"
        ]
    );
    assert_eq!(selectors(e).len(), 2);
    let types = BTreeMap::from([
        (
            "mcp_authz_check_duration_seconds".into(),
            "histogram".into(),
        ),
        ("mcp_authz_jwks_keys".into(), "gauge".into()),
    ]);
    let names = BTreeSet::from([
        "mcp_authz_check_duration_seconds_bucket".to_owned(),
        "mcp_authz_jwks_keys_count".to_owned(),
        "up".to_owned(),
    ]);
    assert_eq!(
        unexported(&names, &types, &["up"]),
        ["mcp_authz_jwks_keys_count"]
    );
}

/// The real binary with a generated config (issuer keys from a local `jwks_file`), a few
/// Checks to create series, then promtool on a real scrape, the name cross-checks, and a real
/// Prometheus server that scrapes it, evaluates the shipped rules and answers queries.
#[tokio::test(flavor = "multi_thread")]
async fn real_scrape_lints_and_a_real_prometheus_scrapes_and_queries_it() {
    let prometheus_bin = tool("MCP_AUTHZ_PROMETHEUS", "prometheus");
    promtool();
    let dir = Scratch::new("e2e");

    // --- the service
    let key = TestKey::rsa("k1");
    // A post-quantum key the service skips (counted in mcp_authz_jwks_keys_skipped_total).
    let jwks = json!({"keys": [key.jwk(), {"kty": "MLDSA", "kid": "pq", "alg": "ML-DSA-44", "pub": "AAAA"}]});
    dir.file("jwks.json", &jwks.to_string());
    let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.file(
        "mcp-authz.yaml",
        &format!(
            r#"
listen: {{grpc: "{grpc}", admin: "{admin}"}}
identity: {{dynamic_metadata: true}}   # the allow reason is read from the metadata below
resources:
  - id: files
    uri: {RESOURCE_URI}
    issuers:
      - issuer: {ISSUER}
        jwks_file: jwks.json
        algorithms: [RS256]
    routes:
      - name: mcp
        path: /mcp
        scopes: [files:list]
        mcp:
          tools:
            read_file: [files:read]
"#
        ),
    );
    let service = Tied::spawn(
        "mcp-authz",
        Path::new(env!("CARGO_BIN_EXE_mcp-authz")),
        &[
            "serve".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        &dir.0.join("mcp-authz.log"),
    );
    wait_for(
        20,
        "mcp-authz /readyz",
        || service.log(),
        move || async move {
            let (status, _) = get(&format!("http://{admin}/readyz")).await?;
            (status == 200).then_some(())
        },
    )
    .await;

    // --- traffic: every outcome below creates series the rules and dashboard use
    let mut client = AuthorizationClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let claims = |scope: &str, exp: u64| {
        json!({"iss": ISSUER, "sub": "user-1", "aud": RESOURCE_URI, "exp": exp,
            "iat": now() - 10, "scope": scope, "client_id": "client-1"})
    };
    let good = key.mint(&claims("files:list", now() + 600));
    let expired = key.mint(&claims("files:list", now() - 600));
    let unknown_kid = TestKey::rsa("k-unknown").mint(&claims("files:list", now() + 600));
    let tools_call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{}}}"#;
    let bearer = |t: &str| format!("Bearer {t}");
    let cases: Vec<(Req, u16, &str)> = vec![
        (Req::new("GET", "/mcp"), 401, "no_credentials"),
        (Req::new("GET", "/mcp"), 401, "no_credentials"),
        (
            Req::new("GET", "/mcp").header("authorization", &bearer(&good)),
            200,
            "ok",
        ),
        (
            Req::new("GET", "/mcp").header("authorization", &bearer(&good)),
            200,
            "ok",
        ),
        (
            Req::new("GET", "/mcp").header("authorization", &bearer(&good)),
            200,
            "ok",
        ),
        (
            Req::new("GET", "/mcp").header("authorization", &bearer(&expired)),
            401,
            "token_expired",
        ),
        (
            Req::new("GET", "/mcp").header("authorization", &bearer(&unknown_kid)),
            401,
            "",
        ),
        (
            Req::new("POST", "/mcp")
                .header("authorization", &bearer(&good))
                .header("content-type", "application/json")
                .body(tools_call),
            403,
            "insufficient_scope",
        ),
    ];
    for (req, status, reason) in cases {
        let what = format!("{} {}", req.method, req.path);
        let a = Answer::from(client.check(req.into_proto()).await.unwrap().into_inner());
        assert_eq!(a.status, status, "{what}: {a:?}");
        if !reason.is_empty() {
            assert_eq!(a.reason(), reason, "{what}: {a:?}");
        }
    }

    // --- (a) a real scrape passes promtool's lint
    let r = http()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let scrape = r.text().await.unwrap();
    dir.file("scrape.txt", &scrape);
    run_promtool(&["check", "metrics"], Some(&scrape));
    for sample in [
        r#"mcp_authz_checks_total{decision="deny",reason="no_credentials",resource="files"} 2"#,
        r#"mcp_authz_checks_total{decision="allow",reason="ok",resource="files"} 3"#,
        r#"mcp_authz_checks_total{decision="deny",reason="insufficient_scope",resource="files"} 1"#,
        r#"mcp_authz_issuer_keys_usable{issuer="https://iam.example.com"} 1"#,
        r#"mcp_authz_jwks_keys{issuer="https://iam.example.com"} 1"#,
        r#"mcp_authz_jwks_keys_skipped_total{issuer="https://iam.example.com",reason="#,
        r#"mcp_authz_jwks_unknown_kid_refetches_total{issuer="https://iam.example.com",result="started"} 1"#,
        r#"mcp_authz_build_info{version=""#,
    ] {
        assert!(
            // A sample with its value must match a line exactly, one without as a prefix.
            scrape.lines().any(|l| if sample.contains("} ") {
                l == sample
            } else {
                l.starts_with(sample)
            }),
            "scrape lacks {sample}\n{scrape}"
        );
    }

    // --- (e) the rules and the dashboard name only metrics the service really exports
    let types = exported_types(&scrape);
    for (alert, expr) in rule_exprs() {
        let missing = unexported(&metric_names(&expr), &types, &["up"]);
        assert!(
            missing.is_empty(),
            "rule {alert} uses metrics the service does not export: {missing:?}\nexported: {:?}",
            types.keys()
        );
    }
    let queries = dashboard_queries(&dashboard());
    for (title, expr) in &queries {
        let missing = unexported(&metric_names(expr), &types, &[]);
        assert!(
            missing.is_empty(),
            "dashboard panel {title:?} uses metrics the service does not export: {missing:?}\nexported: {:?}",
            types.keys()
        );
    }

    // --- (c) a Prometheus config for this run, checked by promtool
    let prom: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let prom_config = dir.file(
        "prometheus.yaml",
        &format!(
            r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: mcp-authz
    static_configs:
      - targets: ["{admin}"]
"#,
            rules = deploy("rules.yaml").display()
        ),
    );
    let out = run_promtool(&["check", "config", prom_config.to_str().unwrap()], None);
    assert!(out.contains("SUCCESS: 8 rules found"), "{out}");

    // --- (d) a real Prometheus server scrapes the service and answers
    let tsdb = dir.0.join("tsdb");
    let prometheus = Tied::spawn(
        "prometheus",
        &prometheus_bin,
        &[
            format!("--config.file={}", prom_config.display()),
            format!("--storage.tsdb.path={}", tsdb.display()),
            format!("--web.listen-address={prom}"),
        ],
        &dir.0.join("prometheus.log"),
    );
    let context = || format!("{}\n{}", prometheus.log(), service.log());
    wait_for(60, "prometheus /-/ready", context, move || async move {
        let (status, _) = get(&format!("http://{prom}/-/ready")).await?;
        (status == 200).then_some(())
    })
    .await;
    let result = wait_for(
        60,
        "mcp_authz_checks_total in Prometheus",
        context,
        move || async move {
            let v = query(prom, "mcp_authz_checks_total").await?;
            (!v.is_empty()).then_some(v)
        },
    )
    .await;
    eprintln!(
        "prometheus answered mcp_authz_checks_total with:\n{}",
        serde_json::to_string_pretty(&result).unwrap()
    );
    let value = |decision: &str, reason: &str| {
        result
            .iter()
            .find(|s| {
                let m = &s["metric"];
                m["__name__"] == "mcp_authz_checks_total"
                    && m["job"] == "mcp-authz"
                    && m["instance"] == admin.to_string()
                    && m["resource"] == "files"
                    && m["decision"] == decision
                    && m["reason"] == reason
            })
            .map(|s| s["value"][1].as_str().unwrap().to_owned())
    };
    assert_eq!(
        value("deny", "no_credentials").as_deref(),
        Some("2"),
        "{result:?}"
    );
    assert_eq!(value("allow", "ok").as_deref(), Some("3"), "{result:?}");
    assert_eq!(
        value("deny", "insufficient_scope").as_deref(),
        Some("1"),
        "{result:?}"
    );
    let up = query(prom, r#"up{job="mcp-authz"}"#).await.unwrap();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");

    // The shipped rules load and evaluate cleanly against real series, and none fires.
    // Only an evaluation that started after the series above were queryable counts: one
    // from before the first scrape would see no data and pass vacuously.
    let rules_now = move || async move {
        let (_, body) = get(&format!("http://{prom}/api/v1/rules")).await?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        Some(rules)
    };
    let seen_before: Vec<String> = rules_now()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r["lastEvaluation"].as_str().unwrap_or_default().to_owned())
        .collect();
    let rules = wait_for(60, "every rule evaluated on scraped data", context, {
        let seen_before = seen_before.clone();
        move || {
            let seen_before = seen_before.clone();
            async move {
                let rules = rules_now().await?;
                let fresh = rules.len() == ALERTS.len()
                    && rules.iter().enumerate().all(|(i, r)| {
                        r["health"] != "unknown"
                            && r["lastEvaluation"].as_str()
                                != seen_before.get(i).map(String::as_str)
                    });
                fresh.then_some(rules)
            }
        }
    })
    .await;
    for r in &rules {
        assert_eq!(r["health"], "ok", "rule failed to evaluate: {r}");
        assert_eq!(
            r["state"], "inactive",
            "rule fires on a healthy service: {r}"
        );
    }

    // Every dashboard query is valid PromQL and finds series, except the 5xx panel (none
    // happened) — so label names and selectors are real too.
    for (title, expr) in &queries {
        let q = grafana_to_promql(expr);
        let q = q.as_str();
        if title == "503 / 500 answers" {
            query(prom, q).await.expect("query answers");
            continue;
        }
        let what = format!("series for dashboard query {title:?}: {q}");
        wait_for(30, &what, context, move || async move {
            let v = query(prom, q).await?;
            (!v.is_empty()).then_some(())
        })
        .await;
    }

    drop(prometheus);
    drop(service);
}
