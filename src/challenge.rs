//! Denial responses: HTTP status, RFC 6750 `WWW-Authenticate` challenge with the MCP
//! `resource_metadata` and `scope` attributes, and the JSON body — one exhaustive mapping.

use crate::dpop::DpopError;
use crate::mcp::BodyError;
use crate::mesh::DestinationError;
use crate::policy::McpDenial;
use crate::token::TokenError;

/// Why a request is denied. Each maps to exactly one status, error code and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No `Authorization` header, or one of another scheme (RFC 6750 §3.1: no error code).
    NoCredentials,
    /// `Bearer` with no token, two Authorization headers, or a token of invalid syntax.
    MalformedCredentials,
    /// `access_token` in the query string (MCP: tokens MUST NOT be sent in the URI).
    TokenInQuery,
    /// The bearer token was refused.
    Token(TokenError),
    /// The issuer's introspection endpoint says the token is not active (RFC 7662 §2.2):
    /// revoked, expired or unknown.
    TokenInactive,
    /// The token needs introspection and the endpoint cannot answer (unreachable, timeout,
    /// 5xx, not a JSON answer): fail closed.
    IntrospectionUnavailable,
    /// A valid token without every scope the operation needs.
    InsufficientScope,
    /// No route matched under default-deny.
    NoRoute,
    /// Envoy named a resource id that is not configured.
    UnknownResource,
    /// The path cannot be matched safely (encoded separators, bad escapes).
    BadPath,
    /// The JSON-RPC body the decision needs is unusable (400) or too large (413).
    Body(BodyError),
    /// An MCP rule refuses this method, tool, resource or prompt whatever the scopes (or the
    /// resource URI cannot be matched safely: 400).
    McpDenied(McpDenial),
    /// A body the decision needs arrives with a non-identity `Content-Encoding`: the server's
    /// HTTP stack would decompress what mcp-authz reads as bytes (RFC 9110 §8.4, §15.5.16).
    UnsupportedEncoding,
    /// `Mcp-Session-Id` is not a session this principal opened (another user's, a bare or
    /// forged id). 404: MCP Streamable HTTP "Session Management" — the client starts a new
    /// session; to this principal the session does not exist.
    UnknownSession,
    /// The resource chosen from `:authority` is not the one the receiving workload is bound
    /// to, or the workload's identity is unknown while bindings are configured (`mesh.rs`).
    /// 403 without a challenge: no token can fix it (contract §2, "policy forbids it").
    Destination(DestinationError),
    /// A DPoP proof, or the binding of a token to its key, was refused (RFC 9449 §7.1, §7.2).
    Dpop(DpopError),
    /// Something failed inside mcp-authz. Never an allow.
    Internal,
    /// The CheckRequest itself could not be decoded (a header value that is not UTF-8, a
    /// message over the decode limit): answered with a denial, never a gRPC error that a
    /// fail-open Envoy (`failure_mode_allow`) or Istio (`failOpen`) would turn into an allow.
    Undecodable,
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shape();
        write!(f, "{}: {}", s.label, s.description)
    }
}

/// What a denial looks like on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyShape {
    pub status: u16,
    /// RFC 6750 `error` value, when the response carries one.
    pub error: Option<&'static str>,
    /// Fixed `error_description` / JSON message (RFC 6750 §3 charset: no quotes or backslashes).
    pub description: &'static str,
    /// Whether a `WWW-Authenticate` challenge is sent.
    pub challenge: bool,
    /// Metric and log label.
    pub label: &'static str,
}

/// Seconds a client should wait when the issuer's keys are unavailable.
pub const RETRY_AFTER_SECONDS: u32 = 30;

