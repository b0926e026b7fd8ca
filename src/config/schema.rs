//! The YAML schema: every section and field a configuration file may contain, with its
//! default. Unknown fields are rejected (`deny_unknown_fields`). Nothing here is checked beyond
//! its type: `validate.rs` and `resources.rs` turn these `Raw*` types into the model.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::introspection::{IntrospectMode, RawIntrospection};

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
    /// Concurrent Checks one HTTP/2 connection from Envoy carries before Envoy opens another
    /// (the mcp-authz cluster's `max_concurrent_streams`; default: Envoy's, unbounded). Each
    /// connection is served by one mcp-authz worker thread, so a bound spreads one busy
    /// Envoy worker's Checks over several.
    #[serde(default)]
    pub check_streams_per_connection: Option<u32>,
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
    /// Render an access log (JSON lines on Envoy's stdout) with mcp-authz's decision and the
    /// caller's identity from the ext_authz dynamic metadata, which is then on by default
    /// (`identity.dynamic_metadata`). Default false: mcp-authz logs every Check itself.
    #[serde(default)]
    pub access_log: bool,
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
    /// The mesh's SPIFFE trust domain, for `workloads.<id>.service_account` (default
    /// `cluster.local`, Istio's default `meshConfig.trustDomain`).
    #[serde(default = "default_cluster_domain")]
    pub trust_domain: String,
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
    /// The Kubernetes service account the MCP server's pods run as: binds the resource to the
    /// workload identity `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`, which
    /// Istio's sidecar sends as the Check's destination principal (optional).
    #[serde(default)]
    pub service_account: Option<String>,
    /// Further SPIFFE ids of the MCP server's workload, bound like `service_account`'s
    /// (optional; e.g. another trust domain's).
    #[serde(default)]
    pub principals: Vec<String>,
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
pub(super) const MAX_WORKERS: usize = 256;

pub(super) const MAX_WORKERS_U64: u64 = MAX_WORKERS as u64;

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
    /// Header carrying the client id from the issuer's `client_id_claims` (default
    /// `x-mcp-authz-client-id`; `null`: not sent).
    #[serde(default = "h_client")]
    pub client_id_header: Option<String>,
    /// Header carrying the granted scopes, space-separated (default: not sent; the gate has
    /// already enforced them — name a header, e.g. `x-mcp-authz-scopes`, to send them).
    #[serde(default)]
    pub scopes_header: Option<String>,
    /// Header carrying the token's issuer. Default: `x-mcp-authz-issuer` when some resource
    /// trusts more than one issuer (a `sub` is unique only within its issuer, OpenID Connect
    /// Core §2), otherwise not sent; `null`: never sent.
    #[serde(default, deserialize_with = "present")]
    pub issuer_header: Option<Option<String>>,
    /// Forward the client's `Authorization` header upstream (default true).
    #[serde(default = "dtrue")]
    pub forward_authorization: bool,
    /// Attach dynamic metadata (identity, route, decision) to allow answers. Default: on when
    /// `envoy.access_log` renders an access log that reads it, otherwise off; denials always
    /// carry their decision and reason.
    #[serde(default)]
    pub dynamic_metadata: Option<bool>,
}

/// Tells a key written as `null` (`Some(None)`) from a key left out (`None`, via `default`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl Default for RawIdentity {
    fn default() -> Self {
        serde_yaml::from_str("{}").expect("defaults deserialize")
    }
}

/// The identity headers' default names: mcp-authz's own namespace. A client-sent copy of any
/// of them is stripped whether or not the header is sent (`model::IdentityHeaders::reserved`).
pub const DEFAULT_IDENTITY_HEADERS: [&str; 4] = [
    "x-mcp-authz-subject",
    "x-mcp-authz-client-id",
    "x-mcp-authz-scopes",
    "x-mcp-authz-issuer",
];

fn h_sub() -> Option<String> {
    Some(DEFAULT_IDENTITY_HEADERS[0].into())
}

fn h_client() -> Option<String> {
    Some(DEFAULT_IDENTITY_HEADERS[1].into())
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
    /// Which tokens are introspected (RFC 7662): `opaque` (default, tokens that are not JWTs)
    /// or `always` (JWTs too: revocation is seen). Routes may override it.
    #[serde(default)]
    pub introspect: IntrospectMode,
    /// DPoP-bound tokens (RFC 9449): `mode` off (default), allowed or required, the proof
    /// algorithms, the `iat` window and the replay cache size.
    #[serde(default)]
    pub dpop: Option<super::RawDpop>,
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
    /// Accepted signature algorithms (default RS256, ES256): RS256 RS384 RS512 PS256 PS384 PS512
    /// ES256 ES384 EdDSA, and ML-DSA-65 (FIPS 204) as `MLDSA65` (Hanzo IAM) or `ML-DSA-65` (JOSE
    /// draft), each verified only with keys published in the same spelling; ML-DSA-44 and
    /// ML-DSA-87 in the JOSE spelling only (`ML-DSA-44`, `ML-DSA-87`).
    #[serde(default = "default_algs")]
    pub algorithms: Vec<String>,
    /// Clock leeway for `exp`/`nbf`/`iat` (default 30).
    #[serde(default = "d30")]
    pub leeway_seconds: u64,
    /// Audiences accepted besides the resource URI (e.g. a Casdoor client id). Off by default.
    #[serde(default)]
    pub extra_audiences: Vec<String>,
    /// RFC 7662 token introspection for this issuer's tokens (absent: none).
    #[serde(default)]
    pub introspection: Option<RawIntrospection>,
    /// Claims whose union is the token's scopes, from `scope`, `scp`, `roles`, `permissions`
    /// (default `[scope, scp]`). Entra ID app-only tokens carry only `roles`; Auth0's RBAC
    /// permissions are in `permissions`.
    #[serde(default = "default_scope_claims")]
    pub scope_claims: Vec<String>,
    /// Claims naming the client, first present wins, from `client_id`, `azp`, `cid` (Okta),
    /// `appid` (Entra ID v1) (default `[client_id, azp]`).
    #[serde(default = "default_client_id_claims")]
    pub client_id_claims: Vec<String>,
}

fn default_scope_claims() -> Vec<String> {
    vec!["scope".into(), "scp".into()]
}

fn default_client_id_claims() -> Vec<String> {
    vec!["client_id".into(), "azp".into()]
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
    /// `introspect:` for this route (default: the resource's).
    #[serde(default)]
    pub introspect: Option<IntrospectMode>,
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
