//! Test harness: signing keys generated at test time, a local identity provider on port 0 that
//! counts fetches and can misbehave on demand, the real app on port 0, and a Check client.
//! ML-DSA-65 keys sign through tests/e2e/mldsa.mjs (@noble/post-quantum), an implementation
//! independent of the aws-lc-rs verifier under test; `tests/run-all.sh` installs it (`npm ci` in
//! tests/e2e) before `cargo test`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use mcp_authz::app::{self, Running};
use mcp_authz::config::Config;
use mcp_authz::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, attribute_context,
    authorization_client::AuthorizationClient, check_response::HttpResponse,
};

pub fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub enum Signer {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec256(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    /// ML-DSA through tests/e2e/mldsa.mjs: the key pair is derived from `seed` there; `x` is
    /// its raw public key (base64url); `level` is 44, 65 or 87. `jose`: published in the JOSE
    /// draft's spelling (`kty: "AKP"`, `alg: "ML-DSA-<level>"`, `pub`) instead of Hanzo IAM's
    /// (`kty: "MLDSA"`, `alg: "MLDSA65"`, `x`; ML-DSA-65 only).
    MlDsa {
        seed: String,
        x: String,
        level: u16,
        jose: bool,
    },
}

/// Run tests/e2e/mldsa.mjs: `(x, signature)` for the ML-DSA-`level` key derived from `seed`,
/// the signature over `input` when given. Fails (never skips) when node or @noble/post-quantum
/// is missing.
pub fn mldsa_node(level: u16, seed: &str, input: Option<&[u8]>) -> (String, Option<Vec<u8>>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e");
    let mut cmd = std::process::Command::new("node");
    cmd.current_dir(dir)
        .arg("mldsa.mjs")
        .arg(format!("--level={level}"))
        .arg(seed);
    if let Some(m) = input {
        cmd.arg(std::str::from_utf8(m).expect("a JWS signing input is ASCII"));
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("node (v20) is required for the ML-DSA tests: {e}; install it, then (cd tests/e2e && npm ci)")
    });
    assert!(
        out.status.success(),
        "tests/e2e/mldsa.mjs failed (run `npm ci` in tests/e2e): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("mldsa.mjs prints JSON");
    let x = v["x"].as_str().expect("x").to_owned();
    let sig = v["sig"]
        .as_str()
        .map(|s| URL_SAFE_NO_PAD.decode(s).expect("base64url signature"));
    (x, sig)
}

pub struct TestKey {
    pub kid: String,
    pub signer: Signer,
}

impl TestKey {
    pub fn rsa(kid: &str) -> TestKey {
        TestKey {
            kid: kid.into(),
            signer: Signer::Rsa(aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap()),
        }
    }

    pub fn ec(kid: &str) -> TestKey {
        TestKey {
            kid: kid.into(),
            signer: Signer::Ec256(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            ),
        }
    }

    /// An ML-DSA-65 key from a fresh random seed, published in Hanzo IAM's spelling
    /// (`jose: false`) or the JOSE draft's.
    pub fn mldsa(kid: &str, jose: bool) -> TestKey {
        TestKey::mldsa_level(kid, 65, jose)
    }

    /// An ML-DSA-`level` key (44, 65 or 87) from a fresh random seed.
    pub fn mldsa_level(kid: &str, level: u16, jose: bool) -> TestKey {
        let mut seed = [0u8; 32];
        aws_lc_rs::rand::fill(&mut seed).unwrap();
        let seed: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        let (x, _) = mldsa_node(level, &seed, None);
        TestKey {
            kid: kid.into(),
            signer: Signer::MlDsa {
                seed,
                x,
                level,
                jose,
            },
        }
    }

    pub fn ed(kid: &str) -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        TestKey {
            kid: kid.into(),
            signer: Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()),
        }
    }

    /// The public JWK, with `kid` and `alg`.
    pub fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Rsa(k) => {
                let p = k.public_key();
                json!({"kty":"RSA","kid":self.kid,"use":"sig","alg":"RS256",
                    "n": b64(p.modulus().big_endian_without_leading_zero()),
                    "e": b64(p.exponent().big_endian_without_leading_zero())})
            }
            Signer::Ec256(k) => {
                let p = k.public_key().as_ref();
                json!({"kty":"EC","kid":self.kid,"crv":"P-256","alg":"ES256","x": b64(&p[1..33]),"y": b64(&p[33..65])})
            }
            Signer::Ed(k) => {
                json!({"kty":"OKP","kid":self.kid,"crv":"Ed25519","alg":"EdDSA","x": b64(k.public_key().as_ref())})
            }
            Signer::MlDsa { x, jose: false, .. } => {
                json!({"kty":"MLDSA","kid":self.kid,"use":"sig","alg":"MLDSA65","x": x})
            }
            Signer::MlDsa { x, jose: true, .. } => {
                json!({"kty":"AKP","kid":self.kid,"use":"sig","alg":self.default_alg(),"pub": x})
            }
        }
    }

    pub fn default_alg(&self) -> &'static str {
        match self.signer {
            Signer::Rsa(_) => "RS256",
            Signer::Ec256(_) => "ES256",
            Signer::Ed(_) => "EdDSA",
            Signer::MlDsa { jose: false, .. } => "MLDSA65",
            Signer::MlDsa { level: 44, .. } => "ML-DSA-44",
            Signer::MlDsa { level: 87, .. } => "ML-DSA-87",
            Signer::MlDsa { .. } => "ML-DSA-65",
        }
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .unwrap();
                sig
            }
            Signer::Ec256(k) => k.sign(&rng, msg).unwrap().as_ref().to_vec(),
            Signer::Ed(k) => k.sign(msg).as_ref().to_vec(),
            Signer::MlDsa { seed, level, .. } => {
                mldsa_node(*level, seed, Some(msg)).1.expect("signature")
            }
        }
    }

    /// A compact JWS with this key's kid and default alg, over `claims`.
    pub fn mint(&self, claims: &Value) -> String {
        self.mint_with_header(
            &json!({"alg": self.default_alg(), "kid": self.kid, "typ": "at+jwt"}),
            claims,
        )
    }

    pub fn mint_with_header(&self, header: &Value, claims: &Value) -> String {
        mint_raw(&header.to_string(), &claims.to_string(), |m| self.sign(m))
    }
}

