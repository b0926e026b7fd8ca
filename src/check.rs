//! The authorization decision for one request, in protocol-free terms: resource, route,
//! credentials, token, scopes → allow (with identity headers) or a denial reason.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cache::TokenCache;
use crate::challenge::{ChallengeTarget, DenyReason};
use crate::config::{
    Config, IdentityHeaders, IntrospectMode, McpRules, PREFLIGHT_CONTEXT_KEY, PREFLIGHTS_BY_PROXY,
    RESOURCE_CONTEXT_KEY, Resource, StepUpStrategy, expand_scopes,
};
use crate::credentials::bearer_token;
use crate::introspect::{self, Introspector, Refusal};
use crate::jwks::JwksManager;
use crate::mcp::{self, BodyError, Call};
use crate::mesh::{self, Destination, DestinationError};
use crate::normalize;
use crate::policy::{self, Requirement};
use crate::scope::Scopes;
use crate::session;
use crate::token::{self, Principal};
use crate::trace::Trace;

/// One request as Envoy described it (protobuf stays in `authz`).
#[derive(Debug, Default, Clone)]
pub struct CheckInput {
    pub method: String,
    /// `:authority` / `host`.
    pub host: String,
    /// `:path` as received, query string included.
    pub path: String,
    /// Lower-case header names; duplicates already merged by Envoy.
    pub headers: HashMap<String, String>,
    pub context_extensions: HashMap<String, String>,
    /// The request body as Envoy buffered it (empty when none was sent to us).
    pub body: Vec<u8>,
    /// The destination peer's authenticated identity (`attributes.destination.principal`: in
    /// the mesh, the receiving workload's SPIFFE id); empty over plaintext.
    pub destination_principal: String,
}

impl CheckInput {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The outcome, with what the adapter needs to answer and record it.
#[derive(Debug, Clone)]
pub enum Decision {
    Allow(Allowed),
    Deny(Denied),
}

#[derive(Debug, Clone)]
pub struct Allowed {
    pub resource: String,
    pub route: String,
    /// `None` on public routes.
    pub principal: Option<Principal>,
    /// `Some("ok")` when a JSON-RPC body was inspected.
    pub inspection: Option<&'static str>,
    /// The MCP server's own session id, unwrapped from the client's bound `Mcp-Session-Id`
    /// (`sessions:` configured); the upstream gets it in place of the client's value.
    pub session_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Denied {
    pub reason: DenyReason,
    /// `None` when no resource could be chosen.
    pub resource: Option<String>,
    pub route: Option<String>,
    pub target: Option<ChallengeTarget>,
    /// The `scope=` attribute of the challenge.
    pub scope: Option<String>,
    /// Set when a valid token was refused for lack of scope (audit).
    pub principal: Option<Principal>,
    /// The body inspection outcome (`ok` or the body reason label), when one ran.
    pub inspection: Option<&'static str>,
}

impl Decision {
    pub fn label(&self) -> (&'static str, &'static str) {
        match self {
            Decision::Allow(_) => ("allow", "ok"),
            Decision::Deny(d) => ("deny", d.reason.shape().label),
        }
    }

    pub fn inspection(&self) -> Option<&'static str> {
        match self {
            Decision::Allow(a) => a.inspection,
            Decision::Deny(d) => d.inspection,
        }
    }

    pub fn resource(&self) -> &str {
        match self {
            Decision::Allow(a) => &a.resource,
            Decision::Deny(d) => d.resource.as_deref().unwrap_or("-"),
        }
    }
}

/// The shared, swappable state every Check reads.
pub struct Authorizer {
    pub config: ArcSwap<Config>,
    pub jwks: Arc<JwksManager>,
    pub cache: TokenCache,
    /// RFC 7662 introspection (opaque tokens, `introspect: always`).
    pub introspect: Introspector,
}

impl Authorizer {
    /// Decide one request. `now` is seconds since the epoch.
    pub async fn decide(&self, input: &CheckInput, now: u64) -> Decision {
        self.decide_traced(input, now, &mut Trace::off()).await
    }

