//! The steps before a token is looked at: the normalised path, the resource, the destination
//! workload and the route (a public route is answered here).

use std::ops::ControlFlow;

use super::route::Matched;
use super::{Allowed, CheckInput, Decision, Denied, target};
use crate::challenge::DenyReason;
use crate::config::{
    Config, PREFLIGHT_CONTEXT_KEY, PREFLIGHTS_BY_PROXY, RESOURCE_CONTEXT_KEY, Resource,
};
use crate::mesh::{self, Destination, DestinationError};
use crate::normalize;
use crate::policy::{self, Requirement};
use crate::trace::Trace;

/// A denial before any route was chosen (no scope, no principal, no inspection).
pub(super) fn deny_early<T>(
    reason: DenyReason,
    resource: Option<&Resource>,
) -> ControlFlow<Decision, T> {
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
pub(super) fn step_path(input: &CheckInput, trace: &mut Trace) -> ControlFlow<Decision, String> {
    match trace.check("path", normalize::normalize_path(&input.path), |p| {
        format!("{p} (normalized)")
    }) {
        Ok(p) => ControlFlow::Continue(p),
        Err(_) => deny_early(DenyReason::BadPath, None),
    }
}

/// Resource: Envoy's context extension, else host and longest path prefix.
pub(super) fn step_resource<'c>(
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
pub(super) fn step_destination(
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
pub(super) fn step_route<'c>(
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
            identity_stripped: super::identity_stripped_by_proxy(input),
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
                used_dpop: std::sync::atomic::AtomicBool::new(false),
            })
        }
    }
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
pub(super) fn is_cors_preflight(input: &CheckInput) -> bool {
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
