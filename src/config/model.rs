//! The validated runtime model: the configuration, its resources, issuers, routes and MCP
//! rules, key sources and algorithms that the decision reads, and the Envoy and Istio settings
//! the renderers read. Built only by validation (`validate.rs`,
//! `resources.rs`), so every value here has been checked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::introspection::{IntrospectMode, IntrospectionSettings};
use super::schema::{EscapedSlashes, StepUpStrategy};
use crate::normalize::segment_prefix;
use crate::scope::{ScopeSet, Scopes};

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
    /// `istio.trust_domain`.
    pub trust_domain: String,
}

impl IstioSettings {
    /// Each resource id with the SPIFFE ids its workload is bound to (`mesh.rs`).
    pub fn bindings(&self) -> impl Iterator<Item = (&str, &[String])> + Clone {
        self.workloads
            .iter()
            .map(|(id, w)| (id.as_str(), w.principals.as_slice()))
    }
}

/// Validated `istio.workloads.<id>`.
#[derive(Debug, Clone)]
pub struct IstioWorkload {
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    /// `(host, port)` of the MCP server's Service.
    pub destination: (String, u16),
    /// The SPIFFE ids the workload is bound to (`service_account`'s first, then
    /// `principals`); empty when unbound. No id is bound to two resources (`mesh.rs`).
    pub principals: Vec<String>,
}

/// Validated `envoy:` section.
#[derive(Debug, Clone)]
pub struct EnvoySettings {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// `(host, port)` of mcp-authz as Envoy reaches it.
    pub authz_address: (String, u16),
    pub check_timeout: Duration,
    /// `envoy.check_streams_per_connection`.
    pub check_streams_per_connection: Option<u32>,
    /// What Envoy is told to buffer (`with_request_body.max_request_bytes`): one byte more
    /// than `envoy.max_request_bytes` (itself at least `limits.max_body_bytes`).
    pub max_request_bytes: u32,
    /// `envoy.max_stream_seconds`.
    pub max_stream: Duration,
    pub escaped_slashes: EscapedSlashes,
    pub cors_allow_origins: Vec<String>,
    /// `envoy.access_log`: the render logs each request with the ext_authz metadata.
    pub access_log: bool,
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
    /// Every name whose client-sent copy never reaches the MCP server: the names in use and
    /// the four default names, sent or not (a server written against the defaults must not
    /// read a client's value after an operator turned a header off).
    pub reserved: Vec<String>,
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

/// A JWS algorithm an issuer may be allowed (`algorithms`), named as the token header spells it.
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
    /// ML-DSA-65 (FIPS 204), pure, empty context, as Hanzo IAM spells it: `alg: "MLDSA65"`,
    /// verified only with its `kty: "MLDSA"` keys.
    MLDSA65,
    /// The same signature as draft-ietf-cose-dilithium spells it for JOSE: `alg: "ML-DSA-65"`,
    /// verified only with `kty: "AKP"` keys. A separate algorithm, not an alias, so each
    /// spelling verifies only with keys published in that same spelling.
    #[allow(non_camel_case_types)]
    ML_DSA_65,
    /// ML-DSA-44 (FIPS 204, NIST category 2) in draft-ietf-cose-dilithium's JOSE spelling only
    /// (`kty: "AKP"`); no IAM we know of signs with it, Hanzo IAM has no `MLDSA44`.
    #[allow(non_camel_case_types)]
    ML_DSA_44,
    /// ML-DSA-87 (FIPS 204, NIST category 5), JOSE spelling only, as ML-DSA-44.
    #[allow(non_camel_case_types)]
    ML_DSA_87,
}

impl Alg {
    pub const ALL: [Alg; 13] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::MLDSA65,
        Alg::ML_DSA_65,
        Alg::ML_DSA_44,
        Alg::ML_DSA_87,
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
            "MLDSA65" => Alg::MLDSA65,
            "ML-DSA-65" => Alg::ML_DSA_65,
            "ML-DSA-44" => Alg::ML_DSA_44,
            "ML-DSA-87" => Alg::ML_DSA_87,
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
            Alg::MLDSA65 => "MLDSA65",
            Alg::ML_DSA_65 => "ML-DSA-65",
            Alg::ML_DSA_44 => "ML-DSA-44",
            Alg::ML_DSA_87 => "ML-DSA-87",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub algorithms: Vec<Alg>,
    pub leeway: Duration,
    pub extra_audiences: Vec<String>,
    /// RFC 7662 introspection of this issuer's tokens, when configured.
    pub introspection: Option<std::sync::Arc<IntrospectionSettings>>,
    /// Claims whose union is the token's scopes, in configured order, without repeats.
    pub scope_claims: Vec<ScopeClaim>,
    /// Claims naming the client; the first one present wins.
    pub client_id_claims: Vec<ClientIdClaim>,
}

/// A claim that may carry scopes (`scope_claims`). A closed set: each is parsed by
/// [`crate::scope::ClaimValue`], which knows both shapes the IdPs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeClaim {
    /// RFC 8693 §4.2 / RFC 9068 §2.2.3: space-delimited string (Keycloak, Casdoor, Auth0).
    Scope,
    /// Entra ID (string) and Okta (array).
    Scp,
    /// Entra ID application permissions (array); client-credentials tokens carry nothing else.
    Roles,
    /// Auth0 RBAC with "Add Permissions in the Access Token" (array).
    Permissions,
}

impl ScopeClaim {
    pub const ALL: [ScopeClaim; 4] = [
        ScopeClaim::Scope,
        ScopeClaim::Scp,
        ScopeClaim::Roles,
        ScopeClaim::Permissions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScopeClaim::Scope => "scope",
            ScopeClaim::Scp => "scp",
            ScopeClaim::Roles => "roles",
            ScopeClaim::Permissions => "permissions",
        }
    }

    pub fn parse(s: &str) -> Option<ScopeClaim> {
        ScopeClaim::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A claim that may name the OAuth client (`client_id_claims`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIdClaim {
    /// RFC 9068 §2.2 / RFC 8693 §4.3.
    ClientId,
    /// OpenID Connect authorized party: Keycloak, Casdoor, Entra ID v2.
    Azp,
    /// Okta.
    Cid,
    /// Entra ID v1.
    Appid,
}

impl ClientIdClaim {
    pub const ALL: [ClientIdClaim; 4] = [
        ClientIdClaim::ClientId,
        ClientIdClaim::Azp,
        ClientIdClaim::Cid,
        ClientIdClaim::Appid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientIdClaim::ClientId => "client_id",
            ClientIdClaim::Azp => "azp",
            ClientIdClaim::Cid => "cid",
            ClientIdClaim::Appid => "appid",
        }
    }

    pub fn parse(s: &str) -> Option<ClientIdClaim> {
        ClientIdClaim::ALL.into_iter().find(|c| c.as_str() == s)
    }
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
    /// Which tokens are introspected on routes that do not say (`introspect:`).
    pub introspect: IntrospectMode,
    /// DPoP-bound tokens (RFC 9449): off, allowed or required, and the proof rules.
    pub dpop: super::DpopSettings,
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
    /// `introspect:` of this route; `None`: the resource's.
    pub introspect: Option<IntrospectMode>,
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
    /// Canonical URI prefixes (`normalize::canonical_resource_uri`), longest first.
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
