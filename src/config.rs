//! Configuration: the YAML schema (serde, unknown fields rejected) and the validated
//! runtime form every other module reads. Errors name the YAML path and the bad value.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::scope::{ScopeSet, Scopes};

/// Context-extension key Envoy sets on a route to name the resource it protects.
pub const RESOURCE_CONTEXT_KEY: &str = "mcp_authz_resource";
/// Context-extension key the Envoy render sets (to [`PREFLIGHTS_BY_PROXY`]) on routes whose
/// CORS filter answers every CORS preflight before ext_authz runs.
pub const PREFLIGHT_CONTEXT_KEY: &str = "mcp_authz_preflight";
/// [`PREFLIGHT_CONTEXT_KEY`]'s value: no request mcp-authz sees is a preflight to let through.
pub const PREFLIGHTS_BY_PROXY: &str = "answered_by_proxy";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config is not valid YAML for mcp-authz: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------
// Phase 1: the YAML schema.
// ---------------------------------------------------------------------------

/// Top level of the YAML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the service listens.
    #[serde(default)]
    pub listen: RawListen,
    /// JWKS fetching and caching, for every issuer unless the issuer overrides it.
    #[serde(default)]
    pub jwks: RawJwks,
    /// Headers sent upstream on allow.
    #[serde(default)]
    pub identity: RawIdentity,
    /// Request limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Bind MCP sessions to the principal that opened them (absent: not bound by mcp-authz).
    #[serde(default)]
    pub sessions: Option<RawSessions>,
    /// How `mcp-authz render envoy` builds the Envoy bootstrap.
    #[serde(default)]
    pub envoy: RawEnvoy,
    /// How `mcp-authz render istio` builds the Istio mesh configuration.
    #[serde(default)]
    pub istio: RawIstio,
    /// One entry per protected MCP server.
    pub resources: Vec<RawResource>,
}

/// Settings for the rendered Envoy configuration (not used by `serve`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvoy {
    /// Envoy's public listener (default `0.0.0.0:10000`).
    #[serde(default = "default_envoy_listen")]
    pub listen: String,
    /// Envoy's admin interface, always loopback (default `127.0.0.1:9901`).
    #[serde(default = "default_envoy_admin")]
    pub admin: String,
    /// Where Envoy reaches mcp-authz, `host:port` (default: `listen.grpc`).
    #[serde(default)]
    pub authz_address: Option<String>,
    /// ext_authz call timeout in milliseconds (default 500).
    #[serde(default = "d500")]
    pub check_timeout_ms: u64,
    /// Largest request body Envoy buffers for ext_authz; at least `limits.max_body_bytes`
    /// (default: `limits.max_body_bytes`). The render asks Envoy for one byte more, so a body
    /// cut exactly at the limit is judged too large, never complete.
    #[serde(default)]
    pub max_request_bytes: Option<u32>,
    /// Longest life of one HTTP stream in seconds, SSE streams included (default 3600, at most
    /// 86400). Authorization is decided when a stream opens; capping its life at about an
    /// access token's lifetime makes a client reconnect, and so present a current token to the
    /// current policy, at least this often.
    #[serde(default = "d3600")]
    pub max_stream_seconds: u64,
    /// What Envoy does with `%2F`/`%5C` in paths: `reject` (default) or `unescape_and_redirect`.
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    /// Origins allowed by CORS on the MCP and PRM routes (default `["*"]`).
    #[serde(default = "default_origins")]
    pub cors_allow_origins: Vec<String>,
}

impl Default for RawEnvoy {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("defaults deserialize")
    }
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    #[default]
    Reject,
    UnescapeAndRedirect,
}

fn default_envoy_listen() -> String {
    "0.0.0.0:10000".into()
}
fn default_envoy_admin() -> String {
    "127.0.0.1:9901".into()
}
fn d500() -> u64 {
    500
}
fn default_origins() -> Vec<String> {
    vec!["*".into()]
}

/// Settings for the rendered Istio configuration (not used by `serve`). The ext_authz timeout,
/// the body limit and the CORS origins are the `envoy:` section's, so both proxies behave alike.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIstio {
    /// Name of the meshConfig extension provider the AuthorizationPolicies refer to
    /// (default `mcp-authz`).
    #[serde(default = "default_istio_name")]
    pub provider: String,
    /// Namespace of the mcp-authz Service (default `mcp-authz`).
    #[serde(default = "default_istio_name")]
    pub namespace: String,
    /// Name of the mcp-authz Service (default `mcp-authz`).
    #[serde(default = "default_istio_name")]
    pub service: String,
    /// The mcp-authz Service's gRPC port (default: the port of `listen.grpc`).
    #[serde(default)]
    pub port: Option<u16>,
    /// The cluster's DNS domain (default `cluster.local`).
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
    /// Istio Gateways (`namespace/name`) through which the resources' public hosts enter the
    /// mesh; the rendered VirtualServices bind to them and to `mesh` (default: `mesh` only).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Where each resource's MCP server runs, keyed by resource id.
    #[serde(default)]
    pub workloads: BTreeMap<String, RawIstioWorkload>,
}

impl Default for RawIstio {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("defaults deserialize")
    }
}

/// One MCP server in the mesh.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIstioWorkload {
    /// Namespace of the MCP server's pods; its AuthorizationPolicy is created there.
    pub namespace: String,
    /// Labels selecting the MCP server's pods (AuthorizationPolicy `selector.matchLabels`).
    pub selector: BTreeMap<String, String>,
    /// The MCP server's Kubernetes Service as `host:port`, e.g.
    /// `files-mcp.mcp.svc.cluster.local:8080` (the VirtualService route destination).
    pub destination: String,
}

fn default_istio_name() -> String {
    "mcp-authz".into()
}
fn default_cluster_domain() -> String {
    "cluster.local".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// gRPC address for `envoy.service.auth.v3.Authorization` (default `127.0.0.1:9191`).
    #[serde(default = "default_grpc")]
    pub grpc: String,
    /// Admin HTTP address for `/metrics`, `/healthz`, `/readyz` (default `127.0.0.1:9192`).
    #[serde(default = "default_admin")]
    pub admin: String,
    /// Check-serving threads (default: one per CPU available to the process).
    #[serde(default)]
    pub workers: Option<u64>,
}

impl Default for RawListen {
    fn default() -> Self {
        Self {
            grpc: default_grpc(),
            admin: default_admin(),
            workers: None,
        }
    }
}

/// Upper bound of `listen.workers`.
const MAX_WORKERS: usize = 256;
const MAX_WORKERS_U64: u64 = MAX_WORKERS as u64;

fn default_grpc() -> String {
    "127.0.0.1:9191".into()
}
fn default_admin() -> String {
    "127.0.0.1:9192".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    /// Refresh period when the JWKS response has no usable `Cache-Control: max-age` (default 300).
    #[serde(default = "d300")]
    pub refresh_seconds: u64,
    /// Lower bound applied to `Cache-Control: max-age` (default 60).
    #[serde(default = "d60")]
    pub min_refresh_seconds: u64,
    /// Upper bound applied to `Cache-Control: max-age` (default 3600).
    #[serde(default = "d3600")]
    pub max_refresh_seconds: u64,
    /// Retry period after a failed fetch (default 10).
    #[serde(default = "d10")]
    pub retry_seconds: u64,
    /// Minimum time between two refetches triggered by an unknown `kid` (default 30).
    #[serde(default = "d30")]
    pub unknown_kid_cooldown_seconds: u64,
    /// How long the last good key set is used while the issuer cannot be reached (default 86400).
    #[serde(default = "d86400")]
    pub max_stale_seconds: u64,
    /// Timeout for one metadata or JWKS fetch (default 5).
    #[serde(default = "d5")]
    pub fetch_timeout_seconds: u64,
    /// Largest accepted metadata or JWKS response (default 1 MiB).
    #[serde(default = "d1mib")]
    pub max_response_bytes: usize,
    /// Allow plain `http://` to non-loopback hosts. Development only (default false).
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl Default for RawJwks {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("defaults deserialize")
    }
}