    /// [`Authorizer::decide`], recording each step (for `mcp-authz explain`). With tracing on
    /// the token cache is bypassed so every validation step really runs.
    ///
    /// The steps, in order, each a function below returning its result or the answer reached
    /// early (a denial, or a public route's allow): path, resource, destination, route,
    /// credentials, token, body and MCP rules, scopes, session.
    pub async fn decide_traced(&self, input: &CheckInput, now: u64, trace: &mut Trace) -> Decision {
        // Before the configuration: see `TokenCache::epoch` (a reload must not be outlived).
        let epoch = self.cache.epoch();
        let config = self.config.load_full();
        match self.steps(&config, input, now, epoch, trace).await {
            ControlFlow::Continue(allowed) | ControlFlow::Break(allowed) => allowed,
        }
    }

    async fn steps(
        &self,
        config: &Config,
        input: &CheckInput,
        now: u64,
        epoch: u64,
        trace: &mut Trace,
    ) -> ControlFlow<Decision, Decision> {
        let method = input.method.to_ascii_uppercase();
        let host = normalize::authority_host(&input.host);
        let path = step_path(input, trace)?;
        let resource = step_resource(config, input, &host, &path, trace)?;
        step_destination(config, input, resource, trace)?;
        let route = step_route(resource, input, &method, &host, &path, trace)?;
        let token = route.step_credentials(input, trace)?;
        let principal = self
            .step_token(&route, config, token, now, epoch, trace)
            .await?;
        let (required, inspection) = route.step_body(config, input, &method, &principal, trace)?;
        route.step_scopes(&principal, &required, inspection, trace)?;
        let session_id = route.step_session(config, input, &principal, inspection, trace)?;
        ControlFlow::Continue(Decision::Allow(Allowed {
            resource: resource.id.clone(),
            route: route.name.to_owned(),
            principal: Some(principal),
            inspection,
            session_id,
        }))
    }

    /// Token: an opaque token is judged by its issuer's introspection endpoint; a JWT comes
    /// from the cache when this exact token was verified for this resource under the same
    /// keys and configuration, else is validated (signature, issuer, claims, audience), and
    /// is introspected too on `introspect: always` routes (a revoked JWT is refused).
    async fn step_token(
        &self,
        route: &Matched<'_>,
        config: &Config,
        token: &str,
        now: u64,
        epoch: u64,
        trace: &mut Trace,
    ) -> ControlFlow<Decision, Principal> {
        let resource = route.resource;
        // `explain --claims` judges a claims document offline: no token to introspect.
        let offline = trace.offline_claims.is_some();
        if !offline && let Some(issuer) = introspect::opaque_issuer(resource, token) {
            let judged = if token.len() > config.max_token_bytes {
                Err(Refusal::Token(token::TokenError::TooLong))
            } else {
                self.introspect
                    .judge_token(&self.jwks, issuer, resource, token, now, trace)
                    .await
            };
            return route.introspected(judged);
        }
        let principal = self
            .step_jwt(route, config, token, now, epoch, trace)
            .await?;
        if route.introspect == IntrospectMode::Always && !offline {
            // Validation gave every issuer of this resource an endpoint.
            let judged = match resource
                .issuers
                .iter()
                .find(|i| i.issuer == principal.issuer)
            {
                Some(issuer) => self
                    .introspect
                    .judge_token(&self.jwks, issuer, resource, token, now, trace)
                    .await
                    .map(|_| principal),
                None => Err(Refusal::Unavailable),
            };
            return route.introspected(judged);
        }
        ControlFlow::Continue(principal)
    }