impl DenyReason {
    /// The one place a reason becomes a response (contract §2, the decision matrix).
    pub fn shape(self) -> DenyShape {
        let s = |status, error, description, challenge, label| DenyShape {
            status,
            error,
            description,
            challenge,
            label,
        };
        let invalid = |description, label| s(401, Some("invalid_token"), description, true, label);
        match self {
            DenyReason::NoCredentials => s(
                401,
                None,
                "Authentication required. Use OAuth 2.0 with the authorization server listed in the Protected Resource Metadata.",
                true,
                "no_credentials",
            ),
            DenyReason::MalformedCredentials => s(
                400,
                Some("invalid_request"),
                "Malformed Authorization header",
                true,
                "malformed_credentials",
            ),
            DenyReason::TokenInQuery => s(
                400,
                Some("invalid_request"),
                "Access tokens are accepted only in the Authorization header",
                true,
                "token_in_query",
            ),
            DenyReason::Token(e) => match e {
                TokenError::Malformed => {
                    invalid("The access token is malformed", "token_malformed")
                }
                TokenError::TooLong => invalid("The access token is too long", "token_too_long"),
                TokenError::UnknownIssuer => invalid(
                    "The access token issuer is not trusted",
                    "token_unknown_issuer",
                ),
                TokenError::DisallowedAlg => invalid(
                    "The access token algorithm is not allowed",
                    "token_disallowed_alg",
                ),
                TokenError::UnknownKid => invalid(
                    "The access token signing key is unknown",
                    "token_unknown_kid",
                ),
                TokenError::BadSignature => invalid(
                    "The access token signature is invalid",
                    "token_bad_signature",
                ),
                TokenError::MissingExp => {
                    invalid("The access token has no expiry", "token_missing_exp")
                }
                TokenError::Expired => invalid("The access token expired", "token_expired"),
                TokenError::NotYetValid => {
                    invalid("The access token is not yet valid", "token_not_yet_valid")
                }
                TokenError::WrongAudience => invalid(
                    "The access token was not issued for this resource",
                    "token_wrong_audience",
                ),
                TokenError::NotAccessToken => {
                    invalid("The token is not an access token", "token_not_access_token")
                }
                TokenError::NoKeys => s(
                    503,
                    None,
                    "Token signing keys are temporarily unavailable",
                    false,
                    "no_signing_keys",
                ),
            },
            DenyReason::TokenInactive => {
                invalid("The access token is not active", "token_inactive")
            }
            DenyReason::IntrospectionUnavailable => s(
                503,
                None,
                "Token introspection is temporarily unavailable",
                false,
                "introspection_unavailable",
            ),
            DenyReason::InsufficientScope => s(
                403,
                Some("insufficient_scope"),
                "The access token lacks the scope this request requires",
                true,
                "insufficient_scope",
            ),
            DenyReason::NoRoute => s(
                403,
                None,
                "No policy allows this request",
                false,
                "no_route",
            ),
            DenyReason::UnknownResource => s(
                403,
                None,
                "No protected resource is configured for this request",
                false,
                "unknown_resource",
            ),
            DenyReason::Destination(DestinationError::Mismatch) => s(
                403,
                None,
                "The request host names another resource than the workload that received it",
                false,
                "destination_mismatch",
            ),
            DenyReason::Destination(DestinationError::Unauthenticated) => s(
                403,
                None,
                "The receiving workload is not identified (mutual TLS is required)",
                false,
                "destination_unauthenticated",
            ),
            DenyReason::BadPath => s(
                400,
                None,
                "The request path is not acceptable",
                false,
                "bad_path",
            ),
            DenyReason::Body(e) => {
                let bad = |description, label| s(400, None, description, false, label);
                match e {
                    BodyError::Missing => bad(
                        "The request body is required for this request",
                        "body_missing",
                    ),
                    BodyError::TooLarge => s(
                        413,
                        None,
                        "The request body is too large to authorize",
                        false,
                        "body_too_large",
                    ),
                    BodyError::NotJsonRpc => bad(
                        "The request body is not a JSON-RPC message",
                        "body_not_jsonrpc",
                    ),
                    BodyError::DuplicateKey => bad(
                        "The request body repeats a member name",
                        "body_duplicate_key",
                    ),
                    BodyError::TooDeep => bad("The request body nests too deeply", "body_too_deep"),
                    BodyError::BadBatch => {
                        bad("The request batch is empty or too long", "body_bad_batch")
                    }
                    BodyError::BadHeader => bad(
                        "The Mcp-Method or Mcp-Name header is malformed",
                        "mcp_header_malformed",
                    ),
                    BodyError::HeaderMismatch => bad(
                        "The Mcp-Method or Mcp-Name header does not match the body",
                        "mcp_header_mismatch",
                    ),
                    BodyError::TooManyMembers => bad(
                        "The request body has too many members to authorize",
                        "body_too_many_members",
                    ),
                }
            }
            DenyReason::McpDenied(d) => {
                let denied = |description, label| s(403, None, description, false, label);
                match d {
                    McpDenial::Method => denied("This MCP method is not allowed", "method_denied"),
                    McpDenial::Tool => denied("This MCP tool is not allowed", "tool_denied"),
                    McpDenial::Resource => {
                        denied("This MCP resource is not allowed", "resource_denied")
                    }
                    McpDenial::Prompt => denied("This MCP prompt is not allowed", "prompt_denied"),
                    McpDenial::BadUri(_) => s(
                        400,
                        None,
                        "The resource URI is not in a form that can be authorized",
                        false,
                        "resource_uri_ambiguous",
                    ),
                }
            }
            DenyReason::UnsupportedEncoding => s(
                415,
                None,
                "Request bodies must not be content-encoded on this route",
                false,
                "unsupported_encoding",
            ),
            DenyReason::UnknownSession => s(
                404,
                None,
                "Session not found. Start a new session with an initialize request",
                false,
                "session_unknown",
            ),
            DenyReason::Dpop(e) => {
                let proof = |description, label| {
                    s(401, Some("invalid_dpop_proof"), description, true, label)
                };
                match e {
                    DpopError::ProofMissing => {
                        proof("A DPoP proof header is required", "dpop_proof_missing")
                    }
                    DpopError::ProofMultiple => proof(
                        "Exactly one DPoP proof header is allowed",
                        "dpop_proof_multiple",
                    ),
                    DpopError::ProofMalformed => {
                        proof("The DPoP proof is malformed", "dpop_proof_malformed")
                    }
                    DpopError::ProofTyp => {
                        proof("The DPoP proof type is not dpop+jwt", "dpop_proof_typ")
                    }
                    DpopError::ProofAlg => {
                        proof("The DPoP proof algorithm is not allowed", "dpop_proof_alg")
                    }
                    DpopError::ProofKey => proof(
                        "The DPoP proof key is not a usable public key",
                        "dpop_proof_key",
                    ),
                    DpopError::ProofSignature => proof(
                        "The DPoP proof signature is invalid",
                        "dpop_proof_signature",
                    ),
                    DpopError::ProofJti => proof("The DPoP proof jti is invalid", "dpop_proof_jti"),
                    DpopError::ProofHtm => proof(
                        "The DPoP proof htm does not match the request",
                        "dpop_proof_htm",
                    ),
                    DpopError::ProofHtu => proof(
                        "The DPoP proof htu does not match the request",
                        "dpop_proof_htu",
                    ),
                    DpopError::ProofIat => {
                        proof("The DPoP proof is too old or too new", "dpop_proof_iat")
                    }
                    DpopError::ProofAth => proof(
                        "The DPoP proof ath does not match the access token",
                        "dpop_proof_ath",
                    ),
                    DpopError::ProofReplayed => {
                        proof("The DPoP proof was already used", "dpop_proof_replayed")
                    }
                    DpopError::UseNonce => s(
                        401,
                        Some("use_dpop_nonce"),
                        "Resource server requires nonce in DPoP proof",
                        true,
                        "dpop_nonce_required",
                    ),
                    DpopError::ReplayCacheFull => s(
                        503,
                        None,
                        "DPoP proofs cannot be checked for replay right now",
                        false,
                        "dpop_replay_cache_full",
                    ),
                    DpopError::ReplayStoreUnavailable => s(
                        503,
                        None,
                        "DPoP proofs cannot be checked for replay right now",
                        false,
                        "dpop_replay_store_unavailable",
                    ),
                    DpopError::TokenUnbound => invalid(
                        "The access token is not bound to a DPoP key",
                        "dpop_token_unbound",
                    ),
                    DpopError::KeyMismatch => invalid(
                        "The access token is bound to another key than the DPoP proof",
                        "dpop_key_mismatch",
                    ),
                    DpopError::BearerDowngrade => invalid(
                        "The access token is DPoP-bound and must be sent with the DPoP scheme",
                        "dpop_bearer_downgrade",
                    ),
                    DpopError::Required => invalid(
                        "This resource accepts only DPoP-bound access tokens",
                        "dpop_required",
                    ),
                }
            }
            DenyReason::Internal => s(500, None, "Authorization failed", false, "internal"),
            DenyReason::Undecodable => s(
                400,
                None,
                "The request cannot be authorized as sent",
                false,
                "undecodable_request",
            ),
        }
    }
}

