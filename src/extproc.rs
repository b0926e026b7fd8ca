//! The gRPC adapter for `envoy.service.ext_proc.v3.ExternalProcessor/Process`, response
//! headers only: wraps the `Mcp-Session-Id` an MCP server hands out into a value bound to the
//! principal ext_authz allowed (`session.rs`). Envoy forwards ext_authz's dynamic metadata
//! (`metadata_options.forwarding_namespaces`), so the principal comes from the decision on
//! the same HTTP stream, never from anything the client or the server sent.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use prost_types::value::Kind;
use tonic::{Request, Response, Status, Streaming};

use crate::authz::{EXT_AUTHZ_NAMESPACE, SESSION_BINDING_KEY, SESSION_HEADER};
use crate::check::Authorizer;
use crate::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, Metadata, header_value_option::HeaderAppendAction,
};
use crate::pb::envoy::service::ext_proc::v3::{
    CommonResponse, HeaderMutation, HeadersResponse, HttpHeaders, ProcessingRequest,
    ProcessingResponse, external_processor_server::ExternalProcessor, processing_request,
    processing_response,
};

pub use crate::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;

/// The tonic service. It reads the current configuration's session key on every message, so
/// a reload that rotates the key applies to the next response.
pub struct SessionProcessor {
    pub authorizer: Arc<Authorizer>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for SessionProcessor {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let authorizer = self.authorizer.clone();
        // One answer per message, in order (the ext_proc protocol outside full-duplex mode).
        let answers = futures_util::stream::unfold(
            (request.into_inner(), authorizer),
            |(mut inbound, authorizer)| async move {
                match inbound.message().await {
                    Ok(Some(msg)) => {
                        let answer = answer(&authorizer, msg);
                        Some((Ok(answer), (inbound, authorizer)))
                    }
                    // Envoy closed its side, or the stream broke: nothing more to answer.
                    Ok(None) | Err(_) => None,
                }
            },
        );
        Ok(Response::new(Box::pin(answers)))
    }
}

fn answer(authorizer: &Authorizer, msg: ProcessingRequest) -> ProcessingResponse {
    let ProcessingRequest {
        request,
        metadata_context,
        attributes: _,
        observability_mode: _,
    } = msg;
    match request {
        Some(processing_request::Request::ResponseHeaders(h)) => {
            let mutation = session_mutation(authorizer, &h, metadata_context.as_ref());
            headers_response(mutation, true)
        }
        // Not configured (request_header_mode: SKIP), but always answered: Envoy waits for it.
        Some(processing_request::Request::RequestHeaders(_)) | None => {
            headers_response(HeaderMutation::default(), false)
        }
    }
}

fn headers_response(mutation: HeaderMutation, response: bool) -> ProcessingResponse {
    let h = HeadersResponse {
        response: Some(CommonResponse {
            status: 0, // CONTINUE
            header_mutation: Some(mutation),
        }),
    };
    ProcessingResponse {
        response: Some(if response {
            processing_response::Response::ResponseHeaders(h)
        } else {
            processing_response::Response::RequestHeaders(h)
        }),
    }
}

/// Replace the server's `mcp-session-id` with its bound form, or remove it when it cannot be
/// bound (no principal: a public route or no session key; an id the transport forbids). A
/// session handed out unbound could be used by anyone who learns its id.
fn session_mutation(
    authorizer: &Authorizer,
    headers: &HttpHeaders,
    metadata: Option<&Metadata>,
) -> HeaderMutation {
    let Some(id) = header_value(headers, SESSION_HEADER) else {
        return HeaderMutation::default();
    };
    let config = authorizer.config.load();
    let wrapped = config.sessions.as_ref().and_then(|key| {
        let binding = binding_from(metadata)?;
        key.wrap(binding, &id)
    });
    match wrapped {
        Some(w) => HeaderMutation {
            set_headers: vec![HeaderValueOption {
                header: Some(HeaderValue {
                    key: SESSION_HEADER.to_owned(),
                    value: String::new(),
                    // ext_proc carries header values as raw bytes (HttpHeaders docs).
                    raw_value: w.into_bytes(),
                }),
                append: None,
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                keep_empty_value: false,
            }],
            remove_headers: vec![],
        },
        None => {
            tracing::info!(target: "mcp_authz::access", "session id not bound; removed from the response");
            HeaderMutation {
                set_headers: vec![],
                remove_headers: vec![SESSION_HEADER.to_owned()],
            }
        }
    }
}

fn header_value(headers: &HttpHeaders, name: &str) -> Option<String> {
    let map = headers.headers.as_ref()?;
    let mut found = map
        .headers
        .iter()
        .filter(|h| h.key.eq_ignore_ascii_case(name));
    let first = found.next()?;
    // Two session ids on one response: bind neither (the id the client would keep is unclear).
    if found.next().is_some() {
        return Some(String::new());
    }
    let HeaderValue {
        key: _,
        value,
        raw_value,
    } = first;
    Some(if raw_value.is_empty() {
        value.clone()
    } else {
        String::from_utf8(raw_value.clone()).unwrap_or_default()
    })
}

fn binding_from(metadata: Option<&Metadata>) -> Option<&str> {
    let ns = metadata?.filter_metadata.get(EXT_AUTHZ_NAMESPACE)?;
    match ns.fields.get(SESSION_BINDING_KEY)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s),
        _ => None,
    }
}