fn d5() -> u64 {
    5
}
fn d10() -> u64 {
    10
}
fn d30() -> u64 {
    30
}
fn d60() -> u64 {
    60
}
fn d300() -> u64 {
    300
}
fn d3600() -> u64 {
    3600
}
fn d86400() -> u64 {
    86400
}
fn d1mib() -> usize {
    1 << 20
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    /// Header carrying the token's `sub` (default `x-mcp-authz-subject`; `null`: not sent).
    #[serde(default = "h_sub")]
    pub subject_header: Option<String>,
    /// Header carrying the client id from `client_id` or `azp` (default `x-mcp-authz-client-id`).
    #[serde(default = "h_client")]
    pub client_id_header: Option<String>,
    /// Header carrying the granted scopes, space-separated (default `x-mcp-authz-scopes`).
    #[serde(default = "h_scopes")]
    pub scopes_header: Option<String>,
    /// Header carrying the token's issuer (default `x-mcp-authz-issuer`).
    #[serde(default = "h_iss")]
    pub issuer_header: Option<String>,
    /// Forward the client's `Authorization` header upstream (default true).
    #[serde(default = "dtrue")]
    pub forward_authorization: bool,
    /// Attach dynamic metadata (identity, route, decision) to allow answers (default true;
    /// denials always carry it).
    #[serde(default = "dtrue")]
    pub dynamic_metadata: bool,
}

impl Default for RawIdentity {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("defaults deserialize")
    }
}

fn h_sub() -> Option<String> {
    Some("x-mcp-authz-subject".into())
}
fn h_client() -> Option<String> {
    Some("x-mcp-authz-client-id".into())
}
fn h_scopes() -> Option<String> {
    Some("x-mcp-authz-scopes".into())
}
fn h_iss() -> Option<String> {
    Some("x-mcp-authz-issuer".into())
}
fn dtrue() -> bool {
    true
}

/// `sessions:` — the HMAC key that binds `Mcp-Session-Id` to (resource, iss, sub, client).
/// Exactly one source; the key itself never appears in the configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    /// File holding the key: at least 32 bytes, surrounding whitespace ignored (e.g. a
    /// Kubernetes Secret mounted read-only). Every replica must have the same key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the key instead.
    #[serde(default)]
    pub key_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Longest accepted bearer token in bytes; longer ones are `invalid_token` (default 8192).
    #[serde(default = "d8192")]
    pub max_token_bytes: usize,
    /// Largest JSON-RPC body inspected for per-tool rules; larger ones get 413 (default 65536).
    #[serde(default = "d65536_usize")]
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted in an inspected body (default 64).
    #[serde(default = "d64")]
    pub max_json_depth: usize,
    /// Verified tokens remembered (by SHA-256) to skip signature checks; 0 disables (default 50000).
    #[serde(default = "d50000")]
    pub token_cache_entries: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("defaults deserialize")
    }
}

fn d65536_usize() -> usize {
    65536
}
fn d64() -> usize {
    64
}
fn d50000() -> usize {
    50_000
}

fn d8192() -> usize {
    8192
}

/// One protected MCP server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResource {
    /// Short identifier, also the Envoy `context_extensions` value naming this resource.
    pub id: String,
    /// Canonical resource URI (RFC 8707 / RFC 9728 `resource`), e.g. `https://mcp.example.com/mcp`.
    pub uri: String,
    /// `realm` in every challenge (default: the resource URI).
    #[serde(default)]
    pub realm: Option<String>,
    /// PRM `resource_name`.
    #[serde(default)]
    pub name: Option<String>,
    /// PRM `resource_documentation`.
    #[serde(default)]
    pub documentation: Option<String>,
    /// PRM `scopes_supported` (default: the scopes the routes require to connect).
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    /// PRM `authorization_servers` (default: every configured issuer).
    #[serde(default)]
    pub authorization_servers: Option<Vec<String>>,
    /// Trusted token issuers.
    pub issuers: Vec<RawIssuer>,
    /// The MCP server behind Envoy, `host:port` (used by `render envoy`).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Route policy; first match wins. Default: one route covering the resource path, any valid token.
    #[serde(default)]
    pub routes: Option<Vec<RawRoute>>,
    /// Scopes required when no route matches; absent means unmatched requests are denied (403).
    #[serde(default)]
    pub default_scopes: Option<Vec<String>>,
    /// Scope implications, e.g. `files:admin: [files:read, files:write]`.
    #[serde(default)]
    pub scope_implications: BTreeMap<String, Vec<String>>,
    /// `scope=` in 403 step-up challenges: `union` (granted ∪ required, default) or `required`.
    #[serde(default)]
    pub step_up: StepUpStrategy,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepUpStrategy {
    /// MCP 2025-11-25 recommendation: scopes already granted (known to this resource) plus the missing ones.
    #[default]
    Union,
    /// MCP 2026-07-28 alternative: only the scopes this request requires.
    Required,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// Exact `iss` value.
    pub issuer: String,
    /// JWKS URL. When absent (and no `jwks_file`), it is discovered from the issuer's metadata.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Local JWKS file (air-gapped deployments, tests).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Accepted signature algorithms (default RS256, ES256).
    #[serde(default = "default_algs")]
    pub algorithms: Vec<String>,
    /// Clock leeway for `exp`/`nbf`/`iat` (default 30).
    #[serde(default = "d30")]
    pub leeway_seconds: u64,
    /// Audiences accepted besides the resource URI (e.g. a Casdoor client id). Off by default.
    #[serde(default)]
    pub extra_audiences: Vec<String>,
}

fn default_algs() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Optional name shown in logs and metrics.
    #[serde(default)]
    pub name: Option<String>,
    /// Match only this host (the `:authority` without port, case-insensitive).
    #[serde(default)]
    pub host: Option<String>,
    /// Exact path match (the query string is never part of matching).
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix match, on segment boundaries (`/mcp` matches `/mcp` and `/mcp/x`, not `/mcpx`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// HTTP methods this route matches (default: all).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// No token needed.
    #[serde(default)]
    pub public: bool,
    /// Required scopes, all of them; an empty list means any valid token.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Per-method, per-tool, per-resource and per-prompt rules for JSON-RPC POST bodies.
    #[serde(default)]
    pub mcp: Option<RawMcpRules>,
}

/// MCP-aware rules; their scopes add to the route's scopes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpRules {
    /// Scopes per JSON-RPC method (`tools/list`, `tools/call`, ...), or `deny`.
    #[serde(default)]
    pub methods: BTreeMap<String, RawRule>,
    /// Methods not listed in `methods` (default: `[]`, the route's scopes suffice).
    #[serde(default)]
    pub default_method: Option<RawRule>,
    /// Scopes per tool name for `tools/call`, or `deny`.
    #[serde(default)]
    pub tools: BTreeMap<String, RawRule>,
    /// Tools not listed (default: `deny` when `tools` is set, else `[]`).
    #[serde(default)]
    pub default_tool: Option<RawRule>,
    /// Scopes per resource URI prefix for `resources/read`, `resources/subscribe`,
    /// `resources/unsubscribe` and `completion/complete` (`ref/resource`), or `deny`. Prefixes
    /// are canonicalised like request URIs (WHATWG URL) and match on segment boundaries; the
    /// longest wins.
    #[serde(default)]
    pub resources: BTreeMap<String, RawRule>,
    /// Resource URIs matching no prefix (default: `deny` when `resources` is set, else `[]`).
    #[serde(default)]
    pub default_resource: Option<RawRule>,
    /// Scopes per prompt name for `prompts/get`, or `deny`.
    #[serde(default)]
    pub prompts: BTreeMap<String, RawRule>,
    /// Prompts not listed (default: `deny` when `prompts` is set, else `[]`).
    #[serde(default)]
    pub default_prompt: Option<RawRule>,
}