/// Sign arbitrary header/payload text (for duplicate-key and malformed cases).
pub fn mint_raw(header: &str, claims: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

/// Keys shared by a test binary (RSA generation is slow).
pub static RSA: LazyLock<TestKey> = LazyLock::new(|| TestKey::rsa("rsa-1"));
pub static RSA2: LazyLock<TestKey> = LazyLock::new(|| TestKey::rsa("rsa-2"));
pub static EC: LazyLock<TestKey> = LazyLock::new(|| TestKey::ec("ec-1"));
pub static ED: LazyLock<TestKey> = LazyLock::new(|| TestKey::ed("ed-1"));
/// ML-DSA-65 keys as Hanzo IAM publishes them (kid = a certificate name) and as the JOSE draft does.
pub static PQ: LazyLock<TestKey> = LazyLock::new(|| TestKey::mldsa("cert-pq", false));
pub static PQ2: LazyLock<TestKey> = LazyLock::new(|| TestKey::mldsa("cert-pq-2", false));
pub static AKP: LazyLock<TestKey> = LazyLock::new(|| TestKey::mldsa("akp-1", true));

/// How the identity provider answers JWKS requests.
#[derive(Clone, Debug)]
pub enum Mode {
    Ok,
    /// The valid JWKS, but with this status: only a 200 may be used.
    Status(u16),
    Html,
    /// The valid JWKS padded with JSON whitespace to this many bytes (`Content-Length` set).
    Padded(usize),
    /// The same, streamed in chunks without `Content-Length`: the cap must hold while reading.
    PaddedChunked(usize),
    Truncated,
    Slow(Duration),
    RedirectOtherHost,
}

/// Which discovery documents the identity provider serves.
#[derive(Clone, Debug, PartialEq)]
pub enum Discovery {
    /// RFC 8414 `/.well-known/oauth-authorization-server` only.
    OAuth,
    /// OpenID Connect `/.well-known/openid-configuration` only (RFC 8414 path answers 404).
    OidcOnly,
}

pub struct IdpState {
    pub issuer: Mutex<String>,
    pub jwks: Mutex<Value>,
    pub mode: Mutex<Mode>,
    pub cache_control: Mutex<Option<String>>,
    pub discovery: Mutex<Discovery>,
    /// When set, the discovery documents name this issuer instead of the real one.
    pub metadata_issuer: Mutex<Option<String>>,
    pub jwks_fetches: AtomicUsize,
    pub metadata_fetches: AtomicUsize,
    /// RFC 8707 support at /token: `aud` = the requested resource, else the client id.
    pub resource_indicators: std::sync::atomic::AtomicBool,
}

/// A local OAuth authorization server stand-in: RFC 8414 metadata and a JWKS, on 127.0.0.1:0.
pub struct Idp {
    pub addr: SocketAddr,
    pub issuer: String,
    pub state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

impl Idp {
    pub async fn start(keys: &[&TestKey]) -> Idp {
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
        Self::start_with(jwks).await
    }

    pub async fn start_with(jwks: Value) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://127.0.0.1:{}", addr.port());
        let state = Arc::new(IdpState {
            issuer: Mutex::new(issuer.clone()),
            jwks: Mutex::new(jwks),
            mode: Mutex::new(Mode::Ok),
            cache_control: Mutex::new(None),
            discovery: Mutex::new(Discovery::OAuth),
            metadata_issuer: Mutex::new(None),
            jwks_fetches: AtomicUsize::new(0),
            metadata_fetches: AtomicUsize::new(0),
            resource_indicators: std::sync::atomic::AtomicBool::new(true),
        });
        let app = Router::new()
            .route(
                "/.well-known/oauth-authorization-server",
                get(oauth_metadata),
            )
            .route("/.well-known/openid-configuration", get(oidc_metadata))
            .route("/jwks", get(jwks_handler))
            .route("/token", axum::routing::post(token_handler))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Idp {
            addr,
            issuer,
            state,
            task,
        }
    }

    pub fn set_keys(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().unwrap() =
            json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    }

    pub fn set_jwks(&self, v: Value) {
        *self.state.jwks.lock().unwrap() = v;
    }

    pub fn set_mode(&self, m: Mode) {
        *self.state.mode.lock().unwrap() = m;
    }

    pub fn fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Stop answering at all (connection refused).
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn oauth_metadata(State(s): State<Arc<IdpState>>) -> Response {
    if *s.discovery.lock().unwrap() != Discovery::OAuth {
        return StatusCode::NOT_FOUND.into_response();
    }
    metadata(&s)
}

async fn oidc_metadata(State(s): State<Arc<IdpState>>) -> Response {
    if *s.discovery.lock().unwrap() != Discovery::OidcOnly {
        return StatusCode::NOT_FOUND.into_response();
    }
    metadata(&s)
}

fn metadata(s: &IdpState) -> Response {
    s.metadata_fetches.fetch_add(1, Ordering::SeqCst);
    let issuer = s.issuer.lock().unwrap().clone();
    let named = s.metadata_issuer.lock().unwrap().clone();
    let doc = json!({"issuer": named.unwrap_or_else(|| issuer.clone()), "jwks_uri": format!("{issuer}/jwks"),
        "token_endpoint": format!("{issuer}/token"), "registration_endpoint": format!("{issuer}/reg"),
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["files:read","files:write","files:list"]});
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

/// Client credentials with any Basic credentials; the token is signed with `RSA`.
async fn token_handler(State(s): State<Arc<IdpState>>, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let issuer = s.issuer.lock().unwrap().clone();
    let aud = match form.get("resource") {
        Some(r) if s.resource_indicators.load(Ordering::SeqCst) => r.clone(),
        _ => "client-1".to_owned(),
    };
    let claims = json!({"iss": issuer, "sub": "client-1", "client_id": "client-1", "aud": aud,
        "exp": now() + 300, "iat": now(), "scope": form.get("scope").cloned().unwrap_or_default()});
    let doc = json!({"access_token": RSA.mint(&claims), "token_type": "Bearer", "expires_in": 300});
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

async fn jwks_handler(State(s): State<Arc<IdpState>>) -> Response {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let mode = s.mode.lock().unwrap().clone();
    let body = s.jwks.lock().unwrap().to_string();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    if let Some(cc) = s.cache_control.lock().unwrap().clone() {
        headers.insert(header::CACHE_CONTROL, cc.parse().unwrap());
    }
    match mode {
        Mode::Ok => (headers, body).into_response(),
        Mode::Status(code) => (StatusCode::from_u16(code).unwrap(), headers, body).into_response(),
        Mode::Html => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html>maintenance</html>",
        )
            .into_response(),
        Mode::Padded(n) => (headers, pad(body, n)).into_response(),
        Mode::PaddedChunked(n) => {
            let padded = pad(body, n).into_bytes();
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                padded.chunks(8192).map(|c| Ok(c.to_vec())).collect();
            let stream = futures_util::stream::iter(chunks);
            (headers, axum::body::Body::from_stream(stream)).into_response()
        }
        Mode::Truncated => (headers, body[..body.len() / 2].to_owned()).into_response(),
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            (headers, body).into_response()
        }
        Mode::RedirectOtherHost => {
            // 127.0.0.2 is loopback too, so only the same-host rule can refuse it.
            let port = s
                .issuer
                .lock()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .to_owned();
            (
                StatusCode::FOUND,
                [(header::LOCATION, format!("http://localhost:{port}/jwks"))],
            )
                .into_response()
        }
    }
}

/// `json` followed by JSON whitespace up to `n` bytes: still the same, valid document.
fn pad(json: String, n: usize) -> String {
    let fill = n.saturating_sub(json.len());
    json + &" ".repeat(fill)
}

/// Poll `cond` every 50 ms until it holds; fail naming `what` after `deadline`. For waiting on
/// state or metrics on a shared machine: generous deadlines, no fixed sleeps.
pub async fn eventually(what: &str, deadline: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: not reached within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gauge's value (summed over its series) from a Prometheus text exposition.
pub fn gauge(exposition: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + v);
    }
    found
}

/// JWKS fetches that failed, over every issuer.
pub fn fetch_errors(app: &Running) -> u64 {
    app.metrics
        .counter("mcp_authz_jwks_fetches_total", &[("result", "error")])
}

/// Config for one resource `https://mcp.example.com/mcp` trusting `issuer`, with test-friendly
/// timings. `extra` is appended inside the resource (routes, implications, ...).
pub fn config_yaml(issuer: &str, jwks_extra: &str, resource_extra: &str) -> String {
    format!(
        r#"
listen: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
jwks:
  min_refresh_seconds: 1
  retry_seconds: 1
  fetch_timeout_seconds: 2
  unknown_kid_cooldown_seconds: 30
{jwks_extra}
resources:
  - id: files
    uri: https://mcp.example.com/mcp
    realm: MCP Server
    issuers:
      - issuer: {issuer}
        algorithms: [RS256, ES256, EdDSA]
{resource_extra}
"#
    )
}

pub const ROUTES: &str = r#"
    scope_implications:
      files:admin: [files:read, files:write, files:list]
    routes:
      - {name: health, path: /mcp/health, public: true}
      - {name: read, path_prefix: /mcp/files, methods: [GET], scopes: [files:read]}
      - {name: mcp, path_prefix: /mcp, scopes: [files:list]}
"#;

pub struct Harness {
    pub app: Running,
    pub idp: Idp,
    pub client: AuthorizationClient<tonic::transport::Channel>,
}

impl Harness {
    pub async fn start(idp: Idp, yaml: &str, wait_ready: bool) -> Harness {
        let config = Config::from_yaml(yaml).expect("test config");
        let app = app::start(config).await.expect("app starts");
        let client = AuthorizationClient::connect(format!("http://{}", app.grpc_addr))
            .await
            .unwrap();
        if wait_ready {
            // 30 s: a wide margin on a shared 2-core machine; a healthy start takes milliseconds.
            eventually(
                "the app becomes ready",
                Duration::from_secs(30),
                async || app.ready.get(),
            )
            .await;
        }
        Harness { app, idp, client }
    }

    /// Standard harness: RSA, EC and Ed keys, the ROUTES policy.
    pub async fn standard() -> Harness {
        let idp = Idp::start(&[&RSA, &EC, &ED]).await;
        let yaml = config_yaml(&idp.issuer, "", ROUTES);
        Harness::start(idp, &yaml, true).await
    }

    pub fn claims(&self, scope: &str) -> Value {
        json!({"iss": self.idp.issuer, "sub": "user-1", "aud": "https://mcp.example.com/mcp",
            "exp": now() + 300, "iat": now(), "scope": scope, "client_id": "client-1"})
    }

    pub async fn check(&mut self, req: Req) -> Answer {
        let resp = self
            .client
            .check(req.into_proto())
            .await
            .expect("Check answers")
            .into_inner();
        Answer::from(resp)
    }

    pub async fn bearer(&mut self, method: &str, path: &str, token: &str) -> Answer {
        self.check(Req::new(method, path).header("authorization", &format!("Bearer {token}")))
            .await
    }
}

#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
    pub context: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body in `raw_body` (Envoy's `pack_as_bytes`) rather than `body`.
    pub raw: bool,
}

impl Req {
    pub fn body(mut self, b: &str) -> Req {
        self.body = b.as_bytes().to_vec();
        self.raw = true;
        self
    }

    pub fn body_as_string(mut self, b: &str) -> Req {
        self.body = b.as_bytes().to_vec();
        self.raw = false;
        self
    }

    pub fn new(method: &str, path: &str) -> Req {
        Req {
            method: method.into(),
            path: path.into(),
            host: "mcp.example.com".into(),
            headers: vec![],
            context: vec![],
            body: vec![],
            raw: true,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn context(mut self, k: &str, v: &str) -> Req {
        self.context.push((k.into(), v.into()));
        self
    }

    pub fn host(mut self, h: &str) -> Req {
        self.host = h.into();
        self
    }

    pub fn into_proto(self) -> CheckRequest {
        let mut headers: HashMap<String, String> = self.headers.into_iter().collect();
        headers.insert(":path".into(), self.path.clone());
        headers.insert(":method".into(), self.method.clone());
        headers.insert(":authority".into(), self.host.clone());
        let (body, raw_body) = if self.raw {
            (String::new(), self.body)
        } else {
            (String::from_utf8(self.body).unwrap(), vec![])
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    time: None,
                    http: Some(attribute_context::HttpRequest {
                        method: self.method,
                        path: self.path,
                        host: self.host,
                        headers,
                        body,
                        raw_body,
                        ..Default::default()
                    }),
                }),
                context_extensions: self.context.into_iter().collect(),
                ..Default::default()
            }),
        }
    }
}

