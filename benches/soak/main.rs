//! Chaos soak (issue 12): the release `mcp-authz serve` behind a real Envoy 1.40 (the
//! bootstrap `mcp-authz render envoy` produces), at a fraction (default 80 %) of the
//! capacity measured in the same run, for `--minutes` (default 10) while an IdP stub under our
//! control flaps (HTTP 500, hangs, slow bodies, oversized bodies, not-JSON), keys rotate (a new
//! `kid`, and new material under the same `kid`), the configuration reloads (an audience comes
//! and goes) and unknown-kid tokens flood in all the time.
//!
//! An oracle knows what every request must get: the traffic is a mix of classes (valid tokens,
//! cached and fresh; missing scope; no token; expired; wrong audience; refresh tokens; unknown
//! kids; garbage; the audience a reload toggles; tokens of retired keys), each with one expected
//! status in the current phase. Before the conductor changes the world (publishes keys, writes
//! the configuration), it takes the classes whose answer would change out of the mix, waits
//! until no request picked under the old phase is in flight, makes the change, confirms it
//! took effect (a probe through Envoy, or the reload counter), and only then brings the class
//! back with its new expectation. So any mismatch is a wrong decision, never a race.
//!
//! `cargo bench --bench soak -- --minutes 10` (documented in benches/BENCHMARKS.md,
//! RELIABILITY). Exit status 1 when any assertion fails: a wrong decision, an ext_authz error
//! or failure-mode allow in Envoy's stats, a 503, RSS or fd growth.

#[allow(dead_code)]
#[path = "../load/envoy.rs"]
mod envoy;
#[allow(dead_code)]
#[path = "../load/fixture.rs"]
mod fixture;
#[allow(dead_code)]
#[path = "../load/http1.rs"]
mod http1;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair};
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use serde_json::{Value, json};

use fixture::{b64, free_port, unix_now};

const ISSUER: &str = "https://iam.soak.example";
const URI: &str = "https://mcp.example.com/mcp";
const HOST: &str = "mcp.example.com";
/// The audience a reload adds and removes (`extra_audiences`).
const AUD2: &str = "soak-aud-2";

#[derive(Parser, Debug)]
struct Args {
    /// Soak duration in minutes (fractions allowed: 0.5 is a 30 s smoke).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Fraction of the measured capacity to run at.
    #[arg(long, default_value_t = 0.8)]
    load: f64,
    /// Seconds of closed-loop load that measure capacity.
    #[arg(long, default_value_t = 20)]
    capacity_seconds: u64,
    /// Keep-alive client connections to Envoy.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Envoy binary (default: the one in .venv).
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// `cargo bench` passes `--bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

// ---------------------------------------------------------------------------------------
// Signing keys and tokens

struct Signer {
    kid: String,
    key: aws_lc_rs::rsa::KeyPair,
}

impl Signer {
    fn new(kid: &str) -> Arc<Signer> {
        Arc::new(Signer {
            kid: kid.to_owned(),
            key: aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("RSA key"),
        })
    }

    fn jwk(&self) -> Value {
        let p = self.key.public_key();
        json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
            "n": b64(p.modulus().big_endian_without_leading_zero()),
            "e": b64(p.exponent().big_endian_without_leading_zero())})
    }

    fn mint_kid(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "kid": kid, "typ": "at+jwt"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("RSA sign");
        format!("{input}.{}", b64(&sig))
    }

    fn mint(&self, claims: &Value) -> String {
        self.mint_kid(&self.kid, claims)
    }
}

static SERIAL: AtomicU64 = AtomicU64::new(0);

fn claims(scope: &str, aud: Value, exp_in: i64) -> Value {
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    json!({"iss": ISSUER, "sub": format!("user-{n}"), "aud": aud,
        "exp": unix_now() as i64 + exp_in, "iat": unix_now(), "jti": format!("{n:x}"),
        "client_id": "soak-client", "scope": scope})
}

fn request(token: Option<&str>) -> Arc<[u8]> {
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{}}"#;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2025-11-25\r\n\
         {auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into()
}