    /// A JWT, from the verified-token cache or validated.
    async fn step_jwt(
        &self,
        route: &Matched<'_>,
        config: &Config,
        token: &str,
        now: u64,
        epoch: u64,
        trace: &mut Trace,
    ) -> ControlFlow<Decision, Principal> {
        let resource = route.resource;
        let cache_key = TokenCache::key(&resource.id, token);
        let cached = if trace.enabled() {
            None
        } else {
            self.cache.get(&cache_key, now, &self.jwks, epoch)
        };
        if let Some(p) = cached {
            return ControlFlow::Continue(p);
        }
        match self
            .validate(token, resource, now, config.max_token_bytes, trace)
            .await
        {
            Ok(v) => {
                self.cache.insert(
                    cache_key,
                    v.principal.clone(),
                    v.key_generation,
                    v.expires_at,
                    now,
                    epoch,
                );
                ControlFlow::Continue(v.principal)
            }
            Err(e) => route.deny(DenyReason::Token(e), None, None, None),
        }
    }
}

/// A denial before any route was chosen (no scope, no principal, no inspection).
fn deny_early<T>(reason: DenyReason, resource: Option<&Resource>) -> ControlFlow<Decision, T> {
    ControlFlow::Break(Decision::Deny(Denied {
        reason,
        resource: resource.map(|r| r.id.clone()),
        route: None,
        target: resource.map(target),
        scope: None,
        principal: None,
        inspection: None,
    }))
}

/// Path: the `:path` normalised (`normalize::normalize_path`), or 400 `bad_path`.
fn step_path(input: &CheckInput, trace: &mut Trace) -> ControlFlow<Decision, String> {
    match trace.check("path", normalize::normalize_path(&input.path), |p| {
        format!("{p} (normalized)")
    }) {
        Ok(p) => ControlFlow::Continue(p),
        Err(_) => deny_early(DenyReason::BadPath, None),
    }
}

/// Resource: Envoy's context extension, else host and longest path prefix.
fn step_resource<'c>(
    config: &'c Config,
    input: &CheckInput,
    host: &str,
    path: &str,
    trace: &mut Trace,
) -> ControlFlow<Decision, &'c Resource> {
    match policy::select_resource(config, &input.context_extensions, host, path) {
        Ok(r) => {
            trace.ok("resource", || format!("{} ({})", r.id, r.uri));
            ControlFlow::Continue(r)
        }
        Err(miss) => {
            trace.fail("resource", &format!("{miss:?}"));
            let reason = match miss {
                policy::ResourceMiss::UnknownId => DenyReason::UnknownResource,
                policy::ResourceMiss::NoMatch => DenyReason::NoRoute,
                policy::ResourceMiss::Ambiguous => DenyReason::BadPath,
            };
            deny_early(reason, None)
        }
    }
}

/// Destination: when the resource was chosen from `:authority` (no context extension names it,
/// as under Istio's `CUSTOM` action) and `istio.workloads` are bound to SPIFFE ids, the
/// receiving workload must be that resource's (`mesh.rs`). Before the route, so that a public
/// route of the named resource is not served by another resource's workload either.
fn step_destination(
    config: &Config,
    input: &CheckInput,
    resource: &Resource,
    trace: &mut Trace,
) -> ControlFlow<Decision> {
    if input.context_extensions.contains_key(RESOURCE_CONTEXT_KEY) {
        if trace.enabled() && mesh::any_bound(config.istio.bindings()) {
            trace.ok("destination", || {
                "not checked: a context extension names the resource".into()
            });
        }
        return ControlFlow::Continue(());
    }
    let principal = &input.destination_principal;
    match mesh::check_destination(config.istio.bindings(), &resource.id, principal) {
        Ok(Destination::Unbound) => ControlFlow::Continue(()),
        Ok(found) => {
            trace.ok("destination", || match found {
                Destination::Bound => format!("{principal:?} is bound to {}", resource.id),
                _ => format!("{principal:?} and {} are both unbound", resource.id),
            });
            ControlFlow::Continue(())
        }
        Err(e) => {
            trace.fail(
                "destination",
                &match e {
                    DestinationError::Unauthenticated => {
                        "no destination principal (plaintext) while workloads are bound".to_owned()
                    }
                    DestinationError::Mismatch => format!(
                        "{principal:?} is bound to {}, the host names {}",
                        mesh::bound_to(config.istio.bindings(), principal).unwrap_or("no resource"),
                        resource.id
                    ),
                },
            );
            deny_early(DenyReason::Destination(e), Some(resource))
        }
    }
}