/// A list of scopes, or the word `deny`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRule {
    Scopes(Vec<String>),
    Word(String),
}

// ---------------------------------------------------------------------------
// Phase 2: the validated runtime form.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    /// Check-serving threads, each a single-threaded runtime that owns the connections it is
    /// handed (`listen.workers`).
    pub workers: usize,
    pub admin_addr: SocketAddr,
    pub jwks: JwksSettings,
    pub identity: IdentityHeaders,
    pub max_token_bytes: usize,
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    pub token_cache_entries: usize,
    pub resources: Vec<Resource>,
    /// Every distinct issuer, with where its keys come from.
    pub issuers: Vec<IssuerKeysConfig>,
    pub envoy: EnvoySettings,
    pub istio: IstioSettings,
    /// The session-binding key (`sessions:`), loaded when the configuration is.
    pub sessions: Option<crate::session::SessionKey>,
}

/// Validated `istio:` section.
#[derive(Debug, Clone)]
pub struct IstioSettings {
    /// Extension provider name.
    pub provider: String,
    /// Fully qualified host name of the mcp-authz Service.
    pub service_host: String,
    pub port: u16,
    /// `namespace/name` of each Gateway, in configuration order.
    pub gateways: Vec<String>,
    /// Resource id → its MCP server in the mesh.
    pub workloads: BTreeMap<String, IstioWorkload>,
}

/// Validated `istio.workloads.<id>`.
#[derive(Debug, Clone)]
pub struct IstioWorkload {
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    /// `(host, port)` of the MCP server's Service.
    pub destination: (String, u16),
}

/// Validated `envoy:` section.
#[derive(Debug, Clone)]
pub struct EnvoySettings {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// `(host, port)` of mcp-authz as Envoy reaches it.
    pub authz_address: (String, u16),
    pub check_timeout: Duration,
    /// What Envoy is told to buffer (`with_request_body.max_request_bytes`): one byte more
    /// than `envoy.max_request_bytes` (itself at least `limits.max_body_bytes`).
    pub max_request_bytes: u32,
    /// `envoy.max_stream_seconds`.
    pub max_stream: Duration,
    pub escaped_slashes: EscapedSlashes,
    pub cors_allow_origins: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct JwksSettings {
    pub refresh: Duration,
    pub min_refresh: Duration,
    pub max_refresh: Duration,
    pub retry: Duration,
    pub unknown_kid_cooldown: Duration,
    pub max_stale: Duration,
    pub fetch_timeout: Duration,
    pub max_response_bytes: usize,
    pub allow_insecure_http: bool,
}

#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// Header names; `None`: that header is neither set nor stripped.
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Option<String>,
    pub issuer: Option<String>,
    pub forward_authorization: bool,
    /// Dynamic metadata on allow answers.
    pub dynamic_metadata: bool,
}

impl IdentityHeaders {
    /// The identity header names in use.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        [&self.subject, &self.client_id, &self.scopes, &self.issuer]
            .into_iter()
            .filter_map(|h| h.as_deref())
    }
}

/// Where an issuer's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// RFC 8414 then OpenID Connect discovery from the issuer URL.
    Discovery,
    JwksUri(Url),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct IssuerKeysConfig {
    pub issuer: String,
    pub source: KeySource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    pub fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub algorithms: Vec<Alg>,
    pub leeway: Duration,
    pub extra_audiences: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub id: String,
    /// Canonical URI exactly as configured (no trailing slash): PRM `resource` and required `aud`.
    pub uri: String,
    /// Lowercase host of `uri`.
    pub host: String,
    /// Path of `uri` (`/` when empty).
    pub path: String,
    pub realm: String,
    pub name: Option<String>,
    pub documentation: Option<String>,
    pub scopes_supported: Vec<String>,
    pub authorization_servers: Vec<String>,
    pub issuers: Vec<TrustedIssuer>,
    pub routes: Vec<Route>,
    /// `(host, port)` of the MCP server behind Envoy, when configured.
    pub upstream: Option<(String, u16)>,
    /// `None`: unmatched requests are denied by policy.
    pub default_scopes: Option<Scopes>,
    pub implications: HashMap<String, Vec<String>>,
    pub step_up: StepUpStrategy,
    /// The path-suffixed PRM URL (RFC 9728 §3.1), used in `resource_metadata`.
    pub prm_url: String,
    /// The path part of `prm_url`, and the root well-known path; both are public.
    pub prm_paths: [String; 2],
    /// Every scope this resource knows (routes, implications, scopes_supported).
    pub known_scopes: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => segment_prefix(p, path),
        }
    }
}

/// `prefix` matches `path` on segment boundaries: `/mcp` matches `/mcp` and `/mcp/x`, not `/mcpx`.
pub fn segment_prefix(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix)
            && (prefix.ends_with('/') || path.as_bytes().get(prefix.len()) == Some(&b'/')))
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub host: Option<String>,
    pub path: PathMatch,
    /// Upper-case methods; empty = any.
    pub methods: Vec<String>,
    pub access: Access,
    /// JSON-RPC rules for POST bodies, when configured.
    pub mcp: Option<McpRules>,
}

/// What an MCP rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Deny,
    Scopes(Scopes),
}

/// Validated MCP-aware rules of one route.
#[derive(Debug, Clone)]
pub struct McpRules {
    pub methods: HashMap<String, Rule>,
    pub default_method: Rule,
    pub tools: HashMap<String, Rule>,
    pub default_tool: Rule,
    /// Canonical URI prefixes (`policy::canonical_resource_uri`), longest first.
    pub resources: Vec<(String, Rule)>,
    pub default_resource: Rule,
    pub prompts: HashMap<String, Rule>,
    pub default_prompt: Rule,
}

impl McpRules {
    /// Every scope any rule names.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        let rules = self
            .methods
            .values()
            .chain(self.tools.values())
            .chain(self.prompts.values())
            .chain(self.resources.iter().map(|(_, r)| r))
            .chain([
                &self.default_method,
                &self.default_tool,
                &self.default_resource,
                &self.default_prompt,
            ]);
        rules
            .flat_map(|r| match r {
                Rule::Deny => None,
                Rule::Scopes(s) => Some(s.iter()),
            })
            .flatten()
    }
}

#[derive(Debug, Clone)]
pub enum Access {
    Public,
    Scopes(Scopes),
}