/// The parts of a CheckResponse tests assert on.
#[derive(Debug)]
pub struct Answer {
    /// 200 for an allow, else the denial's HTTP status.
    pub status: u16,
    pub grpc_code: i32,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub removed: Vec<String>,
    pub metadata: HashMap<String, String>,
}

impl Answer {
    pub fn www(&self) -> Option<&str> {
        self.headers.get("www-authenticate").map(String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn reason(&self) -> &str {
        self.metadata
            .get("reason")
            .map(String::as_str)
            .unwrap_or("")
    }
}

impl From<CheckResponse> for Answer {
    fn from(r: CheckResponse) -> Answer {
        let grpc_code = r.status.map(|s| s.code).unwrap_or(-1);
        let metadata = r
            .dynamic_metadata
            .map(|s| {
                s.fields
                    .into_iter()
                    .filter_map(|(k, v)| match v.kind {
                        Some(prost_types::value::Kind::StringValue(s)) => Some((k, s)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let hv = |h: Vec<mcp_authz::pb::envoy::config::core::v3::HeaderValueOption>| {
            h.into_iter()
                .filter_map(|o| o.header)
                .map(|h| (h.key, h.value))
                .collect::<HashMap<_, _>>()
        };
        match r.http_response {
            Some(HttpResponse::OkResponse(ok)) => Answer {
                status: 200,
                grpc_code,
                headers: hv(ok.headers),
                body: String::new(),
                removed: ok.headers_to_remove,
                metadata,
            },
            Some(HttpResponse::DeniedResponse(d)) => Answer {
                status: d.status.map(|s| s.code as u16).unwrap_or(0),
                grpc_code,
                headers: hv(d.headers),
                body: d.body,
                removed: vec![],
                metadata,
            },
            None => panic!("CheckResponse without http_response"),
        }
    }
}

pub const PRM_URL: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

/// A port free right now on 127.0.0.1 (bound, then released for a child process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the system temp dir, unique to this process and call.
pub fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "mcp-authz-test-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