/// Route: the well-known PRM paths and CORS preflights, then the first matching route, then
/// the resource default. A public route is answered here.
fn step_route<'c>(
    resource: &'c Resource,
    input: &CheckInput,
    method: &str,
    host: &str,
    path: &str,
    trace: &mut Trace,
) -> ControlFlow<Decision, Matched<'c>> {
    let allow_public = |route: &str| {
        ControlFlow::Break(Decision::Allow(Allowed {
            resource: resource.id.clone(),
            route: route.to_owned(),
            principal: None,
            inspection: None,
            session_id: None,
        }))
    };
    let preflight = method == "OPTIONS" && is_cors_preflight(input);
    if policy::is_always_public(resource, method, path, preflight) {
        trace.ok("route", || {
            "PRM well-known path or CORS preflight: public".into()
        });
        return allow_public("well-known");
    }
    match policy::match_route(resource, host, method, path) {
        Requirement::Public { route } => {
            trace.ok("route", || format!("{route}: public"));
            allow_public(route)
        }
        Requirement::Deny => {
            trace.fail(
                "route",
                &"no route matches and the resource default is deny",
            );
            deny_early(DenyReason::NoRoute, Some(resource))
        }
        Requirement::Ambiguous => {
            trace.fail(
                "route",
                &"a case-insensitive, trailing-slash-tolerant router would pick another route",
            );
            deny_early(DenyReason::BadPath, Some(resource))
        }
        Requirement::Scopes {
            route,
            scopes,
            mcp,
            introspect,
        } => {
            trace.ok("route", || {
                let rules = if mcp.is_some() {
                    "; MCP rules for POST bodies"
                } else {
                    ""
                };
                format!("{route}: scopes [{}]{rules}", scopes.joined())
            });
            ControlFlow::Continue(Matched {
                resource,
                name: route,
                baseline: scopes,
                mcp,
                introspect,
            })
        }
    }
}

/// A route that needs a token: the steps after it deny with its resource and name.
struct Matched<'c> {
    resource: &'c Resource,
    name: &'c str,
    /// The route's own scopes (the MCP rules may add to them).
    baseline: &'c Scopes,
    mcp: Option<&'c McpRules>,
    /// Which tokens are introspected on this route.
    introspect: IntrospectMode,
}