impl Config {
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(text)?;
        Config::try_from(raw)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Config::from_yaml(&text)?;
        // Relative `jwks_file` paths are relative to the config file.
        if let Some(dir) = path.parent() {
            for i in &mut cfg.issuers {
                if let KeySource::File(p) = &mut i.source
                    && p.is_relative()
                {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(cfg)
    }

    pub fn resource(&self, id: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.id == id)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let grpc_addr = parse_addr("listen.grpc", &raw.listen.grpc)?;
        let admin_addr = parse_addr("listen.admin", &raw.listen.admin)?;
        let workers = match raw.listen.workers {
            // available_parallelism honours the cgroup CPU quota (a Kubernetes CPU limit).
            None => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)),
            Some(n @ 1..=MAX_WORKERS_U64) => n as usize,
            Some(_) => {
                return Err(invalid(
                    "listen.workers",
                    format!("must be between 1 and {MAX_WORKERS}"),
                ));
            }
        };
        let jwks = validate_jwks(&raw.jwks)?;
        let identity = validate_identity(&raw.identity)?;
        if raw.limits.max_token_bytes < 64 {
            return Err(invalid("limits.max_token_bytes", "must be at least 64"));
        }
        if raw.limits.max_body_bytes < 1024 {
            return Err(invalid("limits.max_body_bytes", "must be at least 1024"));
        }
        if !(2..=512).contains(&raw.limits.max_json_depth) {
            return Err(invalid(
                "limits.max_json_depth",
                "must be between 2 and 512",
            ));
        }
        if raw.resources.is_empty() {
            return Err(invalid("resources", "at least one resource is required"));
        }
        let envoy = validate_envoy(&raw.envoy, grpc_addr, raw.limits.max_body_bytes)?;
        let mut resources = Vec::with_capacity(raw.resources.len());
        let mut issuers: Vec<IssuerKeysConfig> = Vec::new();
        for (i, r) in raw.resources.into_iter().enumerate() {
            let at = format!("resources[{i}]");
            let resource = validate_resource(&at, r, &jwks, &mut issuers)?;
            if resources.iter().any(|o: &Resource| o.id == resource.id) {
                return Err(invalid(
                    format!("{at}.id"),
                    format!("duplicate resource id {:?}", resource.id),
                ));
            }
            if resources.iter().any(|o: &Resource| o.uri == resource.uri) {
                return Err(invalid(
                    format!("{at}.uri"),
                    format!("duplicate resource uri {:?}", resource.uri),
                ));
            }
            resources.push(resource);
        }
        let istio = validate_istio(raw.istio, grpc_addr, &resources)?;
        let sessions = raw.sessions.as_ref().map(validate_sessions).transpose()?;
        Ok(Config {
            grpc_addr,
            workers,
            admin_addr,
            jwks,
            identity,
            max_token_bytes: raw.limits.max_token_bytes,
            max_body_bytes: raw.limits.max_body_bytes,
            max_json_depth: raw.limits.max_json_depth,
            token_cache_entries: raw.limits.token_cache_entries,
            resources,
            issuers,
            envoy,
            istio,
            sessions,
        })
    }
}

fn validate_sessions(s: &RawSessions) -> Result<crate::session::SessionKey, ConfigError> {
    use crate::session::SessionKey;
    match (&s.key_file, &s.key_env) {
        (Some(path), None) => {
            SessionKey::from_file(path).map_err(|e| invalid("sessions.key_file", e))
        }
        (None, Some(var)) => SessionKey::from_env(var).map_err(|e| invalid("sessions.key_env", e)),
        _ => Err(invalid(
            "sessions",
            "set exactly one of key_file and key_env",
        )),
    }
}

