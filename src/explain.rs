//! `mcp-authz explain`: run one request through the real decision code with every step
//! recorded (`trace::Trace`), and show the exact response Envoy would send.

use std::collections::HashMap;
use std::fmt::Write as _;

use arc_swap::ArcSwap;

use crate::cache::TokenCache;
use crate::challenge;
use crate::check::{Authorizer, CheckInput, Decision, upstream_headers};
use crate::config::Config;
use crate::jwks::JwksManager;
use crate::metrics::Metrics;
use crate::trace::Trace;

/// What to explain.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A bearer token to validate for real (keys are fetched from the issuers).
    pub token: Option<String>,
    /// A claims JSON document to check offline instead of a signed token.
    pub claims: Option<Vec<u8>>,
    /// Name the resource as Envoy's `context_extensions` would.
    pub resource: Option<String>,
    /// The destination principal (the receiving workload's SPIFFE id), as Istio's sidecar
    /// would send it.
    pub destination: Option<String>,
}

/// Decide `req` under `config` with every step recorded; returns the report and whether the
/// request would be allowed.
pub async fn run(config: Config, req: Request, now: u64) -> anyhow::Result<(String, bool)> {
    let mut out = String::new();
    let metrics = Metrics::new();
    let jwks = JwksManager::new(&config, metrics.clone())?;
    if req.token.is_some() {
        for (issuer, result) in jwks.refresh_all().await {
            match result {
                Ok(n) => writeln!(out, "keys: {issuer}: {n} usable keys loaded")?,
                Err(e) => writeln!(out, "keys: {issuer}: not loaded: {e}")?,
            }
        }
    }
    let identity = config.identity.clone();
    let authorizer = Authorizer {
        config: ArcSwap::from_pointee(config),
        jwks: jwks.clone(),
        cache: TokenCache::new(0, metrics.clone()),
        introspect: crate::introspect::Introspector::new(metrics.clone()),
        dpop: crate::dpop::Dpop::new(metrics),
    };
    let mut headers: HashMap<String, String> = HashMap::new();
    for (k, v) in &req.headers {
        headers.insert(k.to_ascii_lowercase(), v.clone());
    }
    let mut trace = Trace::on();
    match (&req.token, &req.claims) {
        (Some(t), _) => {
            // With a `DPoP` proof header given, the token goes with the DPoP scheme (RFC 9449).
            let scheme = if headers.contains_key("dpop") {
                "DPoP"
            } else {
                "Bearer"
            };
            headers.insert("authorization".into(), format!("{scheme} {t}"));
        }
        (None, Some(c)) => {
            // A syntactically valid stand-in; the claims document is checked instead.
            headers.insert("authorization".into(), "Bearer offline-claims".into());
            trace.offline_claims = Some(c.clone());
        }
        (None, None) => {}
    }
    let mut context_extensions = HashMap::new();
    if let Some(id) = &req.resource {
        context_extensions.insert(crate::config::RESOURCE_CONTEXT_KEY.to_owned(), id.clone());
    }
    let input = CheckInput {
        method: req.method.clone(),
        host: req.host.clone(),
        path: req.path.clone(),
        headers,
        context_extensions,
        body: req.body.clone(),
        destination_principal: req.destination.clone().unwrap_or_default(),
    };
    let decision = authorizer.decide_traced(&input, now, &mut trace).await;
    jwks.shutdown();
    writeln!(
        out,
        "request: {} {} (host {})",
        req.method, req.path, req.host
    )?;
    if let Some(d) = &req.destination {
        writeln!(out, "destination: {d:?}")?;
    }
    if req.claims.is_some() {
        writeln!(
            out,
            "token: offline claims document (signature, key and algorithm not checked)"
        )?;
    }
    if let Some(r) = explained_resource(&authorizer, &decision) {
        if r.dpop.mode != crate::config::DpopMode::Off {
            writeln!(
                out,
                "dpop: mode {}, algs {}, iat window {} s, replay store {}, nonces {}",
                r.dpop.mode.as_str(),
                r.dpop.algs(),
                r.dpop.iat_window_seconds,
                if r.dpop.replay_store.is_some() {
                    "shared"
                } else {
                    "local only"
                },
                if r.dpop.nonce.is_some() {
                    "required"
                } else {
                    "off"
                },
            )?;
        }
        for i in r.issuers.iter() {
            if let Some(s) = &i.introspection {
                let d = crate::introspect::describe(s);
                writeln!(
                    out,
                    "introspection: {} ({d}); resource default `introspect: {}`",
                    i.issuer,
                    r.introspect.as_str()
                )?;
            }
        }
    }
    writeln!(out, "steps:")?;
    out.push_str(&trace.render());
    let (d, reason) = decision.label();
    writeln!(out, "decision: {d} ({reason})")?;
    writeln!(out, "response Envoy would send:")?;
    let allowed = matches!(decision, Decision::Allow(_));
    match &decision {
        Decision::Allow(a) => {
            let (set, remove) =
                upstream_headers(&identity, a.principal.as_ref(), a.identity_stripped);
            writeln!(out, "  forwarded to the MCP server (route {})", a.route)?;
            for (k, v) in set {
                writeln!(out, "  + {k}: {v}")?;
            }
            for k in remove {
                writeln!(out, "  - {k} (client copy removed)")?;
            }
        }
        Decision::Deny(x) => {
            let r = challenge::render(x.reason, x.target.as_ref(), x.scope.as_deref());
            writeln!(out, "  HTTP/1.1 {}", r.status)?;
            for (k, v) in &r.headers {
                writeln!(out, "  {k}: {v}")?;
            }
            writeln!(out)?;
            writeln!(out, "  {}", r.body)?;
        }
    }
    Ok((out, allowed))
}

/// The resource the decision was made for, when one was chosen.
fn explained_resource(
    authorizer: &Authorizer,
    decision: &Decision,
) -> Option<crate::config::Resource> {
    let id = decision.resource();
    authorizer.config.load().resource(id).cloned()
}