impl Matched<'_> {
    fn deny<T>(
        &self,
        reason: DenyReason,
        scope: Option<String>,
        principal: Option<Principal>,
        inspection: Option<&'static str>,
    ) -> ControlFlow<Decision, T> {
        ControlFlow::Break(Decision::Deny(Denied {
            reason,
            resource: Some(self.resource.id.clone()),
            route: Some(self.name.to_owned()),
            target: Some(target(self.resource)),
            scope,
            principal,
            inspection,
        }))
    }

    /// The answer to an introspection: the principal, or the denial its refusal maps to.
    fn introspected(&self, judged: Result<Principal, Refusal>) -> ControlFlow<Decision, Principal> {
        let reason = match judged {
            Ok(p) => return ControlFlow::Continue(p),
            Err(Refusal::Inactive) => DenyReason::TokenInactive,
            Err(Refusal::Token(e)) => DenyReason::Token(e),
            Err(Refusal::Unavailable) => DenyReason::IntrospectionUnavailable,
        };
        self.deny(reason, None, None, None)
    }

    /// Credentials: one `Authorization: Bearer` token, never a query token.
    fn step_credentials<'i>(
        &self,
        input: &'i CheckInput,
        trace: &mut Trace,
    ) -> ControlFlow<Decision, &'i str> {
        match trace.check(
            "credentials",
            bearer_token(&input.path, input.header("authorization")),
            |t| format!("Bearer token, {} bytes", t.len()),
        ) {
            Ok(t) => ControlFlow::Continue(t),
            Err(DenyReason::NoCredentials) => {
                // MCP 2025-11-25: the 401 SHOULD name the scopes this request needs.
                let scope = (!self.baseline.is_empty()).then(|| self.baseline.joined());
                self.deny(DenyReason::NoCredentials, scope, None, None)
            }
            Err(reason) => self.deny(reason, None, None, None),
        }
    }

    /// Body and MCP rules: the scopes this request needs (the route's, plus what the MCP rules
    /// add for a POST's JSON-RPC messages), and the inspection outcome. MCP-aware rules read
    /// the JSON-RPC body of POSTs (seed Part 2 Step 4: each tool checks its scopes); GET
    /// streams and DELETE get the route's scopes only.
    fn step_body(
        &self,
        config: &Config,
        input: &CheckInput,
        method: &str,
        principal: &Principal,
        trace: &mut Trace,
    ) -> ControlFlow<Decision, (Scopes, Option<&'static str>)> {
        let mut required = self.baseline.clone();
        let Some(rules) = self.mcp.filter(|_| method == "POST") else {
            return ControlFlow::Continue((required, None));
        };
        if !identity_encoding(input.header("content-encoding")) {
            trace.fail("body", &"content-encoded body");
            return self.deny(
                DenyReason::UnsupportedEncoding,
                None,
                Some(principal.clone()),
                None,
            );
        }
        let calls = trace.check("body", inspect_body(input, config), |calls| {
            let parts: Vec<String> = calls
                .iter()
                .map(|c| {
                    format!(
                        "{} {}",
                        c.method.as_deref().unwrap_or("(response)"),
                        c.target().unwrap_or("")
                    )
                    .trim()
                    .to_owned()
                })
                .collect();
            format!("JSON-RPC: {}", parts.join(", "))
        });
        let calls = match calls {
            Ok(c) => c,
            Err(e) => {
                let reason = DenyReason::Body(e);
                let label = Some(reason.shape().label);
                return self.deny(reason, None, Some(principal.clone()), label);
            }
        };
        let inspection = Some("ok");
        match trace.check("mcp rules", policy::mcp_requirement(rules, &calls), |x| {
            format!("add [{}]", x.joined())
        }) {
            Ok(extra) => required.extend(extra.iter().map(str::to_owned)),
            Err(d) => {
                return self.deny(
                    DenyReason::McpDenied(d),
                    None,
                    Some(principal.clone()),
                    inspection,
                );
            }
        }
        ControlFlow::Continue((required, inspection))
    }

    /// Scopes: every required scope granted (after the resource's scope expansion), or 403
    /// `insufficient_scope` with the step-up `scope=`.
    fn step_scopes(
        &self,
        principal: &Principal,
        required: &Scopes,
        inspection: Option<&'static str>,
        trace: &mut Trace,
    ) -> ControlFlow<Decision> {
        let granted = expand_scopes(self.resource, &principal.scopes);
        let missing: Vec<&str> = required.iter().filter(|s| !granted.contains(*s)).collect();
        let scopes_ok = if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing [{}]", missing.join(" ")))
        };
        trace
            .check("scopes", scopes_ok, |_| {
                let granted: Vec<&str> = granted.iter().map(String::as_str).collect();
                format!(
                    "required [{}] granted [{}]",
                    required.joined(),
                    granted.join(" ")
                )
            })
            .ok();
        if missing.is_empty() {
            return ControlFlow::Continue(());
        }
        let scope = step_up_scope(self.resource, &principal.scopes, required);
        self.deny(
            DenyReason::InsufficientScope,
            Some(scope),
            Some(principal.clone()),
            inspection,
        )
    }

    /// Session: MCP authorization "Session Hijacking": a session is usable only by the
    /// principal that opened it (`session.rs`). Checked once the request is otherwise allowed,
    /// so a 401/403 challenge still comes first and a 404 means only "not your session".
    /// Returns the MCP server's own session id, unwrapped.
    fn step_session(
        &self,
        config: &Config,
        input: &CheckInput,
        principal: &Principal,
        inspection: Option<&'static str>,
        trace: &mut Trace,
    ) -> ControlFlow<Decision, Option<String>> {
        let (Some(key), Some(wrapped)) = (&config.sessions, input.header("mcp-session-id")) else {
            return ControlFlow::Continue(None);
        };
        let bound = session::binding(&self.resource.id, principal);
        match bound.as_deref().and_then(|b| key.unwrap(b, wrapped)) {
            Some(id) => {
                trace.ok("session", || "bound to this principal".into());
                ControlFlow::Continue(Some(id.to_owned()))
            }
            None => {
                trace.fail("session", &"not a session this principal opened");
                self.deny(
                    DenyReason::UnknownSession,
                    None,
                    Some(principal.clone()),
                    inspection,
                )
            }
        }
    }
}