/// `host:port` with a non-zero port.
fn parse_host_port(at: &str, s: &str) -> Result<(String, u16), ConfigError> {
    let bad = || invalid(at, format!("{s:?} is not host:port"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(['/', ' ', '@']) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

fn validate_envoy(
    e: &RawEnvoy,
    grpc: SocketAddr,
    max_body_bytes: usize,
) -> Result<EnvoySettings, ConfigError> {
    let admin = parse_addr("envoy.admin", &e.admin)?;
    if !admin.ip().is_loopback() {
        return Err(invalid(
            "envoy.admin",
            "Envoy's admin interface must bind to loopback",
        ));
    }
    let authz_address = match &e.authz_address {
        Some(a) => parse_host_port("envoy.authz_address", a)?,
        None if grpc.ip().is_unspecified() => ("127.0.0.1".to_owned(), grpc.port()),
        None => (grpc.ip().to_string(), grpc.port()),
    };
    if e.check_timeout_ms == 0 || e.check_timeout_ms > 10_000 {
        return Err(invalid(
            "envoy.check_timeout_ms",
            "must be between 1 and 10000",
        ));
    }
    let limit = u32::try_from(max_body_bytes)
        .ok()
        .filter(|l| *l < u32::MAX)
        .ok_or_else(|| invalid("limits.max_body_bytes", "must be below 4294967295"))?;
    let buffered = e.max_request_bytes.unwrap_or(limit);
    if buffered < limit {
        return Err(invalid(
            "envoy.max_request_bytes",
            format!(
                "must be at least limits.max_body_bytes ({max_body_bytes}): Envoy would cut bodies mcp-authz accepts"
            ),
        ));
    }
    if !(1..=86_400).contains(&e.max_stream_seconds) {
        return Err(invalid(
            "envoy.max_stream_seconds",
            "must be between 1 and 86400",
        ));
    }
    // Envoy buffers one byte more than `buffered` (see below); the bound leaves ~1 MiB of the
    // 4 MiB decode limit for headers, so that byte fits.
    if buffered as usize > MAX_ENVOY_REQUEST_BYTES {
        return Err(invalid(
            "envoy.max_request_bytes",
            "must be at most 3145728 (3 MiB): the body travels inside a CheckRequest of at most 4 MiB, with headers",
        ));
    }
    if e.cors_allow_origins.is_empty() {
        return Err(invalid(
            "envoy.cors_allow_origins",
            "list at least one origin (\"*\" for any)",
        ));
    }
    Ok(EnvoySettings {
        listen: parse_addr("envoy.listen", &e.listen)?,
        admin,
        authz_address,
        check_timeout: Duration::from_millis(e.check_timeout_ms),
        // Envoy reports a body cut at exactly `max_request_bytes` as complete
        // (`x-envoy-auth-partial-body: false`) when more follows; one byte over the limit
        // mcp-authz enforces makes every cut body longer than that limit, so it is refused
        // (413) instead of judged on a complete-looking prefix.
        max_request_bytes: buffered.saturating_add(1),
        max_stream: Duration::from_secs(e.max_stream_seconds),
        escaped_slashes: e.escaped_slashes,
        cors_allow_origins: e.cors_allow_origins.clone(),
    })
}

/// Largest `envoy.max_request_bytes`: the buffered body travels inside the CheckRequest,
/// which mcp-authz decodes up to `authz::MAX_CHECK_MESSAGE_BYTES` (4 MiB); 1 MiB is left for
/// the headers (Envoy's `max_request_headers_kb` is 60 KiB by default, at most 8 MiB) and the
/// rest of the message. A larger request is denied (`undecodable_request`), never an error.
pub const MAX_ENVOY_REQUEST_BYTES: usize = crate::authz::MAX_CHECK_MESSAGE_BYTES - (1 << 20);

/// RFC 1123 label as Kubernetes names namespaces and Services: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 bytes.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes label name or value: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63.
fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn validate_istio(
    raw: RawIstio,
    grpc: SocketAddr,
    resources: &[Resource],
) -> Result<IstioSettings, ConfigError> {
    // Istio's provider name is free text, but it is also written into AuthorizationPolicies
    // and shell commands: keep it to a label-like charset. `render istio` adds `-body` for the
    // provider that sends request bodies.
    if !is_label_name(&raw.provider) || !is_label_name(&format!("{}-body", raw.provider)) {
        return Err(invalid(
            "istio.provider",
            format!(
                "{:?} must use letters, digits, '-', '_' and '.' (at most 58, so that its \
                 `-body` variant fits in 63)",
                raw.provider
            ),
        ));
    }
    for (at, v) in [
        ("istio.namespace", &raw.namespace),
        ("istio.service", &raw.service),
    ] {
        if !is_dns_label(v) {
            return Err(invalid(
                at,
                format!("{v:?} is not a Kubernetes name (lowercase letters, digits, '-')"),
            ));
        }
    }
    if !is_dns_subdomain(&raw.cluster_domain) {
        return Err(invalid(
            "istio.cluster_domain",
            format!("{:?} is not a DNS domain", raw.cluster_domain),
        ));
    }
    let port = match raw.port {
        Some(0) => return Err(invalid("istio.port", "must not be 0")),
        Some(p) => p,
        None => grpc.port(),
    };
    let mut gateways = Vec::new();
    for (i, g) in raw.gateways.iter().enumerate() {
        let ok = match g.split_once('/') {
            Some((ns, name)) => is_dns_label(ns) && is_dns_subdomain(name),
            None => false,
        };
        if !ok {
            return Err(invalid(
                format!("istio.gateways[{i}]"),
                format!(
                    "{g:?} is not namespace/name of a Gateway (`mesh` is always added; do not list it)"
                ),
            ));
        }
        if gateways.contains(g) {
            return Err(invalid(
                format!("istio.gateways[{i}]"),
                format!("{g:?} is listed twice"),
            ));
        }
        gateways.push(g.clone());
    }
    let mut workloads = BTreeMap::new();
    for (id, w) in raw.workloads {
        let at = format!("istio.workloads.{id}");
        if !resources.iter().any(|r| r.id == id) {
            return Err(invalid(&at, format!("no resource has the id {id:?}")));
        }
        if !is_dns_label(&w.namespace) {
            return Err(invalid(
                format!("{at}.namespace"),
                format!("{:?} is not a Kubernetes namespace name", w.namespace),
            ));
        }
        if w.selector.is_empty() {
            // An empty selector would put ext_authz in front of every pod of the namespace.
            return Err(invalid(
                format!("{at}.selector"),
                "name at least one label of the MCP server's pods",
            ));
        }
        for (k, v) in &w.selector {
            let (prefix, name) = match k.rsplit_once('/') {
                Some((p, n)) => (Some(p), n),
                None => (None, k.as_str()),
            };
            if !is_label_name(name) || prefix.is_some_and(|p| !is_dns_subdomain(p)) {
                return Err(invalid(
                    format!("{at}.selector"),
                    format!("{k:?} is not a Kubernetes label key"),
                ));
            }
            if !v.is_empty() && !is_label_name(v) {
                return Err(invalid(
                    format!("{at}.selector.{k}"),
                    format!("{v:?} is not a Kubernetes label value"),
                ));
            }
        }
        let destination = parse_host_port(&format!("{at}.destination"), &w.destination)?;
        if destination.0.parse::<std::net::IpAddr>().is_ok() || !is_dns_subdomain(&destination.0) {
            return Err(invalid(
                format!("{at}.destination"),
                format!(
                    "{:?} must name a Service, e.g. files-mcp.mcp.svc.cluster.local:8080",
                    w.destination
                ),
            ));
        }
        workloads.insert(
            id,
            IstioWorkload {
                namespace: w.namespace,
                selector: w.selector,
                destination,
            },
        );
    }
    Ok(IstioSettings {
        provider: raw.provider,
        service_host: format!(
            "{}.{}.svc.{}",
            raw.service, raw.namespace, raw.cluster_domain
        ),
        port,
        gateways,
        workloads,
    })
}

fn parse_addr(at: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(at, format!("{s:?} is not an IP:port socket address")))
}

fn validate_jwks(j: &RawJwks) -> Result<JwksSettings, ConfigError> {
    let nonzero = |name: &str, v: u64| {
        if v == 0 {
            Err(invalid(format!("jwks.{name}"), "must be greater than 0"))
        } else {
            Ok(Duration::from_secs(v))
        }
    };
    let s = JwksSettings {
        refresh: nonzero("refresh_seconds", j.refresh_seconds)?,
        min_refresh: nonzero("min_refresh_seconds", j.min_refresh_seconds)?,
        max_refresh: nonzero("max_refresh_seconds", j.max_refresh_seconds)?,
        retry: nonzero("retry_seconds", j.retry_seconds)?,
        unknown_kid_cooldown: Duration::from_secs(j.unknown_kid_cooldown_seconds),
        max_stale: nonzero("max_stale_seconds", j.max_stale_seconds)?,
        fetch_timeout: nonzero("fetch_timeout_seconds", j.fetch_timeout_seconds)?,
        max_response_bytes: j.max_response_bytes,
        allow_insecure_http: j.allow_insecure_http,
    };
    if s.min_refresh > s.max_refresh {
        return Err(invalid(
            "jwks.min_refresh_seconds",
            "must not exceed jwks.max_refresh_seconds",
        ));
    }
    if s.max_response_bytes < 1024 {
        return Err(invalid("jwks.max_response_bytes", "must be at least 1024"));
    }
    Ok(s)
}

fn validate_header_name(at: &str, name: &str) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b));
    if !ok {
        return Err(invalid(at, format!("{name:?} is not a valid header name")));
    }
    let lower = name.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "authorization" | "host" | "content-length" | "content-type" | "cookie" | "x-request-id"
    ) {
        return Err(invalid(
            at,
            format!("{name:?} cannot be an identity header"),
        ));
    }
    Ok(lower)
}

fn validate_identity(i: &RawIdentity) -> Result<IdentityHeaders, ConfigError> {
    let name = |at: &str, v: &Option<String>| {
        v.as_deref()
            .map(|n| validate_header_name(at, n))
            .transpose()
    };
    let h = IdentityHeaders {
        subject: name("identity.subject_header", &i.subject_header)?,
        client_id: name("identity.client_id_header", &i.client_id_header)?,
        scopes: name("identity.scopes_header", &i.scopes_header)?,
        issuer: name("identity.issuer_header", &i.issuer_header)?,
        forward_authorization: i.forward_authorization,
        dynamic_metadata: i.dynamic_metadata,
    };
    let distinct: BTreeSet<&str> = h.names().collect();
    if distinct.len() != h.names().count() {
        return Err(invalid(
            "identity",
            "identity header names must be distinct",
        ));
    }
    Ok(h)
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Fetch targets must be https, except loopback or an explicit development switch.
pub fn check_fetch_url(url: &Url, allow_insecure_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(url) || allow_insecure_http => Ok(()),
        "http" => Err("plain http is refused for non-loopback hosts (set jwks.allow_insecure_http for development)".into()),
        other => Err(format!("scheme {other:?} is not supported")),
    }
}

fn validate_scope_token(at: &str, s: &str) -> Result<(), ConfigError> {
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            at,
            format!("{s:?} is not a valid OAuth scope token"),
        ))
    }
}

fn validate_scopes(at: &str, list: &[String]) -> Result<Scopes, ConfigError> {
    for (i, s) in list.iter().enumerate() {
        validate_scope_token(&format!("{at}[{i}]"), s)?;
    }
    Ok(Scopes::new(list.iter().cloned()))
}

fn validate_path(at: &str, p: &str) -> Result<String, ConfigError> {
    if !p.starts_with('/') {
        return Err(invalid(at, format!("{p:?} must start with '/'")));
    }
    if crate::policy::normalize_path(p).as_deref() != Ok(p) {
        return Err(invalid(
            at,
            format!(
                "{p:?} is not a normalized path (no '//', '.', '..', '%', '?', '#', ';' or '\\')"
            ),
        ));
    }
    Ok(p.to_owned())
}