/// Requests for one class, signed by `s`.
fn pool(n: usize, mint: impl Fn() -> String) -> Vec<Arc<[u8]>> {
    (0..n).map(|_| request(Some(&mint()))).collect()
}

// ---------------------------------------------------------------------------------------
// The IdP stub

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ok,
    Error,
    Hang,
    SlowBody,
    Oversized,
    NotJson,
}

struct Idp {
    jwks: Mutex<String>,
    mode: Mutex<Mode>,
    served: AtomicU64,
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Response {
    idp.served.fetch_add(1, Ordering::Relaxed);
    let mode = *idp.mode.lock().unwrap();
    let body = idp.jwks.lock().unwrap().clone();
    let json = [("content-type", "application/json")];
    match mode {
        Mode::Ok => (json, body).into_response(),
        Mode::Error => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            (json, body).into_response()
        }
        Mode::SlowBody => {
            // Half the document at once, then a byte every 200 ms: past the fetch timeout.
            let bytes = body.into_bytes();
            let half = bytes.len() / 2;
            let first = bytes[..half].to_vec();
            let rest = bytes[half..].to_vec();
            let stream = futures_util::stream::unfold(
                (0usize, first, rest),
                |(i, first, rest)| async move {
                    if i == 0 {
                        return Some((Ok::<_, std::io::Error>(first.clone()), (1, first, rest)));
                    }
                    if i > rest.len() {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Some((Ok(vec![rest[i - 1]]), (i + 1, first, rest)))
                },
            );
            (json, axum::body::Body::from_stream(stream)).into_response()
        }
        Mode::Oversized => (
            json,
            format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(300_000)),
        )
            .into_response(),
        Mode::NotJson => (json, "<html>maintenance</html>").into_response(),
    }
}

fn publish(idp: &Idp, keys: &[&Arc<Signer>]) {
    let doc = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    *idp.jwks.lock().unwrap() = doc.to_string();
}

// ---------------------------------------------------------------------------------------
// The oracle

#[derive(Clone)]
struct Class {
    name: &'static str,
    weight: u32,
    expect: u16,
    requests: Arc<Vec<Arc<[u8]>>>,
}

struct Phase {
    generation: u64,
    classes: Vec<Class>,
    total: u32,
}

impl Phase {
    fn new(generation: u64, classes: Vec<Class>) -> Phase {
        let total = classes.iter().map(|c| c.weight).sum();
        Phase {
            generation,
            classes,
            total,
        }
    }

    fn pick(&self, r: u64) -> Option<(&Class, &Arc<[u8]>)> {
        let mut x = (r % u64::from(self.total.max(1))) as u32;
        for c in &self.classes {
            if x < c.weight {
                let i = ((r >> 32) as usize) % c.requests.len();
                return Some((c, &c.requests[i]));
            }
            x -= c.weight;
        }
        None
    }
}

#[derive(Default)]
struct Tally {
    /// class → (sent, wrong), and the first few wrong answers.
    by_class: BTreeMap<&'static str, (u64, u64)>,
    wrong: Vec<String>,
    transport_errors: u64,
    status_503: u64,
    latency_us: Vec<u64>,
}

