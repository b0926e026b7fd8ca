//! The authorization decision for one request, in protocol-free terms: resource, route,
//! credentials, token, scopes → allow (with identity headers) or a denial reason.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cache::TokenCache;
use crate::challenge::{ChallengeTarget, DenyReason, DpopChallenge};
use crate::config::{
    Config, DpopMode, IDENTITY_CONTEXT_KEY, IDENTITY_STRIPPED_BY_PROXY, IdentityHeaders,
    IntrospectMode, Resource, StepUpStrategy,
};
use crate::dpop::Dpop;
use crate::introspect::{self, Introspector, Refusal};
use crate::jwks::JwksManager;
use crate::normalize;
use crate::scope::Scopes;
use crate::token::{self, Principal};
use crate::trace::Trace;

mod request;
mod route;
#[cfg(test)]
mod tests;

use request::{step_destination, step_path, step_resource, step_route};
use route::Matched;

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
    /// The proxy strips client copies of the reserved identity headers itself (the rendered
    /// Envoy says so in `context_extensions`): the answer only sets what it sends.
    pub identity_stripped: bool,
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
    /// DPoP replay protection (RFC 9449 §11.1): a cache per resource on this replica, and the
    /// shared stores resources name.
    pub dpop: Dpop,
}

impl Authorizer {
    /// Decide one request. `now` is seconds since the epoch.
    pub async fn decide(&self, input: &CheckInput, now: u64) -> Decision {
        self.decide_traced(input, now, &mut Trace::off()).await
    }

    /// [`Authorizer::decide`], recording each step (for `mcp-authz explain`). With tracing on
    /// the token cache is bypassed so every validation step really runs.
    ///
    /// The steps, in order, each a function returning its result or the answer reached
    /// early (a denial, or a public route's allow): path, resource, destination, route
    /// (`check/request.rs`), credentials and DPoP proof (`check/route.rs`), token (here), DPoP
    /// binding and replay, body and MCP rules, scopes, session (`check/route.rs`).
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
        let credentials = route.step_credentials(input, trace)?;
        let proof = route.step_proof(&self.dpop, input, &path, credentials, now, trace)?;
        let principal = self
            .step_token(&route, config, credentials.1, now, epoch, trace)
            .await?;
        route
            .step_binding(&self.dpop, &principal, proof.as_ref(), now, trace)
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
            identity_stripped: identity_stripped_by_proxy(input),
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
        dpop: (r.dpop.mode != DpopMode::Off).then(|| DpopChallenge {
            algs: r.dpop.algs(),
            bearer_too: r.dpop.mode == DpopMode::Allowed,
            request_used_dpop: false,
            nonce: None,
        }),
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

/// Whether the route says the proxy already strips client copies of the reserved identity
/// headers ([`IDENTITY_CONTEXT_KEY`]); set only by configuration, never by a client.
pub(crate) fn identity_stripped_by_proxy(input: &CheckInput) -> bool {
    input
        .context_extensions
        .get(IDENTITY_CONTEXT_KEY)
        .is_some_and(|v| v == IDENTITY_STRIPPED_BY_PROXY)
}

/// Headers to set upstream on allow, and client-sent identity headers to strip. A header is
/// either set (replacing any client copy) or removed, never both (Envoy removes a header that
/// is in both lists). Every reserved name not set is removed, unless the proxy strips client
/// copies before the Check (`stripped_by_proxy`): then the answer carries no removal of
/// them, which Envoy would otherwise apply to every allowed request.
pub fn upstream_headers(
    identity: &IdentityHeaders,
    principal: Option<&Principal>,
    stripped_by_proxy: bool,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut set = Vec::new();
    if let Some(p) = principal {
        let scopes = identity.scopes.as_ref().map(|_| p.scopes.joined());
        let values = [
            (&identity.subject, p.subject.as_deref()),
            (&identity.client_id, p.client_id.as_deref()),
            (&identity.scopes, scopes.as_deref()),
            (&identity.issuer, Some(p.issuer.as_str())),
        ];
        for (name, value) in values {
            // A claim that is absent or not a safe header value is not sent; its name is
            // reserved, so a client's copy is removed below (or by the proxy).
            if let (Some(name), Some(v)) = (name, value.filter(|v| header_safe(v))) {
                set.push((name.to_owned(), v.to_owned()));
            }
        }
    }
    let mut remove = Vec::new();
    if !stripped_by_proxy {
        remove.extend(
            identity
                .reserved
                .iter()
                .filter(|r| !set.iter().any(|(n, _)| n == *r))
                .cloned(),
        );
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