/// The resource-specific parts of a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeTarget {
    pub realm: String,
    pub resource_metadata: String,
    /// Set when the resource takes DPoP (mode `allowed` or `required`).
    pub dpop: Option<DpopChallenge>,
}

/// The `DPoP` challenge of a resource that takes DPoP (RFC 9449 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopChallenge {
    /// `algs`: the proof algorithms, space-separated.
    pub algs: String,
    /// Mode `allowed`: the `Bearer` challenge is sent beside it.
    pub bearer_too: bool,
    /// The request used the `DPoP` scheme: its errors go on the `DPoP` challenge.
    pub request_used_dpop: bool,
    /// A fresh server nonce, sent as `DPoP-Nonce` (RFC 9449 §9).
    pub nonce: Option<String>,
}

/// A rendered denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// Render a denial. `scope` is the `scope=` attribute (space-separated, already restricted to
/// configured scope tokens, so it cannot carry quotes).
pub fn render(
    reason: DenyReason,
    target: Option<&ChallengeTarget>,
    scope: Option<&str>,
) -> DenyResponse {
    let shape = reason.shape();
    let mut headers: Vec<(&'static str, String)> = Vec::with_capacity(5);
    if shape.challenge
        && let Some(t) = target
    {
        headers.push((
            "www-authenticate",
            www_authenticate(reason, &shape, t, scope),
        ));
    }
    let nonce = target.and_then(|t| t.dpop.as_ref()?.nonce.as_deref());
    if let Some(n) = nonce {
        headers.push(("dpop-nonce", n.to_owned()));
    }
    headers.push(("content-type", "application/json".into()));
    headers.push(("cache-control", "no-store".into()));
    // Browser-based MCP clients must be able to read the challenge (MCP Inspector), and the
    // nonce they must put in their next proof.
    let expose = if nonce.is_some() {
        "WWW-Authenticate, DPoP-Nonce"
    } else {
        "WWW-Authenticate"
    };
    headers.push(("access-control-expose-headers", expose.into()));
    if shape.status == 503 {
        headers.push(("retry-after", RETRY_AFTER_SECONDS.to_string()));
    }
    let mut body = serde_json::Map::new();
    body.insert(
        "error".into(),
        shape.error.unwrap_or(json_error(shape.status)).into(),
    );
    body.insert("message".into(), shape.description.into());
    if let (Some(s), DenyReason::InsufficientScope) = (scope, reason) {
        body.insert("scope".into(), s.into());
    }
    DenyResponse {
        status: shape.status,
        headers,
        body: serde_json::Value::Object(body).to_string(),
    }
}

fn json_error(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        404 => "not_found",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        401 => "unauthorized",
        403 => "forbidden",
        503 => "unavailable",
        _ => "internal_error",
    }
}

