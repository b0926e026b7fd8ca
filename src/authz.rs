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
use crate::logfmt::Escaped;
use crate::metrics::Metrics;
use crate::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use crate::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    attribute_context::{HttpRequest, Peer, Request as AttrRequest},
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
        let decision = AssertUnwindSafe(async {
            #[cfg(debug_assertions)]
            fault::panic_if_armed(&request_id);
            self.authorizer.decide(&input, now).await
        })
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
        destination,
    } = req.attributes.unwrap_or_default();
    let Peer {
        principal: destination_principal,
        address: _,
        service: _,
        labels: _,
        certificate: _,
    } = destination.unwrap_or_default();
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
            destination_principal,
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
                    upstream_headers(&config.identity, a.principal.as_ref(), a.identity_stripped);
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
                    && let Some(binding) = a
                        .principal
                        .as_ref()
                        .and_then(|p| session::binding(&a.resource, p))
                {
                    metadata
                        .get_or_insert_with(Struct::default)
                        .fields
                        .insert(SESSION_BINDING_KEY.to_owned(), string_value(&binding));
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
        // Claims and request fields are attacker-chosen: escaped in both log formats
        // (crate::logfmt), so a `sub` with a newline cannot forge a line.
        fn sub(p: Option<&crate::token::Principal>) -> Escaped<'_> {
            Escaped(p.and_then(|p| p.subject.as_deref()).unwrap_or("-"))
        }
        fn client(p: Option<&crate::token::Principal>) -> Escaped<'_> {
            Escaped(p.and_then(|p| p.client_id.as_deref()).unwrap_or("-"))
        }
        let request_id = Escaped(request_id);
        let method = Escaped(&input.method);
        match decision {
            // Allows are debug so a busy mesh does not log every request; enable them with
            // RUST_LOG=info,mcp_authz::access=debug.
            Decision::Allow(a) => tracing::debug!(
                target: "mcp_authz::access",
                decision = d,
                request.id = %request_id,
                request.method = %method,
                resource = %Escaped(&a.resource),
                route = %Escaped(&a.route),
                reason,
                token.sub = %sub(a.principal.as_ref()),
                token.client_id = %client(a.principal.as_ref()),
                duration_us = micros,
                "check"
            ),
            Decision::Deny(x) => {
                let status = x.reason.shape().status;
                let resource = Escaped(x.resource.as_deref().unwrap_or("-"));
                let route = Escaped(x.route.as_deref().unwrap_or("-"));
                tracing::info!(
                    target: "mcp_authz::access",
                    decision = d,
                    request.id = %request_id,
                    request.method = %method,
                    resource = %resource,
                    route = %route,
                    reason,
                    status,
                    token.sub = %sub(x.principal.as_ref()),
                    token.client_id = %client(x.principal.as_ref()),
                    duration_us = micros,
                    "check"
                );
                // Seed guide: "log authorization failures for security auditing". A step-up is
                // an elevation request: who, which client, and which scopes were challenged.
                let scopes = x
                    .principal
                    .as_ref()
                    .map(|p| p.scopes.joined())
                    .unwrap_or_default();
                tracing::info!(
                    target: "mcp_authz::audit",
                    reason,
                    request.id = %request_id,
                    resource = %resource,
                    route = %route,
                    status,
                    step_up = x.reason == DenyReason::InsufficientScope,
                    scope = %Escaped(x.scope.as_deref().unwrap_or("-")),
                    token.sub = %sub(x.principal.as_ref()),
                    token.client_id = %client(x.principal.as_ref()),
                    token.scope = %Escaped(&scopes),
                    "denied"
                );
            }
        }
    }
}

