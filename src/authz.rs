//! The gRPC adapter for `envoy.service.auth.v3.Authorization/Check`: protobuf in, domain
//! decision, protobuf out, recorded once. The only module that sees generated types.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use prost_types::{Struct, Value, value::Kind};
use tonic::{Request, Response, Status};

use crate::challenge::{self, DenyReason};
use crate::check::{Authorizer, CheckInput, Decision, Denied, upstream_headers};
use crate::metrics::Metrics;
use crate::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use crate::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    attribute_context::{HttpRequest, Request as AttrRequest},
    authorization_server::Authorization,
    check_response::HttpResponse,
};
use crate::pb::envoy::r#type::v3::HttpStatus;
use crate::pb::google::rpc;
use crate::session;

pub use crate::pb::envoy::service::auth::v3::authorization_server::AuthorizationServer;

/// MCP Streamable HTTP session header (lower case, as Envoy sends it).
pub const SESSION_HEADER: &str = "mcp-session-id";
/// ext_authz dynamic-metadata field carrying the session binding of an allowed request.
pub const SESSION_BINDING_KEY: &str = "mcp_authz_session";
/// The dynamic-metadata namespace Envoy files ext_authz's metadata under.
pub const EXT_AUTHZ_NAMESPACE: &str = "envoy.filters.http.ext_authz";

/// The tonic service.
pub struct AuthzService {
    pub authorizer: Arc<Authorizer>,
    pub metrics: Metrics,
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        // Counts the Check even if Envoy gives up (timeout) and the future is dropped mid-way.
        let mut unfinished = Unfinished {
            metrics: &self.metrics,
            started,
            armed: true,
        };
        let (input, request_id) = to_input(request.into_inner());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // Fail closed: a panic anywhere in the decision is a deny, never a gRPC error that a
        // `failure_mode_allow: true` Envoy would turn into an allow.
        let decision = AssertUnwindSafe(self.authorizer.decide(&input, now))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Decision::Deny(Denied::internal()));
        unfinished.armed = false;
        let response = self.to_response(&decision);
        self.record(&decision, &request_id, &input, started);
        Ok(Response::new(response))
    }
}

/// Drop guard recording a Check that never reached a decision (the caller went away).
struct Unfinished<'a> {
    metrics: &'a Metrics,
    started: Instant,
    armed: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.metrics.check(
                "deny",
                "cancelled",
                "-",
                self.started.elapsed().as_secs_f64(),
            );
            tracing::info!(target: "mcp_authz::access", reason = "cancelled", "check abandoned by the caller");
        }
    }
}

impl Denied {
    fn internal() -> Denied {
        Denied {
            reason: DenyReason::Internal,
            resource: None,
            route: None,
            target: None,
            scope: None,
            principal: None,
            inspection: None,
        }
    }
}

/// Take the request apart; every field we read is named so a change upstream is visible here.
fn to_input(req: CheckRequest) -> (CheckInput, String) {
    let AttributeContext {
        request,
        context_extensions,
        source: _,
        destination: _,
    } = req.attributes.unwrap_or_default();
    let AttrRequest { http, time: _ } = request.unwrap_or_default();
    let HttpRequest {
        id,
        method,
        mut headers,
        header_map,
        path,
        host,
        scheme: _,
        query: _,
        fragment: _,
        size: _,
        protocol: _,
        body,
        raw_body,
    } = http.unwrap_or_default();
    // With `pack_as_bytes` the body arrives in `raw_body`; otherwise as a UTF-8 string.
    let body = if raw_body.is_empty() {
        body.into_bytes()
    } else {
        raw_body
    };
    // With `encode_raw_headers`, Envoy sends `header_map` instead of `headers`.
    if headers.is_empty()
        && let Some(map) = header_map
    {
        for HeaderValue {
            key,
            value,
            raw_value,
        } in map.headers
        {
            let value = if raw_value.is_empty() {
                value
            } else {
                // A non-UTF-8 value cannot be a valid credential; keep it visibly broken.
                String::from_utf8(raw_value).unwrap_or_else(|_| "\u{fffd}".into())
            };
            headers
                .entry(key.to_ascii_lowercase())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(&value);
                })
                .or_insert(value);
        }
    }
    let request_id = headers.get("x-request-id").cloned().unwrap_or(id);
    let path = if path.is_empty() {
        headers.get(":path").cloned().unwrap_or_default()
    } else {
        path
    };
    let host = if host.is_empty() {
        headers.get(":authority").cloned().unwrap_or_default()
    } else {
        host
    };
    let method = if method.is_empty() {
        headers.get(":method").cloned().unwrap_or_default()
    } else {
        method
    };
    (
        CheckInput {
            method,
            host,
            path,
            headers,
            context_extensions,
            body,
        },
        request_id,
    )
}

fn header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

