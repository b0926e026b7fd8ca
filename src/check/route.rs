//! The steps of a route that needs a token: credentials, body and MCP rules, scopes and
//! session, each denying with the route's resource and name.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{CheckInput, Decision, Denied, step_up_scope, target};
use crate::challenge::DenyReason;
use crate::config::{Config, DpopMode, IntrospectMode, McpRules, Resource, expand_scopes};
use crate::credentials::{Scheme, access_token};
use crate::dpop::{self, Dpop, Expected, VerifiedProof};
use crate::introspect::Refusal;
use crate::mcp::{self, BodyError, Call};
use crate::policy;
use crate::scope::Scopes;
use crate::session;
use crate::token::Principal;
use crate::trace::Trace;

/// A route that needs a token: the steps after it deny with its resource and name.
pub(super) struct Matched<'c> {
    pub(super) resource: &'c Resource,
    pub(super) name: &'c str,
    /// The route's own scopes (the MCP rules may add to them).
    pub(super) baseline: &'c Scopes,
    pub(super) mcp: Option<&'c McpRules>,
    /// Which tokens are introspected on this route.
    pub(super) introspect: IntrospectMode,
    /// The request presented its token with the `DPoP` scheme (set by the credentials step):
    /// challenges then carry their error on the `DPoP` challenge.
    pub(super) used_dpop: AtomicBool,
}

impl Matched<'_> {
    pub(super) fn deny<T>(
        &self,
        reason: DenyReason,
        scope: Option<String>,
        principal: Option<Principal>,
        inspection: Option<&'static str>,
    ) -> ControlFlow<Decision, T> {
        self.deny_with_nonce(reason, scope, principal, inspection, None)
    }

    /// [`Matched::deny`], with a fresh DPoP nonce for the client (RFC 9449 §9).
    fn deny_with_nonce<T>(
        &self,
        reason: DenyReason,
        scope: Option<String>,
        principal: Option<Principal>,
        inspection: Option<&'static str>,
        nonce: Option<String>,
    ) -> ControlFlow<Decision, T> {
        let mut target = target(self.resource);
        if let Some(d) = &mut target.dpop {
            d.request_used_dpop = self.used_dpop.load(Ordering::Relaxed);
            d.nonce = nonce;
        }
        ControlFlow::Break(Decision::Deny(Denied {
            reason,
            resource: Some(self.resource.id.clone()),
            route: Some(self.name.to_owned()),
            target: Some(target),
            scope,
            principal,
            inspection,
        }))
    }

    /// The answer to an introspection: the principal, or the denial its refusal maps to.
    pub(super) fn introspected(
        &self,
        judged: Result<Principal, Refusal>,
    ) -> ControlFlow<Decision, Principal> {
        let reason = match judged {
            Ok(p) => return ControlFlow::Continue(p),
            Err(Refusal::Inactive) => DenyReason::TokenInactive,
            Err(Refusal::Token(e)) => DenyReason::Token(e),
            Err(Refusal::Unavailable) => DenyReason::IntrospectionUnavailable,
        };
        self.deny(reason, None, None, None)
    }

    /// Credentials: one `Authorization: Bearer` token (or `DPoP`, where the resource takes
    /// it: RFC 9449 §7.1), never a query token.
    pub(super) fn step_credentials<'i>(
        &self,
        input: &'i CheckInput,
        trace: &mut Trace,
    ) -> ControlFlow<Decision, (Scheme, &'i str)> {
        let dpop = self.resource.dpop.mode != DpopMode::Off;
        match trace.check(
            "credentials",
            access_token(&input.path, input.header("authorization"), dpop),
            |(s, t)| format!("{s:?} token, {} bytes", t.len()),
        ) {
            Ok((scheme, t)) => {
                self.used_dpop
                    .store(scheme == Scheme::Dpop, Ordering::Relaxed);
                ControlFlow::Continue((scheme, t))
            }
            Err(DenyReason::NoCredentials) => {
                // MCP 2025-11-25: the 401 SHOULD name the scopes this request needs.
                let scope = (!self.baseline.is_empty()).then(|| self.baseline.joined());
                self.deny(DenyReason::NoCredentials, scope, None, None)
            }
            Err(reason) => self.deny(reason, None, None, None),
        }
    }

    /// DPoP proof (RFC 9449 §4.3, §7.1): checked before the token, against the request as
    /// the client addressed it (the resource URI's origin, the normalized path). `None` for
    /// a `Bearer` request the resource takes.
    pub(super) fn step_proof(
        &self,
        dpop: &Dpop,
        input: &CheckInput,
        path: &str,
        (scheme, token): (Scheme, &str),
        now: u64,
        trace: &mut Trace,
    ) -> ControlFlow<Decision, Option<VerifiedProof>> {
        if self.resource.dpop.mode == DpopMode::Off {
            return ControlFlow::Continue(None);
        }
        let origin = dpop::proof::origin(&self.resource.uri).unwrap_or_default();
        let expected = Expected {
            method: &input.method,
            origin: &origin,
            path,
            token,
            now,
        };
        let checked = dpop::check_proof(
            self.resource,
            scheme == Scheme::Dpop,
            input.header("dpop"),
            &expected,
        );
        match trace.check("dpop proof", checked, |p| match p {
            Some(p) => format!("{} proof, key thumbprint {}", p.alg.as_str(), p.jkt),
            None => "none: a Bearer request".to_owned(),
        }) {
            Ok(p) => ControlFlow::Continue(p),
            Err(e) => {
                if scheme == Scheme::Dpop {
                    dpop.outcome(DenyReason::Dpop(e).shape().label);
                }
                let nonce = if e == dpop::DpopError::UseNonce {
                    dpop::fresh_nonce(self.resource, now)
                } else {
                    None
                };
                self.deny_with_nonce(DenyReason::Dpop(e), None, None, None, nonce)
            }
        }
    }

    /// DPoP binding and replay (RFC 9449 §6, §7.2, §11.1): a bound token only with a proof
    /// by its key, a proof only with a bound token, each proof accepted once.
    pub(super) async fn step_binding(
        &self,
        dpop: &Dpop,
        principal: &Principal,
        proof: Option<&VerifiedProof>,
        now: u64,
        trace: &mut Trace,
    ) -> ControlFlow<Decision> {
        if proof.is_none() && principal.cnf_jkt.is_none() {
            return ControlFlow::Continue(());
        }
        let bound = dpop
            .bind(self.resource, principal.cnf_jkt.as_deref(), proof, now)
            .await;
        if proof.is_some() {
            dpop.outcome(match bound {
                Ok(()) => "ok",
                Err(e) => DenyReason::Dpop(e).shape().label,
            });
        }
        match trace.check("dpop binding", bound, |()| {
            "cnf.jkt is the proof key; proof not seen before".to_owned()
        }) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => self.deny(DenyReason::Dpop(e), None, None, None),
        }
    }

    /// Body and MCP rules: the scopes this request needs (the route's, plus what the MCP rules
    /// add for a POST's JSON-RPC messages), and the inspection outcome. MCP-aware rules read
    /// the JSON-RPC body of POSTs (seed Part 2 Step 4: each tool checks its scopes); GET
    /// streams and DELETE get the route's scopes only.
    pub(super) fn step_body(
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
    pub(super) fn step_scopes(
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
    pub(super) fn step_session(
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