/// RFC 6750 §3 + RFC 9728 §5.1 challenge; for a resource that takes DPoP, RFC 9449 §7.1's
/// `DPoP` challenge (with `algs`), alone (mode `required`) or after the `Bearer` one (mode
/// `allowed`), each with `realm` and `resource_metadata`. The error goes on the challenge of
/// the scheme it concerns: DPoP denials and denials of DPoP requests on `DPoP`, the rest on
/// `Bearer`.
///
/// Both challenges travel in one header value, comma-separated (RFC 9110 §11.6.1): Envoy's
/// denied-response headers are set with overwrite, so a second `WWW-Authenticate` would
/// replace the first, and fetch-based clients join repeated values the same way anyway.
/// `Bearer` comes first so clients that read only a leading `Bearer` challenge (the MCP
/// TypeScript SDK) still find `resource_metadata`.
fn www_authenticate(
    reason: DenyReason,
    shape: &DenyShape,
    t: &ChallengeTarget,
    scope: Option<&str>,
) -> String {
    let params = |with_error: bool| {
        let mut v = format!("realm=\"{}\"", t.realm);
        if let Some(e) = shape.error.filter(|_| with_error) {
            v.push_str(&format!(
                ", error=\"{e}\", error_description=\"{}\"",
                shape.description
            ));
        }
        if let Some(s) = scope.filter(|s| !s.is_empty()) {
            v.push_str(&format!(", scope=\"{s}\""));
        }
        v.push_str(&format!(", resource_metadata=\"{}\"", t.resource_metadata));
        v
    };
    let Some(d) = &t.dpop else {
        return format!("Bearer {}", params(true));
    };
    let dpop_side = d.request_used_dpop || matches!(reason, DenyReason::Dpop(_));
    let dpop = format!("DPoP algs=\"{}\", {}", d.algs, params(dpop_side));
    if d.bearer_too {
        format!("Bearer {}, {dpop}", params(!dpop_side))
    } else {
        dpop
    }
}

#[cfg(test)]
#[path = "challenge_tests.rs"]
mod tests;
