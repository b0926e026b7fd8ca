//! One RFC 7662 §2.1 call: a form POST of the token with the client authenticated per
//! RFC 6749 §2.3.1, and the answer read as RFC 7662 §2.2 requires — HTTP 200, a JSON object,
//! `application/json`, no larger than [`MAX_RESPONSE_BYTES`]. Anything else is a failure of
//! the endpoint (the Check is answered 503), never a judgement of the token.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use url::Url;

use crate::config::{AuthMethod, IntrospectionSettings};

/// Largest introspection answer read; a token's claims fit many times over.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Why an endpoint gave no usable answer. Carries no response text: it may echo the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the introspection endpoint could not be reached")]
    Unreachable,
    #[error("the introspection endpoint answered with HTTP status {0}")]
    Status(u16),
    #[error("the introspection answer is not application/json")]
    ContentType,
    #[error("the introspection answer is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("the introspection answer is not a JSON object")]
    NotJson,
    #[error("the introspection endpoint did not answer in time")]
    Timeout,
    #[error("no introspection endpoint was found in the issuer's metadata")]
    NoEndpoint,
}

/// RFC 6749 §2.3.1: the client id and secret are form-urlencoded before they become the
/// Basic credentials (so a `:` in the id cannot shift the split).
pub fn basic_credentials(client_id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(client_id), enc(secret)))
    )
}

/// The form body: `token` and the `access_token` hint (RFC 7662 §2.1), plus the client
/// credentials for `client_secret_post`.
pub fn form(settings: &IntrospectionSettings, token: &str) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token)
        .append_pair("token_type_hint", "access_token");
    if settings.auth_method == AuthMethod::ClientSecretPost {
        form.append_pair("client_id", &settings.client_id)
            .append_pair("client_secret", settings.secret.expose());
    }
    form.finish()
}

/// Introspect `token` at `endpoint`. The caller bounds the time.
pub async fn call(
    http: &reqwest::Client,
    endpoint: &Url,
    settings: &IntrospectionSettings,
    token: &str,
) -> Result<Map<String, Value>, CallError> {
    let mut req = http
        .post(endpoint.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(form(settings, token));
    if settings.auth_method == AuthMethod::ClientSecretBasic {
        req = req.header(
            "authorization",
            basic_credentials(&settings.client_id, settings.secret.expose()),
        );
    }
    let mut resp = req.send().await.map_err(|_| CallError::Unreachable)?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(CallError::Status(resp.status().as_u16()));
    }
    if !is_json(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
    ) {
        return Err(CallError::ContentType);
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(CallError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| CallError::Unreachable)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(CallError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    parse(&body)
}

/// The answer as a JSON object (RFC 7662 §2.2).
pub fn parse(body: &[u8]) -> Result<Map<String, Value>, CallError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(CallError::NotJson),
    }
}

/// `application/json`, parameters allowed (RFC 7662 §2.2, RFC 9110 §8.3.1: case-insensitive).
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        // RFC 6749 §2.3.1 / Appendix B: encode, then join with ':'.
        assert_eq!(
            basic_credentials("a:b", "s p&c"),
            format!("Basic {}", STANDARD.encode("a%3Ab:s+p%26c"))
        );
    }

    #[test]
    fn content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(!is_json(Some("text/html")));
        assert!(!is_json(Some("application/jsonx")));
        assert!(!is_json(None));
    }

    #[test]
    fn answers_must_be_objects() {
        assert!(parse(br#"{"active":true}"#).is_ok());
        for bad in [&b"[]"[..], b"true", b"<html>", b"", b"{\"active\":"] {
            assert_eq!(parse(bad), Err(CallError::NotJson));
        }
    }
}
