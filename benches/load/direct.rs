//! Direct gRPC `Check` load against the release mcp-authz: N concurrent streams over a few
//! HTTP/2 connections (as Envoy multiplexes its Checks), for a fixed time or until a pool of
//! one-use tokens runs out; pre-encoded requests so the client spends as little as possible.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prost::Message;
use prost::bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use mcp_authz::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, attribute_context,
};

use crate::fixture::{self, Service};

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Sends pre-encoded `CheckRequest` bytes; returns the response bytes undecoded.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Which headers a request carries, as Envoy would send them to ext_authz.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Headers {
    /// What the rendered config's `allowed_headers` lets through.
    Lean,
    /// Everything an MCP client and Envoy put on the request (Envoy's default).
    All,
}

/// One `CheckRequest` for `POST /mcp` on `resource`, as Envoy builds it.
pub fn check_request(
    resource: &str,
    host: &str,
    token: Option<&str>,
    headers: Headers,
    body: Option<(&str, &str, &[u8])>,
) -> Bytes {
    let mut h: HashMap<String, String> = HashMap::new();
    let mut put = |k: &str, v: &str| {
        h.insert(k.to_owned(), v.to_owned());
    };
    if let Some(t) = token {
        put("authorization", &format!("Bearer {t}"));
    }
    put("x-request-id", "6a1f0d3c-3b2e-4f7a-9d8c-1e2f3a4b5c6d");
    if let Some((method, name, _)) = body {
        put("mcp-method", method);
        put("mcp-name", name);
    }
    if headers == Headers::All {
        put(":authority", host);
        put(":method", "POST");
        put(":path", "/mcp");
        put(":scheme", "http");
        put("accept", "application/json, text/event-stream");
        put("content-type", "application/json");
        put("content-length", "58");
        put("user-agent", "mcp-authz-bench/1 (python-httpx/0.28)");
        put("mcp-protocol-version", "2025-11-25");
        put("mcp-session-id", "3f1c9e0a6b7d4e2f8a9b0c1d2e3f4a5b");
        put("x-forwarded-proto", "http");
        put("x-envoy-expected-rq-timeout-ms", "1000");
    }
    let raw_body = body.map(|(_, _, b)| b.to_vec()).unwrap_or_default();
    if body.is_some() {
        put("x-envoy-auth-partial-body", "false");
    }
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                time: None,
                http: Some(attribute_context::HttpRequest {
                    id: "1234567890".into(),
                    method: "POST".into(),
                    path: "/mcp".into(),
                    host: host.into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: h,
                    raw_body,
                    ..Default::default()
                }),
            }),
            context_extensions: [("mcp_authz_resource".to_owned(), resource.to_owned())]
                .into_iter()
                .collect(),
            ..Default::default()
        }),
    };
    Bytes::from(req.encode_to_vec())
}

/// `request` (from `check_request`) with `headers` added, e.g. a `DPoP` authorization and proof.
pub fn with_headers(request: &Bytes, headers: &[(&str, &str)]) -> Bytes {
    let mut req = CheckRequest::decode(request.clone()).expect("a CheckRequest");
    let http = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .expect("an HTTP request");
    for (k, v) in headers {
        http.headers.insert((*k).to_owned(), (*v).to_owned());
    }
    Bytes::from(req.encode_to_vec())
}

/// How requests are taken from the list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Round-robin forever (one token, or a fixed mix).
    Cycle,
    /// Each once; the run ends when they are used up.
    Once,
}

#[derive(Clone, Copy)]
pub struct Load {
    pub connections: usize,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Open-loop rate in checks per second (all streams together); `None` is closed-loop.
    pub rate: Option<f64>,
}

pub struct Outcome {
    pub checks: u64,
    pub allowed: u64,
    pub denied: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Nanoseconds.
    pub latency: Histogram<u64>,
    /// mcp-authz CPU during the measured window, µs.
    pub service_cpu_us: u64,
    /// Load generator CPU (this process), µs.
    pub client_cpu_us: u64,
    pub peak_rss_kib: u64,
}