fn validate_resource(
    at: &str,
    r: RawResource,
    jwks: &JwksSettings,
    all_issuers: &mut Vec<IssuerKeysConfig>,
) -> Result<Resource, ConfigError> {
    if r.id.is_empty()
        || !r
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(invalid(
            format!("{at}.id"),
            format!(
                "{:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                r.id
            ),
        ));
    }
    let uri = Url::parse(&r.uri).map_err(|e| {
        invalid(
            format!("{at}.uri"),
            format!("{:?} is not a URL: {e}", r.uri),
        )
    })?;
    if !matches!(uri.scheme(), "https" | "http") {
        return Err(invalid(
            format!("{at}.uri"),
            "scheme must be https (or http for local development)",
        ));
    }
    // RFC 8707 §2 / RFC 9728 §1.2: absolute URI, no fragment; MCP: canonical, no trailing slash.
    if uri.fragment().is_some() || uri.query().is_some() {
        return Err(invalid(
            format!("{at}.uri"),
            "must not have a query or fragment",
        ));
    }
    let host = uri
        .host_str()
        .ok_or_else(|| invalid(format!("{at}.uri"), "must have a host"))?
        .to_ascii_lowercase();
    if r.uri.ends_with('/') {
        return Err(invalid(
            format!("{at}.uri"),
            format!(
                "{:?} must not end with '/' (the canonical resource URI has no trailing slash)",
                r.uri
            ),
        ));
    }
    let path = if uri.path().is_empty() {
        "/".to_owned()
    } else {
        uri.path().to_owned()
    };
    validate_path(&format!("{at}.uri"), &path)?;
    // RFC 9728 §3.1: insert the well-known segment between host and path.
    let origin = uri.origin().ascii_serialization();
    let suffix = if path == "/" { "" } else { path.as_str() };
    let prm_path = format!("/.well-known/oauth-protected-resource{suffix}");
    let prm_url = format!("{origin}{prm_path}");
    let prm_paths = [prm_path, "/.well-known/oauth-protected-resource".to_owned()];

    if r.issuers.is_empty() {
        return Err(invalid(
            format!("{at}.issuers"),
            "at least one issuer is required",
        ));
    }
    let mut issuers = Vec::new();
    for (i, ri) in r.issuers.into_iter().enumerate() {
        let iat = format!("{at}.issuers[{i}]");
        issuers.push(validate_issuer(&iat, ri, jwks, all_issuers)?);
    }
    let mut seen = BTreeSet::new();
    for (i, iss) in issuers.iter().enumerate() {
        if !seen.insert(iss.issuer.as_str()) {
            return Err(invalid(
                format!("{at}.issuers[{i}].issuer"),
                format!("issuer {:?} is listed twice", iss.issuer),
            ));
        }
    }

    let mut known_scopes = BTreeSet::new();
    let mut implications = HashMap::new();
    for (k, v) in &r.scope_implications {
        let iat = format!("{at}.scope_implications.{k}");
        validate_scope_token(&iat, k)?;
        let implied = validate_scopes(&iat, v)?;
        known_scopes.insert(k.clone());
        known_scopes.extend(implied.iter().map(str::to_owned));
        implications.insert(k.clone(), implied.iter().map(str::to_owned).collect());
    }

    let raw_routes = r.routes.unwrap_or_else(|| {
        vec![RawRoute {
            name: Some("default".into()),
            host: None,
            path: None,
            path_prefix: Some(path.clone()),
            methods: None,
            public: false,
            scopes: Some(vec![]),
            mcp: None,
        }]
    });
    let mut routes = Vec::with_capacity(raw_routes.len());
    for (i, rr) in raw_routes.into_iter().enumerate() {
        let rat = format!("{at}.routes[{i}]");
        let route = validate_route(&rat, i, rr)?;
        if let Access::Scopes(s) = &route.access {
            known_scopes.extend(s.iter().map(str::to_owned));
        }
        if let Some(m) = &route.mcp {
            known_scopes.extend(m.scopes().map(str::to_owned));
        }
        routes.push(route);
    }

    let default_scopes = match r.default_scopes {
        None => None,
        Some(list) => {
            let s = validate_scopes(&format!("{at}.default_scopes"), &list)?;
            known_scopes.extend(s.iter().map(str::to_owned));
            Some(s)
        }
    };

    let scopes_supported = match r.scopes_supported {
        Some(list) => {
            let s = validate_scopes(&format!("{at}.scopes_supported"), &list)?;
            if s.iter().any(|x| x == "offline_access") {
                return Err(invalid(
                    format!("{at}.scopes_supported"),
                    "offline_access does not belong in a resource's scopes_supported",
                ));
            }
            known_scopes.extend(s.iter().map(str::to_owned));
            list
        }
        // MCP: the minimal set for basic use — the scopes the routes require to connect.
        None => {
            let mut v = Scopes::default();
            for route in &routes {
                if let Access::Scopes(s) = &route.access {
                    v.extend(s.iter().map(str::to_owned));
                }
                // Listing is part of connecting: the list methods' scopes are baseline too.
                for m in route.mcp.iter() {
                    for list in ["tools/list", "resources/list", "prompts/list"] {
                        if let Some(Rule::Scopes(s)) = m.methods.get(list) {
                            v.extend(s.iter().map(str::to_owned));
                        }
                    }
                }
            }
            v.iter().map(str::to_owned).collect()
        }
    };

    let authorization_servers = match r.authorization_servers {
        Some(list) if list.is_empty() => {
            return Err(invalid(
                format!("{at}.authorization_servers"),
                "MCP requires at least one authorization server",
            ));
        }
        Some(list) => {
            for (i, a) in list.iter().enumerate() {
                Url::parse(a).map_err(|e| {
                    invalid(
                        format!("{at}.authorization_servers[{i}]"),
                        format!("{a:?} is not a URL: {e}"),
                    )
                })?;
            }
            list
        }
        None => issuers.iter().map(|i| i.issuer.clone()).collect(),
    };
    if let Some(d) = &r.documentation {
        Url::parse(d).map_err(|e| {
            invalid(
                format!("{at}.documentation"),
                format!("{d:?} is not a URL: {e}"),
            )
        })?;
    }

    let upstream = match &r.upstream {
        Some(u) => Some(parse_host_port(&format!("{at}.upstream"), u)?),
        None => None,
    };
    let realm = r.realm.unwrap_or_else(|| r.uri.clone());
    if !realm
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(invalid(
            format!("{at}.realm"),
            "must be printable ASCII without '\"' or '\\'",
        ));
    }

    Ok(Resource {
        id: r.id,
        uri: r.uri,
        host,
        path,
        realm,
        name: r.name,
        documentation: r.documentation,
        scopes_supported,
        authorization_servers,
        issuers,
        routes,
        upstream,
        default_scopes,
        implications,
        step_up: r.step_up,
        prm_url,
        prm_paths,
        known_scopes,
    })
}