impl AuthzService {
    fn to_response(&self, decision: &Decision) -> CheckResponse {
        // prost-types' Struct is a BTreeMap: build it directly.
        let base_metadata = || {
            let (decision_label, reason_label) = decision.label();
            BTreeMap::from([
                ("decision".to_owned(), string_value(decision_label)),
                ("reason".to_owned(), string_value(reason_label)),
                ("resource".to_owned(), string_value(decision.resource())),
            ])
        };
        match decision {
            Decision::Allow(a) => {
                let config = self.authorizer.config.load();
                let (mut set, mut remove) =
                    upstream_headers(&config.identity, a.principal.as_ref());
                match &a.session_id {
                    // The MCP server gets back the id it issued (set replaces the client's).
                    Some(id) => set.push((SESSION_HEADER.to_owned(), id.clone())),
                    // With binding on, no id reaches the server unverified, even if this Check
                    // did not see the header (a proxy not sending it to us).
                    None if config.sessions.is_some() => remove.push(SESSION_HEADER.to_owned()),
                    None => {}
                }
                // Envoy copies every field into the stream's metadata: leave it out when
                // nothing reads it (identity.dynamic_metadata: false).
                let mut metadata = config.identity.dynamic_metadata.then(|| {
                    let mut meta = base_metadata();
                    meta.insert("route".into(), string_value(&a.route));
                    if let Some(p) = &a.principal {
                        for (k, v) in [("sub", &p.subject), ("client_id", &p.client_id)] {
                            if let Some(v) = v {
                                meta.insert(k.into(), string_value(v));
                            }
                        }
                        meta.insert("iss".into(), string_value(&p.issuer));
                        meta.insert("scope".into(), string_value(&p.scopes.joined()));
                    }
                    Struct { fields: meta }
                });
                // The ext_proc filter binds a session the MCP server opens on this response to
                // this principal (`extproc.rs`); Envoy forwards ext_authz's metadata to it.
                if config.sessions.is_some()
                    && let Some(p) = &a.principal
                {
                    metadata.get_or_insert_with(Struct::default).fields.insert(
                        SESSION_BINDING_KEY.to_owned(),
                        string_value(&session::binding(&a.resource, p)),
                    );
                }
                CheckResponse {
                    status: Some(rpc::Status {
                        code: tonic::Code::Ok as i32,
                        message: String::new(),
                        details: vec![],
                    }),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers: set.into_iter().map(|(k, v)| header(&k, v)).collect(),
                        headers_to_remove: remove,
                        response_headers_to_add: vec![],
                        query_parameters_to_set: vec![],
                        query_parameters_to_remove: vec![],
                    })),
                    dynamic_metadata: metadata,
                }
            }
            Decision::Deny(d) => {
                let r = challenge::render(d.reason, d.target.as_ref(), d.scope.as_deref());
                CheckResponse {
                    status: Some(rpc::Status {
                        code: tonic::Code::PermissionDenied as i32,
                        message: String::new(),
                        details: vec![],
                    }),
                    http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                        status: Some(HttpStatus {
                            code: i32::from(r.status),
                        }),
                        headers: r.headers.into_iter().map(|(k, v)| header(k, v)).collect(),
                        body: r.body,
                    })),
                    dynamic_metadata: Some(Struct {
                        fields: base_metadata(),
                    }),
                }
            }
        }
    }

    /// One metric update and one access event per Check, plus an audit event per denial.
    /// Tokens, and the raw path (it may carry `?access_token=`), are never logged.
    fn record(&self, decision: &Decision, request_id: &str, input: &CheckInput, started: Instant) {
        let elapsed = started.elapsed();
        let (d, reason) = decision.label();
        self.metrics
            .check(d, reason, decision.resource(), elapsed.as_secs_f64());
        if let Some(result) = decision.inspection() {
            self.metrics.body_inspection(result);
        }
        let micros = elapsed.as_micros() as u64;
        let sub = |p: Option<&crate::token::Principal>| {
            p.and_then(|p| p.subject.as_deref())
                .unwrap_or("-")
                .to_owned()
        };
        let client = |p: Option<&crate::token::Principal>| {
            p.and_then(|p| p.client_id.as_deref())
                .unwrap_or("-")
                .to_owned()
        };
        match decision {
            // Allows are debug so a busy mesh does not log every request; enable them with
            // RUST_LOG=info,mcp_authz::access=debug.
            Decision::Allow(a) => tracing::debug!(
                target: "mcp_authz::access",
                decision = d,
                request.id = request_id,
                request.method = %input.method,
                resource = %a.resource,
                route = %a.route,
                reason,
                token.sub = %sub(a.principal.as_ref()),
                token.client_id = %client(a.principal.as_ref()),
                duration_us = micros,
                "check"
            ),
            Decision::Deny(x) => {
                let status = x.reason.shape().status;
                tracing::info!(
                    target: "mcp_authz::access",
                    decision = d,
                    request.id = request_id,
                    request.method = %input.method,
                    resource = x.resource.as_deref().unwrap_or("-"),
                    route = x.route.as_deref().unwrap_or("-"),
                    reason,
                    status,
                    token.sub = %sub(x.principal.as_ref()),
                    token.client_id = %client(x.principal.as_ref()),
                    duration_us = micros,
                    "check"
                );
                // Seed guide: "log authorization failures for security auditing". A step-up is
                // an elevation request: who, which client, and which scopes were challenged.
                tracing::info!(
                    target: "mcp_authz::audit",
                    reason,
                    request.id = request_id,
                    resource = x.resource.as_deref().unwrap_or("-"),
                    route = x.route.as_deref().unwrap_or("-"),
                    status,
                    step_up = x.reason == DenyReason::InsufficientScope,
                    scope = x.scope.as_deref().unwrap_or("-"),
                    token.sub = %sub(x.principal.as_ref()),
                    token.client_id = %client(x.principal.as_ref()),
                    token.scope = %x.principal.as_ref().map(|p| p.scopes.joined()).unwrap_or_default(),
                    "denied"
                );
            }
        }
    }
}