/// The one RPC Envoy calls; any other path keeps tonic's own answer (`UNIMPLEMENTED`).
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Largest CheckRequest the service decodes (defined beside the `envoy.max_request_bytes`
/// bound derived from it). Larger ones are denied.
pub use crate::config::MAX_CHECK_MESSAGE_BYTES;

/// Wraps the Check service so that every request reaching it gets a denial CheckResponse when
/// the generated server would answer with a gRPC error instead: a CheckRequest tonic cannot
/// decode (a `string` field that is not UTF-8 — proto3 requires it, Envoy forwards header
/// bytes as they came), one over [`MAX_CHECK_MESSAGE_BYTES`], an unsupported compression, or
/// a panic anywhere in the adapter. An Envoy with `failure_mode_allow: true` (Istio
/// `failOpen`) turns any gRPC error into an allow (envoy ext_authz filter docs), so an error
/// must never leave this service for a Check.
#[derive(Clone)]
pub struct DenyUndecodable<S> {
    inner: S,
    service: Arc<AuthzService>,
}

impl<S> DenyUndecodable<S> {
    pub fn new(inner: S, authorizer: Arc<Authorizer>, metrics: Metrics) -> Self {
        DenyUndecodable {
            inner,
            service: Arc::new(AuthzService {
                authorizer,
                metrics,
            }),
        }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for DenyUndecodable<S> {
    const NAME: &'static str = S::NAME;
}

type HttpResponse_ = tonic::codegen::http::Response<tonic::body::Body>;

impl<S> tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>>
    for DenyUndecodable<S>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = HttpResponse_,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = HttpResponse_;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<HttpResponse_, std::convert::Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let started = Instant::now();
        let check = req.uri().path() == CHECK_PATH;
        let service = self.service.clone();
        let inner = AssertUnwindSafe(self.inner.call(req)).catch_unwind();
        Box::pin(async move {
            let failure = match inner.await {
                Ok(Ok(resp)) => match grpc_error(&resp) {
                    Some(e) if check => e,
                    _ => return Ok(resp),
                },
                Ok(Err(never)) => match never {},
                Err(_) if check => "panic in the Check adapter".to_owned(),
                // Not a Check: no answer shape to give; an empty 500 ends the stream.
                Err(_) => return Ok(tonic::Status::internal("internal").into_http()),
            };
            tracing::warn!(
                target: "mcp_authz::access",
                error = %Escaped(&failure),
                "undecodable CheckRequest denied"
            );
            let decision = Decision::Deny(Denied {
                reason: DenyReason::Undecodable,
                ..Denied::internal()
            });
            let answer = service.to_response(&decision);
            service.record(&decision, "-", &CheckInput::default(), started);
            Ok(unary_ok(&answer))
        })
    }
}

/// The gRPC error a trailers-only response carries (tonic answers a decode failure that
/// way: `grpc-status` in the headers), if any.
fn grpc_error(resp: &HttpResponse_) -> Option<String> {
    let code = resp.headers().get("grpc-status")?;
    if code.as_bytes() == b"0" {
        return None;
    }
    let message = resp
        .headers()
        .get("grpc-message")
        .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
        .unwrap_or_default();
    Some(format!(
        "grpc-status {} {}",
        String::from_utf8_lossy(code.as_bytes()),
        message
    ))
}

/// A complete unary gRPC answer: one uncompressed length-prefixed message (gRPC over HTTP/2
/// spec, "Length-Prefixed-Message"), then `grpc-status: 0` in the trailers.
fn unary_ok(message: &CheckResponse) -> HttpResponse_ {
    use prost::Message as _;
    use tonic::codegen::http;
    let encoded = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + encoded.len());
    frame.push(0);
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = UnaryBody {
        data: Some(tonic::codegen::Bytes::from(frame)),
        trailers: Some(trailers),
    };
    let mut resp = http::Response::new(tonic::body::Body::new(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// One data frame, then the trailers.
struct UnaryBody {
    data: Option<tonic::codegen::Bytes>,
    trailers: Option<tonic::codegen::http::HeaderMap>,
}

impl http_body::Body for UnaryBody {
    type Data = tonic::codegen::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        std::task::Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(http_body::Frame::trailers(t))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// Test-only fault injection, compiled into debug builds only (release builds, the container
/// image and benchmarks have none of it): no configuration field, header or request reaches
/// it; only a test linking the library can arm it, with a request id of its choosing, so that
/// the fail-closed row "a panic inside the decision → 500 `internal`" has a test.
#[cfg(debug_assertions)]
#[doc(hidden)]
pub mod fault {
    use std::sync::OnceLock;

    static PANIC_ON_REQUEST_ID: OnceLock<String> = OnceLock::new();

    /// Make every Check whose `x-request-id` is `id` panic inside the decision. Once per
    /// process; the id should be unguessable so no other test's traffic trips it.
    pub fn arm_panic_for_request_id(id: String) {
        PANIC_ON_REQUEST_ID
            .set(id)
            .expect("the panic trigger is armed once per process");
    }

    pub(super) fn panic_if_armed(request_id: &str) {
        if PANIC_ON_REQUEST_ID.get().is_some_and(|id| id == request_id) {
            panic!("fault injection: test-only panic inside the decision");
        }
    }
}