/// Whether a `Content-Encoding` leaves the body as mcp-authz reads it: absent, or only
/// `identity` codings (RFC 9110 §8.4.1, case-insensitive). Express's body-parser inflates
/// `gzip`, `deflate` and `br` before JSON parsing, so an encoded body would be decided on bytes
/// the server never reads as such.
fn identity_encoding(value: Option<&str>) -> bool {
    value.is_none_or(|v| {
        v.split(',')
            .map(str::trim)
            .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
    })
}

/// Whether this `OPTIONS` is a CORS preflight, which never carries credentials and so must
/// pass without a token. Fetch standard §4.8 "CORS-preflight fetch": a preflight has a
/// non-empty `Origin` and `Access-Control-Request-Method` and no body; anything else is an
/// ordinary `OPTIONS` request and needs what any request on its route needs. Behind the
/// rendered Envoy (context extension [`PREFLIGHT_CONTEXT_KEY`]) Envoy's CORS filter has already
/// answered every preflight, so nothing that reaches us is one. Under Istio the pod's sidecar
/// sends every `OPTIONS` here; Envoy forwards all headers then, so a declared body
/// (`content-length` other than 0, or `transfer-encoding`) is seen; an HTTP/2 body without
/// `content-length` is only seen when the body is sent to us (the `-body` provider).
fn is_cors_preflight(input: &CheckInput) -> bool {
    let non_empty = |name| input.header(name).is_some_and(|v| !v.trim().is_empty());
    input
        .context_extensions
        .get(PREFLIGHT_CONTEXT_KEY)
        .map(String::as_str)
        != Some(PREFLIGHTS_BY_PROXY)
        && non_empty("origin")
        && non_empty("access-control-request-method")
        && input.body.is_empty()
        && input
            .header("content-length")
            .is_none_or(|v| v.trim() == "0")
        && input.header("transfer-encoding").is_none()
}

/// Parse the body Envoy forwarded and check it against the `Mcp-Method`/`Mcp-Name` headers.
fn inspect_body(input: &CheckInput, config: &Config) -> Result<Vec<Call>, BodyError> {
    // Envoy marks a body cut at `max_request_bytes` (allow_partial_message); deciding on a
    // prefix would be deciding on a different message.
    if input.header("x-envoy-auth-partial-body") == Some("true") {
        return Err(BodyError::TooLarge);
    }
    if input.body.is_empty() {
        return Err(BodyError::Missing);
    }
    let limits = mcp::Limits {
        max_bytes: config.max_body_bytes,
        max_depth: config.max_json_depth,
        ..mcp::Limits::default()
    };
    let calls = mcp::parse_body(&input.body, limits)?;
    mcp::check_headers(
        &calls,
        input.header("mcp-protocol-version"),
        input.header("mcp-method"),
        input.header("mcp-name"),
    )?;
    Ok(calls)
}