impl Outcome {
    pub fn throughput(&self) -> f64 {
        self.checks as f64 / self.elapsed.as_secs_f64()
    }
    pub fn cpu_per_check(&self) -> f64 {
        self.service_cpu_us as f64 / self.checks.max(1) as f64
    }
    pub fn client_cpu_per_check(&self) -> f64 {
        self.client_cpu_us as f64 / self.checks.max(1) as f64
    }
}

pub async fn connect(service: &Service, connections: usize) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..connections {
        let ch = Endpoint::from_shared(format!("http://{}", service.grpc))
            .expect("endpoint")
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect to mcp-authz");
        out.push(ch);
    }
    out
}

struct Worker {
    checks: u64,
    allowed: u64,
    denied: u64,
    errors: u64,
    latency: Histogram<u64>,
    last: Option<Instant>,
}

impl Worker {
    fn new() -> Worker {
        Worker {
            checks: 0,
            allowed: 0,
            denied: 0,
            errors: 0,
            latency: Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram"),
            last: None,
        }
    }
}

/// Run `requests` against `service`.
pub async fn run(service: &Service, requests: Arc<Vec<Bytes>>, pick: Pick, load: Load) -> Outcome {
    let channels = connect(service, load.connections).await;
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let pid = service.pid();
    let cpu_at = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        (fixture::cpu_us(pid), fixture::cpu_us(std::process::id()))
    });
    let interval = load
        .rate
        .map(|r| Duration::from_secs_f64(load.concurrency as f64 / r));
    let mut tasks = Vec::new();
    for i in 0..load.concurrency {
        let mut grpc = tonic::client::Grpc::new(channels[i % channels.len()].clone());
        let requests = requests.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = Worker::new();
            let mut ticker = interval.map(|d| {
                // Spread the streams' ticks over one interval.
                let offset = d.mul_f64(i as f64 / load.concurrency as f64);
                let mut t = tokio::time::interval_at((start + offset).into(), d);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            loop {
                if let Some(t) = ticker.as_mut() {
                    t.tick().await;
                }
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = match pick {
                    Pick::Cycle => requests[n % requests.len()].clone(),
                    Pick::Once => match requests.get(n) {
                        Some(b) => b.clone(),
                        None => break,
                    },
                };
                if grpc.ready().await.is_err() {
                    w.errors += 1;
                    continue;
                }
                let result = grpc
                    .unary::<Bytes, Bytes, _>(
                        Request::new(body),
                        PathAndQuery::from_static(CHECK),
                        RawCodec,
                    )
                    .await;
                let done = Instant::now();
                if sent < measure_from {
                    continue;
                }
                w.checks += 1;
                w.last = Some(done);
                let _ = w.latency.record((done - sent).as_nanos() as u64);
                match result.map(|r| CheckResponse::decode(r.into_inner())) {
                    Ok(Ok(resp)) if resp.status.as_ref().is_some_and(|s| s.code == 0) => {
                        w.allowed += 1
                    }
                    Ok(Ok(_)) => w.denied += 1,
                    _ => w.errors += 1,
                }
            }
            w
        }));
    }
    let mut total = Worker::new();
    for t in tasks {
        let w = t.await.expect("load task");
        total.checks += w.checks;
        total.allowed += w.allowed;
        total.denied += w.denied;
        total.errors += w.errors;
        total.latency.add(&w.latency).expect("same bounds");
        total.last = total.last.max(w.last);
    }
    let (service_cpu0, client_cpu0) = cpu_at.await.expect("cpu reader");
    let service_cpu_us = fixture::cpu_us(pid).saturating_sub(service_cpu0);
    let client_cpu_us = fixture::cpu_us(std::process::id()).saturating_sub(client_cpu0);
    let (_, peak) = fixture::rss_kib(pid);
    Outcome {
        checks: total.checks,
        allowed: total.allowed,
        denied: total.denied,
        errors: total.errors,
        elapsed: total
            .last
            .map_or(load.duration, |l| l.saturating_duration_since(measure_from)),
        latency: total.latency,
        service_cpu_us,
        client_cpu_us,
        peak_rss_kib: peak,
    }
}