fn validate_issuer(
    at: &str,
    ri: RawIssuer,
    jwks: &JwksSettings,
    all: &mut Vec<IssuerKeysConfig>,
) -> Result<TrustedIssuer, ConfigError> {
    if ri.issuer.is_empty() {
        return Err(invalid(format!("{at}.issuer"), "must not be empty"));
    }
    let source = match (&ri.jwks_uri, &ri.jwks_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(at, "set either jwks_uri or jwks_file, not both"));
        }
        (Some(u), None) => {
            let url = Url::parse(u).map_err(|e| {
                invalid(format!("{at}.jwks_uri"), format!("{u:?} is not a URL: {e}"))
            })?;
            check_fetch_url(&url, jwks.allow_insecure_http)
                .map_err(|m| invalid(format!("{at}.jwks_uri"), m))?;
            KeySource::JwksUri(url)
        }
        (None, Some(f)) => KeySource::File(f.clone()),
        (None, None) => {
            let url = Url::parse(&ri.issuer).map_err(|e| {
                invalid(
                    format!("{at}.issuer"),
                    format!("{:?} is not a URL, so its keys cannot be discovered ({e}); set jwks_uri or jwks_file", ri.issuer),
                )
            })?;
            check_fetch_url(&url, jwks.allow_insecure_http)
                .map_err(|m| invalid(format!("{at}.issuer"), m))?;
            KeySource::Discovery
        }
    };
    if ri.algorithms.is_empty() {
        return Err(invalid(
            format!("{at}.algorithms"),
            "at least one algorithm is required",
        ));
    }
    let mut algorithms = Vec::new();
    for (i, a) in ri.algorithms.iter().enumerate() {
        let alg = Alg::parse(a).ok_or_else(|| {
            invalid(
                format!("{at}.algorithms[{i}]"),
                format!(
                    "{a:?} is not supported (asymmetric only: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"
                ),
            )
        })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    if ri.leeway_seconds > 300 {
        return Err(invalid(
            format!("{at}.leeway_seconds"),
            "must be at most 300",
        ));
    }
    match all.iter().find(|k| k.issuer == ri.issuer) {
        Some(existing) if existing.source != source => {
            return Err(invalid(
                at,
                format!(
                    "issuer {:?} is configured elsewhere with a different key source",
                    ri.issuer
                ),
            ));
        }
        Some(_) => {}
        None => all.push(IssuerKeysConfig {
            issuer: ri.issuer.clone(),
            source,
        }),
    }
    Ok(TrustedIssuer {
        issuer: ri.issuer,
        algorithms,
        leeway: Duration::from_secs(ri.leeway_seconds),
        extra_audiences: ri.extra_audiences,
    })
}

fn validate_route(at: &str, index: usize, rr: RawRoute) -> Result<Route, ConfigError> {
    let path = match (rr.path, rr.path_prefix) {
        (Some(p), None) => PathMatch::Exact(validate_path(&format!("{at}.path"), &p)?),
        (None, Some(p)) => PathMatch::Prefix(validate_path(&format!("{at}.path_prefix"), &p)?),
        (Some(_), Some(_)) => return Err(invalid(at, "set either path or path_prefix, not both")),
        (None, None) => return Err(invalid(at, "set path or path_prefix")),
    };
    let methods = match rr.methods {
        None => vec![],
        Some(m) if m.is_empty() => {
            return Err(invalid(
                format!("{at}.methods"),
                "an empty list matches nothing; omit it to match every method",
            ));
        }
        Some(m) => {
            let mut out = Vec::new();
            for (i, x) in m.iter().enumerate() {
                if x.is_empty() || !x.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(invalid(
                        format!("{at}.methods[{i}]"),
                        format!("{x:?} is not an HTTP method"),
                    ));
                }
                out.push(x.to_ascii_uppercase());
            }
            out
        }
    };
    let access = match (rr.public, rr.scopes) {
        (true, Some(_)) => return Err(invalid(at, "a public route cannot require scopes")),
        (true, None) => Access::Public,
        (false, Some(s)) => Access::Scopes(validate_scopes(&format!("{at}.scopes"), &s)?),
        (false, None) => {
            return Err(invalid(
                at,
                "set `scopes` (use [] for any valid token) or `public: true`",
            ));
        }
    };
    let mcp = match rr.mcp {
        None => None,
        Some(m) => {
            if matches!(access, Access::Public) {
                return Err(invalid(
                    format!("{at}.mcp"),
                    "a public route cannot have MCP rules",
                ));
            }
            if !methods.is_empty() && !methods.iter().any(|x| x == "POST") {
                return Err(invalid(
                    format!("{at}.mcp"),
                    "MCP rules apply to POST bodies, but this route does not match POST",
                ));
            }
            Some(validate_mcp(&format!("{at}.mcp"), m)?)
        }
    };
    Ok(Route {
        name: rr.name.unwrap_or_else(|| format!("route-{index}")),
        host: rr.host.map(|h| h.to_ascii_lowercase()),
        path,
        methods,
        access,
        mcp,
    })
}

fn validate_rule(at: &str, r: &RawRule) -> Result<Rule, ConfigError> {
    match r {
        RawRule::Word(w) if w == "deny" => Ok(Rule::Deny),
        RawRule::Word(w) => Err(invalid(
            at,
            format!("{w:?}: expected a list of scopes or the word deny"),
        )),
        RawRule::Scopes(list) => Ok(Rule::Scopes(validate_scopes(at, list)?)),
    }
}

fn validate_rule_map(
    at: &str,
    m: &BTreeMap<String, RawRule>,
) -> Result<HashMap<String, Rule>, ConfigError> {
    let mut out = HashMap::new();
    for (k, v) in m {
        if k.is_empty() {
            return Err(invalid(at, "names must not be empty"));
        }
        out.insert(k.clone(), validate_rule(&format!("{at}.{k}"), v)?);
    }
    Ok(out)
}

fn validate_mcp(at: &str, m: RawMcpRules) -> Result<McpRules, ConfigError> {
    let methods = validate_rule_map(&format!("{at}.methods"), &m.methods)?;
    let default_of =
        |name: &str, given: &Option<RawRule>, listed: bool| -> Result<Rule, ConfigError> {
            match given {
                Some(r) => validate_rule(&format!("{at}.{name}"), r),
                None if listed => Ok(Rule::Deny),
                None => Ok(Rule::Scopes(Scopes::default())),
            }
        };
    let tools = validate_rule_map(&format!("{at}.tools"), &m.tools)?;
    let prompts = validate_rule_map(&format!("{at}.prompts"), &m.prompts)?;
    let mut resources: Vec<(String, Rule)> = Vec::new();
    for (k, rule) in validate_rule_map(&format!("{at}.resources"), &m.resources)? {
        // Rules match the canonical URI (policy::canonical_resource_uri), so a prefix is
        // canonicalised the same way, or refused for what a request would be refused for.
        let canonical = crate::policy::canonical_resource_uri(&k).map_err(|e| {
            invalid(
                format!("{at}.resources.{k}"),
                format!("{k:?} is not a usable resource URI prefix: {e}"),
            )
        })?;
        if let Some((_, _)) = resources.iter().find(|(c, _)| *c == canonical) {
            return Err(invalid(
                format!("{at}.resources.{k}"),
                format!("{k:?} is the same prefix as another entry once canonical ({canonical:?})"),
            ));
        }
        resources.push((canonical, rule));
    }
    resources.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    // Rules that can never apply are configuration mistakes.
    for (method, listed, field) in [
        (
            "tools/call",
            !tools.is_empty() || m.default_tool.is_some(),
            "tools",
        ),
        (
            "resources/read",
            !resources.is_empty() || m.default_resource.is_some(),
            "resources",
        ),
        (
            "prompts/get",
            !prompts.is_empty() || m.default_prompt.is_some(),
            "prompts",
        ),
    ] {
        if listed && methods.get(method) == Some(&Rule::Deny) {
            return Err(invalid(
                format!("{at}.{field}"),
                format!("unreachable: methods.{method} is deny, so these rules never apply"),
            ));
        }
    }
    let default_method = default_of("default_method", &m.default_method, false)?;
    if default_method == Rule::Deny {
        for needed in ["initialize", "notifications/initialized"] {
            if !methods.contains_key(needed) {
                return Err(invalid(
                    format!("{at}.default_method"),
                    format!(
                        "deny would refuse {needed}, so no client could connect; list it under methods"
                    ),
                ));
            }
        }
    }
    Ok(McpRules {
        default_tool: default_of("default_tool", &m.default_tool, !tools.is_empty())?,
        default_resource: default_of(
            "default_resource",
            &m.default_resource,
            !resources.is_empty(),
        )?,
        default_prompt: default_of("default_prompt", &m.default_prompt, !prompts.is_empty())?,
        methods,
        default_method,
        tools,
        resources,
        prompts,
    })
}