impl Authorizer {
    /// Validate the token (or, for `explain --claims`, the offline claims document).
    async fn validate(
        &self,
        token: &str,
        resource: &Resource,
        now: u64,
        max_len: usize,
        trace: &mut Trace,
    ) -> Result<token::Validated, token::TokenError> {
        match trace.offline_claims.take() {
            Some(claims) => {
                token::check_claims_offline(&claims, resource, now, trace).map(|principal| {
                    token::Validated {
                        expires_at: principal.expires_at,
                        principal,
                        // Never cached: offline claims are only ever explained.
                        key_generation: u64::MAX,
                    }
                })
            }
            None => token::validate_traced(token, resource, &self.jwks, now, max_len, trace).await,
        }
    }
}

fn target(r: &Resource) -> ChallengeTarget {
    ChallengeTarget {
        realm: r.realm.clone(),
        resource_metadata: r.prm_url.clone(),
    }
}

/// MCP 2025-11-25 §"Scope challenge handling": `union` names the scopes already granted that this
/// resource knows plus the required ones, so clients that replace rather than accumulate scopes
/// do not lose access; `required` (2026-07-28) names only what this request needs. Never
/// `offline_access` (it is not the resource's to ask for).
pub fn step_up_scope(resource: &Resource, granted: &Scopes, required: &Scopes) -> String {
    let mut out = Scopes::default();
    if resource.step_up == StepUpStrategy::Union {
        out.extend(
            granted
                .iter()
                .filter(|s| resource.known_scopes.contains(*s))
                .map(str::to_owned),
        );
    }
    out.extend(required.iter().map(str::to_owned));
    Scopes::new(
        out.iter()
            .filter(|s| *s != "offline_access")
            .map(str::to_owned),
    )
    .joined()
}

/// Headers to set upstream on allow, and client-sent identity headers to strip. A header is
/// either set (replacing any client copy) or removed, never both (Envoy removes a header that
/// is in both lists).
pub fn upstream_headers(
    identity: &IdentityHeaders,
    principal: Option<&Principal>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut set = Vec::new();
    let mut remove = Vec::new();
    let values: [(&Option<String>, Option<String>); 4] = match principal {
        Some(p) => [
            (&identity.subject, p.subject.clone()),
            (&identity.client_id, p.client_id.clone()),
            (
                &identity.scopes,
                identity.scopes.as_ref().map(|_| p.scopes.joined()),
            ),
            (&identity.issuer, Some(p.issuer.clone())),
        ],
        None => [
            (&identity.subject, None),
            (&identity.client_id, None),
            (&identity.scopes, None),
            (&identity.issuer, None),
        ],
    };
    for (name, value) in values {
        // A header configured as `null` is left alone: neither set nor stripped.
        let Some(name) = name else { continue };
        match value.filter(|v| header_safe(v)) {
            Some(v) => set.push((name.to_owned(), v)),
            None => remove.push(name.to_owned()),
        }
    }
    if !identity.forward_authorization && principal.is_some() {
        remove.push("authorization".to_owned());
    }
    (set, remove)
}