struct Shared {
    phase: ArcSwap<Phase>,
    /// Per connection: the phase generation of the request in flight, 0 when idle.
    inflight: Vec<AtomicU64>,
    tally: Mutex<Tally>,
    stop: AtomicBool,
    sent: AtomicU64,
    /// Requests per second per connection; 0 = closed loop.
    pace: Mutex<f64>,
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

async fn client(shared: Arc<Shared>, envoy: SocketAddr, me: usize) {
    let mut conn = None;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ ((me as u64 + 1) << 17);
    let mut next = tokio::time::Instant::now();
    let mut local: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut wrong = Vec::new();
    let (mut errors, mut s503) = (0u64, 0u64);
    let mut lat = Vec::with_capacity(1 << 16);
    while !shared.stop.load(Ordering::Relaxed) {
        let pace = *shared.pace.lock().unwrap();
        if pace > 0.0 {
            next += Duration::from_secs_f64(1.0 / pace);
            let now = tokio::time::Instant::now();
            if next > now {
                tokio::time::sleep_until(next).await;
            } else if now - next > Duration::from_secs(1) {
                next = now; // do not burst to catch up after a stall
            }
        }
        let phase = shared.phase.load_full();
        shared.inflight[me].store(phase.generation, Ordering::SeqCst);
        // Re-read: the conductor may have swapped between the load and the store.
        let phase = shared.phase.load_full();
        shared.inflight[me].store(phase.generation, Ordering::SeqCst);
        let Some((class, req)) = phase.pick(xorshift(&mut seed)) else {
            shared.inflight[me].store(0, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if conn.is_none() {
            conn = http1::Conn::connect(envoy).await.ok();
        }
        let started = Instant::now();
        let got = match conn.as_mut() {
            Some(c) => c.round_trip(req).await.ok(),
            None => None,
        };
        shared.inflight[me].store(0, Ordering::SeqCst);
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let e = local.entry(class.name).or_default();
        e.0 += 1;
        match got {
            None => {
                errors += 1;
                conn = None;
            }
            Some(status) => {
                lat.push(started.elapsed().as_micros() as u64);
                if status == 503 {
                    s503 += 1;
                }
                if status != class.expect {
                    e.1 += 1;
                    if wrong.len() < 20 {
                        wrong.push(format!(
                            "{}: expected {}, got {status} (phase {})",
                            class.name, class.expect, phase.generation
                        ));
                    }
                }
            }
        }
        if lat.len() >= 1 << 16 {
            flush(
                &shared,
                &mut local,
                &mut wrong,
                &mut errors,
                &mut s503,
                &mut lat,
            );
        }
    }
    flush(
        &shared,
        &mut local,
        &mut wrong,
        &mut errors,
        &mut s503,
        &mut lat,
    );
}

fn flush(
    shared: &Shared,
    local: &mut BTreeMap<&'static str, (u64, u64)>,
    wrong: &mut Vec<String>,
    errors: &mut u64,
    s503: &mut u64,
    lat: &mut Vec<u64>,
) {
    let mut t = shared.tally.lock().unwrap();
    for (k, (s, w)) in std::mem::take(local) {
        let e = t.by_class.entry(k).or_default();
        e.0 += s;
        e.1 += w;
    }
    if t.wrong.len() < 50 {
        t.wrong.append(wrong);
    }
    t.transport_errors += std::mem::take(errors);
    t.status_503 += std::mem::take(s503);
    // Keep a sample of latencies (every 8th) to bound memory over 10 minutes.
    t.latency_us.extend(lat.iter().step_by(8));
    lat.clear();
}

// ---------------------------------------------------------------------------------------
// The world and its conductor

struct World {
    signer: Arc<Signer>,
    retired: Vec<Arc<Signer>>,
    aud2_allowed: bool,
    /// Pools signed by the current signer.
    valid_cached: Arc<Vec<Arc<[u8]>>>,
    valid_fresh: Arc<Vec<Arc<[u8]>>>,
    scope_short: Arc<Vec<Arc<[u8]>>>,
    aud2: Arc<Vec<Arc<[u8]>>>,
    retired_pool: Arc<Vec<Arc<[u8]>>>,
    /// Pools whose answer does not depend on keys or configuration.
    stable: Vec<Class>,
}

fn signed_pools(s: &Signer) -> [Arc<Vec<Arc<[u8]>>>; 4] {
    let files = || json!([URI]);
    [
        Arc::new(pool(64, || s.mint(&claims("files:list", files(), 3600)))),
        Arc::new(pool(600, || {
            s.mint(&claims("files:list files:read", files(), 3600))
        })),
        Arc::new(pool(32, || s.mint(&claims("other:scope", files(), 3600)))),
        Arc::new(pool(32, || {
            s.mint(&claims("files:list", json!(AUD2), 3600))
        })),
    ]
}

fn stable_classes(s: &Signer) -> Vec<Class> {
    let files = || json!([URI]);
    let class = |name, weight, expect, requests: Vec<Arc<[u8]>>| Class {
        name,
        weight,
        expect,
        requests: Arc::new(requests),
    };
    let mut refresh = vec![];
    for typ in ["Refresh", "Offline", "ID"] {
        let mut c = claims("files:list", files(), 3600);
        c["typ"] = json!(typ);
        refresh.push(request(Some(&s.mint(&c))));
    }
    let mut c = claims("files:list", files(), 3600);
    c["tokenType"] = json!("refresh-token");
    refresh.push(request(Some(&s.mint(&c))));
    vec![
        class("no_token", 5, 401, vec![request(None)]),
        class(
            "expired",
            3,
            401,
            pool(16, || s.mint(&claims("files:list", files(), -600))),
        ),
        class(
            "wrong_aud",
            3,
            401,
            pool(16, || {
                s.mint(&claims(
                    "files:list",
                    json!("https://other.example/mcp"),
                    3600,
                ))
            }),
        ),
        class("not_access_token", 3, 401, refresh),
        // A flood of unknown kids (each triggers at most one refetch per cooldown).
        class(
            "unknown_kid",
            6,
            401,
            (0..256)
                .map(|i| {
                    request(Some(&s.mint_kid(
                        &format!("flood-{i}-{:x}", SERIAL.fetch_add(1, Ordering::Relaxed)),
                        &claims("files:list", files(), 3600),
                    )))
                })
                .collect(),
        ),
        class(
            "garbage",
            2,
            401,
            vec![
                request(Some("not-a-jwt")),
                request(Some("e30.e30.e30")),
                request(Some(&format!(
                    "{}.{}.AAAA",
                    b64(b"{\"alg\":\"none\"}"),
                    b64(b"{}")
                ))),
            ],
        ),
    ]
}

impl World {
    fn phase(&self, generation: u64, exclude: &[&str]) -> Phase {
        let class = |name, weight, expect, requests: &Arc<Vec<Arc<[u8]>>>| Class {
            name,
            weight,
            expect,
            requests: requests.clone(),
        };
        let mut classes = vec![
            class("valid_cached", 55, 200, &self.valid_cached),
            class("valid_fresh", 10, 200, &self.valid_fresh),
            class("scope_short", 5, 403, &self.scope_short),
            class(
                "aud2_reload",
                3,
                if self.aud2_allowed { 200 } else { 401 },
                &self.aud2,
            ),
        ];
        if !self.retired_pool.is_empty() {
            classes.push(class("retired_key", 3, 401, &self.retired_pool));
        }
        classes.extend(self.stable.iter().cloned());
        classes.retain(|c| !exclude.contains(&c.name));
        Phase::new(generation, classes)
    }
}

const SIGNED: &[&str] = &["valid_cached", "valid_fresh", "scope_short", "aud2_reload"];

struct Conductor {
    shared: Arc<Shared>,
    idp: Arc<Idp>,
    world: World,
    generation: u64,
    envoy: SocketAddr,
    config_path: PathBuf,
    config_yaml: Box<dyn Fn(bool) -> String + Send>,
    admin: SocketAddr,
    log: Vec<String>,
    started: Instant,
}

impl Conductor {
    fn note(&mut self, what: String) {
        let line = format!("{:>6.1} s  {what}", self.started.elapsed().as_secs_f64());
        eprintln!("{line}");
        self.log.push(line);
    }

    /// Swap to a phase without `exclude`, and wait until nothing picked before is in flight.
    async fn set_phase(&mut self, exclude: &[&str]) {
        self.generation += 1;
        let g = self.generation;
        self.shared
            .phase
            .store(Arc::new(self.world.phase(g, exclude)));
        loop {
            let old = self
                .shared
                .inflight
                .iter()
                .any(|a| matches!(a.load(Ordering::SeqCst), x if x != 0 && x < g));
            if !old {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Through Envoy, on a connection of our own, until `req` gets `want` (bounded).
    async fn probe_until(&self, req: &[u8], want: u16, what: &str) -> Duration {
        let t = Instant::now();
        loop {
            if let Ok(mut c) = http1::Conn::connect(self.envoy).await
                && c.round_trip(req).await.ok() == Some(want)
            {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{what}: no {want} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn flap(&mut self, mode: Mode, seconds: u64) {
        *self.idp.mode.lock().unwrap() = mode;
        self.note(format!("IdP {mode:?} for {seconds} s"));
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        *self.idp.mode.lock().unwrap() = Mode::Ok;
    }

    /// New kid: publish both, probe the new one in, switch, publish the new one only, probe
    /// the old one out; its tokens become `retired_key` (401).
    async fn rotate_new_kid(&mut self, n: u64) {
        let old = self.world.signer.clone();
        let new = Signer::new(&format!("k-{n}"));
        publish(&self.idp, &[&old, &new]);
        let probe = request(Some(&new.mint(&claims("files:list", json!([URI]), 3600))));
        let took = self.probe_until(&probe, 200, "new kid published").await;
        let [cached, fresh, short, aud2] = signed_pools(&new);
        self.world.signer = new.clone();
        self.world.valid_cached = cached;
        self.world.valid_fresh = fresh;
        self.world.scope_short = short;
        self.world.aud2 = aud2;
        // Old-key tokens are still valid here; they retire when the old key goes.
        let old_pool = Arc::new(pool(32, || {
            old.mint(&claims("files:list", json!([URI]), 3600))
        }));
        self.set_phase(&["retired_key"]).await;
        publish(&self.idp, &[&new]);
        let gone = request(Some(&old.mint(&claims("files:list", json!([URI]), 3600))));
        let took2 = self.probe_until(&gone, 401, "old kid withdrawn").await;
        self.world.retired.push(old);
        self.world.retired_pool = old_pool;
        self.set_phase(&[]).await;
        self.note(format!(
            "rotated to kid {} (new kid in after {} ms, old kid out after {} ms)",
            new.kid,
            took.as_millis(),
            took2.as_millis()
        ));
    }

    /// Same kid, new material (a regenerated certificate): every token of the old material,
    /// cached ones included, must turn 401.
    async fn rotate_same_kid(&mut self) {
        let old = self.world.signer.clone();
        let new = Signer::new(&old.kid);
        let [cached, fresh, short, aud2] = signed_pools(&new);
        let old_pool = self.world.valid_cached.clone();
        self.set_phase(&[SIGNED, &["retired_key"]].concat()).await;
        publish(&self.idp, &[&new]);
        let probe = request(Some(&new.mint(&claims("files:list", json!([URI]), 3600))));
        // The kid is known, so no refetch: the periodic refresh brings the new material.
        let took = self
            .probe_until(&probe, 200, "same-kid material published")
            .await;
        self.world.signer = new.clone();
        self.world.valid_cached = cached;
        self.world.valid_fresh = fresh;
        self.world.scope_short = short;
        self.world.aud2 = aud2;
        self.world.retired.push(old);
        // The old material's cached tokens: these were allowed from the cache a moment ago.
        self.world.retired_pool = old_pool;
        self.set_phase(&[]).await;
        self.note(format!(
            "new material under kid {} (in after {} ms); its cached tokens now expect 401",
            new.kid,
            took.as_millis()
        ));
    }

    async fn reload(&mut self) {
        let next = !self.world.aud2_allowed;
        self.set_phase(&["aud2_reload"]).await;
        let before = reloads(self.admin);
        std::fs::write(&self.config_path, (self.config_yaml)(next)).expect("write config");
        let t = Instant::now();
        while reloads(self.admin) <= before {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "reload not picked up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.world.aud2_allowed = next;
        self.set_phase(&[]).await;
        self.note(format!(
            "config reloaded: {AUD2} {} (after {} ms)",
            if next { "allowed" } else { "removed" },
            t.elapsed().as_millis()
        ));
    }
}

fn reloads(admin: SocketAddr) -> f64 {
    let (_, body) = http1::get_blocking(admin, "/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| l.starts_with("mcp_authz_config_reloads_total{") && l.contains("result=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn config_yaml(p: &fixture::Ports, envoy_port: u16, idp: u16, aud2: bool) -> String {
    let extra = if aud2 {
        format!("\n        extra_audiences: [{AUD2}]")
    } else {
        String::new()
    };
    format!(
        r#"listen: {{grpc: "127.0.0.1:{grpc}", admin: "127.0.0.1:{admin}"}}
jwks:
  refresh_seconds: 3
  min_refresh_seconds: 1
  retry_seconds: 1
  unknown_kid_cooldown_seconds: 2
  max_stale_seconds: 300
  fetch_timeout_seconds: 2
  max_response_bytes: 65536
envoy:
  listen: 127.0.0.1:{envoy_port}
  admin: 127.0.0.1:{envoy_admin}
  authz_address: 127.0.0.1:{grpc}
resources:
  - id: files
    uri: {URI}
    upstream: 127.0.0.1:{upstream}
    issuers:
      - issuer: {ISSUER}
        jwks_uri: http://127.0.0.1:{idp}/jwks
        algorithms: [RS256]{extra}
    routes:
      - {{name: mcp, path: /mcp, methods: [GET, POST, DELETE], scopes: [files:list]}}
"#,
        grpc = p.grpc,
        admin = p.admin,
        envoy_admin = p.envoy_admin,
        upstream = p.upstream,
    )
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ok = rt.block_on(run(args));
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run(args: Args) -> bool {
    let dir = fixture::work_dir();
    let ports = fixture::Ports::pick();
    let envoy_port = free_port();
    // The IdP stub on its own thread.
    let first = Signer::new("k-0");
    let idp = Arc::new(Idp {
        jwks: Mutex::new(String::new()),
        mode: Mutex::new(Mode::Ok),
        served: AtomicU64::new(0),
    });
    publish(&idp, &[&first]);
    let idp_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("idp port");
    let idp_port = idp_listener.local_addr().unwrap().port();
    {
        let idp = idp.clone();
        envoy::spawn_thread("idp", move || async move {
            idp_listener.set_nonblocking(true).unwrap();
            let l = tokio::net::TcpListener::from_std(idp_listener).unwrap();
            let app = Router::new().route("/jwks", get(jwks)).with_state(idp);
            let _ = axum::serve(l, app).await;
        });
    }
    let up = std::net::TcpListener::bind(("127.0.0.1", ports.upstream)).expect("upstream port");
    envoy::spawn_thread("upstream", move || async move {
        up.set_nonblocking(true).unwrap();
        http1::upstream(tokio::net::TcpListener::from_std(up).unwrap()).await
    });
    let yaml = config_yaml(&ports, envoy_port, idp_port, true);
    let service = fixture::Service::start(&dir, "soak", &yaml, &[], None);
    let config_path = dir.join("soak.yaml");
    let config = mcp_authz::config::Config::from_yaml(&yaml).expect("soak config");
    let bootstrap =
        mcp_authz::render::envoy_bootstrap(&config, &Default::default()).expect("render envoy");
    let envoy_bin = envoy::find_envoy(args.envoy.as_deref());
    let envoy_admin: SocketAddr = ([127, 0, 0, 1], ports.envoy_admin).into();
    let envoy = envoy::Envoy::start(&envoy_bin, &dir, &bootstrap, envoy_admin, None);
    let envoy_addr: SocketAddr = ([127, 0, 0, 1], envoy_port).into();
    eprintln!(
        "soak: mcp-authz pid {}, envoy pid {}, work dir {}",
        service.pid(),
        envoy.pid(),
        dir.display()
    );

    let [cached, fresh, short, aud2] = signed_pools(&first);
    let world = World {
        signer: first.clone(),
        retired: vec![],
        aud2_allowed: true,
        valid_cached: cached,
        valid_fresh: fresh,
        scope_short: short,
        aud2,
        retired_pool: Arc::new(vec![]),
        stable: stable_classes(&first),
    };
    let shared = Arc::new(Shared {
        phase: ArcSwap::from_pointee(world.phase(1, &[])),
        inflight: (0..args.connections).map(|_| AtomicU64::new(0)).collect(),
        tally: Mutex::new(Tally::default()),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        pace: Mutex::new(0.0),
    });

    // 1. Capacity: closed loop, the same mix, no chaos.
    let clients: Vec<_> = (0..args.connections)
        .map(|i| tokio::spawn(client(shared.clone(), envoy_addr, i)))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (s0, t0) = (shared.sent.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.capacity_seconds)).await;
    let capacity = (shared.sent.load(Ordering::Relaxed) - s0) as f64 / t0.elapsed().as_secs_f64();
    let target = capacity * args.load;
    *shared.pace.lock().unwrap() = target / args.connections as f64;
    eprintln!("soak: capacity {capacity:.0} req/s through Envoy; running at {target:.0} req/s");
    {
        // The capacity phase's answers count too (same oracle), but latency is reset.
        shared.tally.lock().unwrap().latency_us.clear();
    }

    // 2. The soak.
    let mut conductor = Conductor {
        shared: shared.clone(),
        idp: idp.clone(),
        world,
        generation: 1,
        envoy: envoy_addr,
        config_path,
        config_yaml: Box::new(move |aud2| config_yaml(&ports, envoy_port, idp_port, aud2)),
        admin: service.admin,
        log: vec![],
        started: Instant::now(),
    };
    let soak = Duration::from_secs_f64(args.minutes * 60.0);
    let pid = service.pid();
    let samples = Arc::new(Mutex::new(Vec::<(f64, u64, usize, u64)>::new()));
    let initial = target / args.connections as f64;
    let sampler = {
        let samples = samples.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let mut last: Option<(u64, Instant)> = None;
            loop {
                let (rss, _) = fixture::rss_kib(pid);
                let sent = shared.sent.load(Ordering::Relaxed);
                samples
                    .lock()
                    .unwrap()
                    .push((t.elapsed().as_secs_f64(), rss, fds(pid), sent));
                // Pacing loses a little to timer granularity and stalls: steer the per
                // connection rate so the achieved total tracks the target.
                if let Some((s, at)) = last {
                    let rate = (sent - s) as f64 / at.elapsed().as_secs_f64();
                    if rate > 0.0 {
                        let mut pace = shared.pace.lock().unwrap();
                        *pace = (*pace * (target / rate).clamp(0.8, 1.25)).min(2.0 * initial);
                    }
                }
                last = Some((sent, Instant::now()));
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        })
    };
    let sent_at_start = shared.sent.load(Ordering::Relaxed);
    let soak_started = Instant::now();
    let mut n = 1u64;
    let steps: [&str; 10] = [
        "error",
        "rotate",
        "hang",
        "reload",
        "slow",
        "same_kid",
        "oversized",
        "reload",
        "notjson",
        "rotate",
    ];
    let mut i = 0usize;
    while soak_started.elapsed() < soak {
        let left = soak.saturating_sub(soak_started.elapsed()).as_secs();
        let flap = 8.min(left.max(1));
        match steps[i % steps.len()] {
            "error" => conductor.flap(Mode::Error, flap).await,
            "hang" => conductor.flap(Mode::Hang, flap).await,
            "slow" => conductor.flap(Mode::SlowBody, flap).await,
            "oversized" => conductor.flap(Mode::Oversized, flap).await,
            "notjson" => conductor.flap(Mode::NotJson, flap).await,
            "rotate" => {
                conductor.rotate_new_kid(n).await;
                n += 1;
            }
            "same_kid" => conductor.rotate_same_kid().await,
            "reload" => conductor.reload().await,
            _ => unreachable!(),
        }
        i += 1;
        // Steady traffic between events.
        tokio::time::sleep(Duration::from_secs(4).min(soak.saturating_sub(soak_started.elapsed())))
            .await;
    }
    let soak_secs = soak_started.elapsed().as_secs_f64();
    let soak_sent = shared.sent.load(Ordering::Relaxed) - sent_at_start;
    shared.stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.await;
    }
    sampler.abort();
    let (rss_end, hwm) = fixture::rss_kib(pid);
    let fds_end = fds(pid);

    // 3. Report.
    let t = shared.tally.lock().unwrap();
    let mut lat = t.latency_us.clone();
    lat.sort_unstable();
    let total: u64 = t.by_class.values().map(|v| v.0).sum();
    let wrong: u64 = t.by_class.values().map(|v| v.1).sum();
    let stats = {
        let (_, body) = http1::get_blocking(envoy_admin, "/stats").unwrap_or_default();
        body
    };
    let stat = |suffix: &str| -> u64 {
        stats
            .lines()
            .filter(|l| l.split(':').next().is_some_and(|k| k.ends_with(suffix)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let ext_error = stat("ext_authz.error");
    let ext_fail_open = stat("ext_authz.failure_mode_allowed");
    let ext_ok = stat("ext_authz.ok");
    let ext_denied = stat("ext_authz.denied");
    let authz_timeouts = stat(&format!(
        "{}.upstream_rq_timeout",
        mcp_authz::render::AUTHZ_CLUSTER
    ));
    let samples = samples.lock().unwrap().clone();
    let warm = samples
        .iter()
        .find(|s| s.0 >= 60.0)
        .or(samples.first())
        .map_or(rss_end, |s| s.1);
    let fds_start = samples.first().map_or(fds_end, |s| s.2);
    println!("## RELIABILITY: chaos soak ({:.1} min)\n", args.minutes);
    println!(
        "- {}; load average at the end {}",
        fixture::machine(),
        fixture::load_average()
    );
    println!(
        "- capacity through Envoy (closed loop, {} connections, same mix): **{capacity:.0} req/s**; soak at {:.0} % = {target:.0} req/s target, **{:.0} req/s** achieved",
        args.connections,
        args.load * 100.0,
        soak_sent as f64 / soak_secs
    );
    println!(
        "- requests: {total} (capacity phase included), transport errors {}",
        t.transport_errors
    );
    println!("- **wrong decisions: {wrong}**; HTTP 503: {}", t.status_503);
    println!(
        "- Envoy ext_authz: ok {ext_ok}, denied {ext_denied}, **error {ext_error}**, failure_mode_allowed {ext_fail_open}; mcp-authz cluster timeouts {authz_timeouts}"
    );
    println!(
        "- latency through Envoy during the soak: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat.last().copied().unwrap_or(0)
    );
    println!(
        "- mcp-authz RSS: {} after the first minute, {} at the end (peak {}); fds {fds_start} → {fds_end}",
        fixture::mib(warm),
        fixture::mib(rss_end),
        fixture::mib(hwm)
    );
    println!("\n| class | requests | wrong |\n|---|---|---|");
    for (k, (s, w)) in &t.by_class {
        println!("| {k} | {s} | {w} |");
    }
    println!("\n| t (s) | RSS | fds | requests so far |\n|---|---|---|---|");
    for (i, s) in samples.iter().enumerate() {
        if i % 3 == 0 || i + 1 == samples.len() {
            println!("| {:.0} | {} | {} | {} |", s.0, fixture::mib(s.1), s.2, s.3);
        }
    }
    println!("\nEvents:\n```");
    for l in &conductor.log {
        println!("{l}");
    }
    println!("```");
    for w in &t.wrong {
        println!("WRONG: {w}");
    }
    let rss_ok = rss_end <= warm + warm / 5 + 8 * 1024;
    let fds_ok = fds_end <= fds_start + 16;
    let pass = wrong == 0
        && t.status_503 == 0
        && ext_error == 0
        && ext_fail_open == 0
        && t.transport_errors == 0
        && rss_ok
        && fds_ok;
    println!(
        "\nverdict: {} (wrong {wrong}, 503 {}, ext_authz errors {ext_error}, transport errors {}, RSS flat {rss_ok}, fds flat {fds_ok})",
        if pass { "PASS" } else { "FAIL" },
        t.status_503,
        t.transport_errors
    );
    drop(envoy);
    drop(service);
    pass
}