/// Expand granted scopes through the resource's implications (one level is enough when the
/// configuration lists implied scopes explicitly; we still close transitively).
pub fn expand_scopes(resource: &Resource, granted: &Scopes) -> ScopeSet {
    let mut out: ScopeSet = granted.iter().map(str::to_owned).collect();
    let mut stack: Vec<String> = out.iter().cloned().collect();
    while let Some(s) = stack.pop() {
        if let Some(implied) = resource.implications.get(&s) {
            for x in implied {
                if out.insert(x.clone()) {
                    stack.push(x.clone());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
resources:
  - id: files
    uri: https://mcp.example.com/mcp
    issuers:
      - issuer: https://iam.example.com
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_yaml(MIN).unwrap();
        let r = &c.resources[0];
        assert_eq!(
            r.prm_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(r.realm, "https://mcp.example.com/mcp");
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.authorization_servers, vec!["https://iam.example.com"]);
        assert_eq!(c.issuers[0].source, KeySource::Discovery);
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:9191");
        assert_eq!(c.identity.subject.as_deref(), Some("x-mcp-authz-subject"));
        assert!(c.identity.dynamic_metadata);
        assert!(c.identity.forward_authorization);
    }

    fn err(yaml: &str) -> String {
        Config::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn istio_section_defaults_and_errors() {
        let c = Config::from_yaml(MIN).unwrap();
        assert_eq!(c.istio.provider, "mcp-authz");
        assert_eq!(
            c.istio.service_host,
            "mcp-authz.mcp-authz.svc.cluster.local"
        );
        assert_eq!(c.istio.port, 9191);
        assert!(c.istio.gateways.is_empty() && c.istio.workloads.is_empty());

        let with = |istio: &str| format!("{MIN}istio:\n{istio}");
        let ok = Config::from_yaml(&with(
            "  namespace: authz\n  port: 9000\n  gateways: [istio-ingress/mcp]\n  workloads:\n    files: {namespace: mcp, selector: {app.kubernetes.io/name: files}, destination: files.mcp.svc.cluster.local:8080}\n",
        ))
        .unwrap();
        assert_eq!(ok.istio.service_host, "mcp-authz.authz.svc.cluster.local");
        assert_eq!(ok.istio.port, 9000);
        let w = &ok.istio.workloads["files"];
        assert_eq!(
            w.destination,
            ("files.mcp.svc.cluster.local".to_owned(), 8080)
        );

        let w =
            "    files: {namespace: mcp, selector: {app: files}, destination: files.mcp:8080}\n";
        let cases: &[(String, &str)] = &[
            (with("  provider: 'a b'\n"), "istio.provider"),
            (
                with(&format!("  provider: {}\n", "p".repeat(59))),
                "istio.provider",
            ),
            (with("  namespace: Auth_Z\n"), "istio.namespace"),
            (with("  service: ''\n"), "istio.service"),
            (with("  port: 0\n"), "istio.port"),
            (with("  gateways: [mesh]\n"), "istio.gateways[0]"),
            (with("  gateways: [a/b, a/b]\n"), "istio.gateways[1]"),
            (with("  bogus: 1\n"), "unknown field `bogus`"),
            (
                with(&format!("  workloads:\n{}", w.replace("files:", "nope:"))),
                "istio.workloads.nope",
            ),
            (
                with(&format!(
                    "  workloads:\n{}",
                    w.replace("namespace: mcp", "namespace: MCP")
                )),
                "istio.workloads.files.namespace",
            ),
            (
                with(&format!(
                    "  workloads:\n{}",
                    w.replace("{app: files}", "{}")
                )),
                "istio.workloads.files.selector",
            ),
            (
                with(&format!(
                    "  workloads:\n{}",
                    w.replace("{app: files}", "{'-x': files}")
                )),
                "istio.workloads.files.selector",
            ),
            (
                with(&format!(
                    "  workloads:\n{}",
                    w.replace("{app: files}", "{app: 'a b'}")
                )),
                "istio.workloads.files.selector.app",
            ),
            (
                with(&format!(
                    "  workloads:\n{}",
                    w.replace("files.mcp:8080", "10.0.0.1:8080")
                )),
                "istio.workloads.files.destination",
            ),
            (
                with(&format!(
                    "  workloads:\n{}",
                    w.replace("files.mcp:8080", "files.mcp")
                )),
                "istio.workloads.files.destination",
            ),
        ];
        for (yaml, want) in cases {
            let e = err(yaml);
            assert!(e.contains(want), "error {e:?} should contain {want:?}");
        }
    }

    #[test]
    fn errors_name_the_yaml_path() {
        let cases: &[(&str, &str)] = &[
            (
                "resources:\n  - id: a\n    uri: https://x/mcp/\n    issuers: [{issuer: https://i}]\n",
                "resources[0].uri",
            ),
            (
                "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i, algorithms: [HS256]}]\n",
                "resources[0].issuers[0].algorithms[0]",
            ),
            (
                "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: http://iam.example.com}]\n",
                "resources[0].issuers[0].issuer",
            ),
            (
                "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    routes: [{path_prefix: /mcp/../x, scopes: []}]\n",
                "resources[0].routes[0].path_prefix",
            ),
            (
                "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    routes: [{path: /mcp}]\n",
                "resources[0].routes[0]",
            ),
            (
                "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    routes: [{path: /mcp, scopes: [\"a b\"]}]\n",
                "resources[0].routes[0].scopes[0]",
            ),
            ("listen: {grpc: nope}\nresources: []\n", "listen.grpc"),
            (
                "envoy: {max_request_bytes: 4096}\nlimits: {max_body_bytes: 8192}\nresources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n",
                "envoy.max_request_bytes",
            ),
            (
                "envoy: {max_stream_seconds: 0}\nresources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n",
                "envoy.max_stream_seconds",
            ),
            ("listen: {workers: 0}\nresources: []\n", "listen.workers"),
            (
                "listen: {workers: 100000}\nresources: []\n",
                "listen.workers",
            ),
            (
                "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i, bogus: 1}]\n",
                "unknown field `bogus`",
            ),
            (
                "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n  - id: a\n    uri: https://y/mcp\n    issuers: [{issuer: https://i}]\n",
                "resources[1].id",
            ),
            (
                "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    scopes_supported: [offline_access]\n",
                "resources[0].scopes_supported",
            ),
        ];
        for (yaml, want) in cases {
            let e = err(yaml);
            assert!(e.contains(want), "error {e:?} should contain {want:?}");
        }
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        let p = PathMatch::Prefix("/mcp".into());
        assert!(p.matches("/mcp"));
        assert!(p.matches("/mcp/x"));
        assert!(!p.matches("/mcpx"));
        assert!(!p.matches("/MCP"));
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
        assert!(PathMatch::Exact("/mcp".into()).matches("/mcp"));
        assert!(!PathMatch::Exact("/mcp".into()).matches("/mcp/"));
    }

    #[test]
    fn implications_close_transitively() {
        let c = Config::from_yaml(
            "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    scope_implications:\n      files:admin: [files:write]\n      files:write: [files:read]\n",
        )
        .unwrap();
        let got = expand_scopes(&c.resources[0], &Scopes::parse_space("files:admin"));
        assert!(got.contains("files:read") && got.contains("files:write"));
        let got = expand_scopes(&c.resources[0], &Scopes::parse_space("files"));
        assert_eq!(got.len(), 1);
    }
}