/// Claim values become header values only when they are visible ASCII (or spaces): no CR/LF,
/// no control bytes, nothing a proxy could read differently.
fn header_safe(v: &str) -> bool {
    !v.is_empty() && v.len() <= 4096 && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_is_the_fetch_definition() {
        let preflight = |headers: &[(&str, &str)], body: &[u8], ext: &[(&str, &str)]| {
            is_cors_preflight(&CheckInput {
                method: "OPTIONS".into(),
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                context_extensions: ext
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                body: body.to_vec(),
                ..CheckInput::default()
            })
        };
        let o = ("origin", "https://app.example");
        let m = ("access-control-request-method", "POST");
        assert!(preflight(&[o, m], b"", &[]));
        assert!(preflight(&[o, m, ("content-length", "0")], b"", &[]));
        // Present is not enough: both non-empty (the issue-17 look-alike had `Origin: `).
        assert!(!preflight(&[("origin", ""), m], b"", &[]));
        assert!(!preflight(&[("origin", " "), m], b"", &[]));
        assert!(!preflight(
            &[o, ("access-control-request-method", "")],
            b"",
            &[]
        ));
        assert!(!preflight(&[o], b"", &[]));
        assert!(!preflight(&[m], b"", &[]));
        // A preflight has no body, buffered or declared.
        assert!(!preflight(&[o, m], b"{}", &[]));
        assert!(!preflight(&[o, m, ("content-length", "2")], b"", &[]));
        assert!(!preflight(
            &[o, m, ("transfer-encoding", "chunked")],
            b"",
            &[]
        ));
        // Behind the rendered Envoy its CORS filter answered every real preflight.
        let by_proxy = (PREFLIGHT_CONTEXT_KEY, PREFLIGHTS_BY_PROXY);
        assert!(!preflight(&[o, m], b"", &[by_proxy]));
        assert!(preflight(&[o, m], b"", &[(PREFLIGHT_CONTEXT_KEY, "other")]));
    }

    #[test]
    fn identity_headers_set_or_removed_never_both() {
        let mut id = IdentityHeaders {
            subject: Some("x-sub".into()),
            client_id: Some("x-client".into()),
            scopes: Some("x-scopes".into()),
            issuer: Some("x-iss".into()),
            forward_authorization: false,
            dynamic_metadata: true,
        };
        let p = Principal {
            issuer: "https://iam".into(),
            subject: Some("user\r\nx-admin: 1".into()),
            client_id: None,
            scopes: Scopes::parse_space("a b"),
            expires_at: 0,
        };
        let (set, remove) = upstream_headers(&id, Some(&p));
        assert_eq!(
            set,
            vec![
                ("x-scopes".into(), "a b".into()),
                ("x-iss".into(), "https://iam".into())
            ]
        );
        assert_eq!(remove, vec!["x-sub", "x-client", "authorization"]);
        let (set, remove) = upstream_headers(&id, None);
        assert!(set.is_empty());
        assert_eq!(remove, vec!["x-sub", "x-client", "x-scopes", "x-iss"]);
        // Headers configured as null are neither set nor stripped.
        (id.subject, id.scopes) = (None, None);
        let (set, remove) = upstream_headers(&id, Some(&p));
        assert_eq!(set, vec![("x-iss".into(), "https://iam".into())]);
        assert_eq!(remove, vec!["x-client", "authorization"]);
        let (set, remove) = upstream_headers(&id, None);
        assert!(set.is_empty());
        assert_eq!(remove, vec!["x-client", "x-iss"]);
    }

    #[test]
    fn step_up_strategies() {
        let mut c = Config::from_yaml(
            "resources:\n  - id: a\n    uri: https://x/mcp\n    issuers: [{issuer: https://i}]\n    routes: [{path: /mcp, scopes: [files:list]}, {path: /r, scopes: [files:read]}]\n",
        )
        .unwrap();
        let r = &mut c.resources[0];
        let granted = Scopes::parse_space("openid offline_access files:list other:x");
        let required = Scopes::parse_space("files:read");
        assert_eq!(
            step_up_scope(r, &granted, &required),
            "files:list files:read"
        );
        r.step_up = StepUpStrategy::Required;
        assert_eq!(step_up_scope(r, &granted, &required), "files:read");
    }
}
