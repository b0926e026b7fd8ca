//! Binds an MCP session to the principal that opened it: the MCP server's `Mcp-Session-Id` is
//! wrapped, on the response path, into `mab1.<tag>.<id>` where `tag` is an HMAC-SHA256 over
//! (resource, iss, sub, client, id); on the request path mcp-authz recomputes the tag from the
//! caller's token and hands the MCP server its own id back, or refuses with 404.
//!
//! Why: MCP authorization "Session Hijacking" — servers MUST NOT use sessions for
//! authentication and SHOULD bind session ids to user-specific information. The gate never
//! sees responses, so the wrap is done by Envoy's ext_proc filter calling mcp-authz
//! (`extproc.rs`), and the binding is a MAC rather than a table: no state to share between
//! replicas, nothing to expire, any replica with the key verifies any session.

use std::fmt;
use std::path::Path;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::principal::Principal;

/// Prefix (and format version) of a wrapped session id.
const PREFIX: &str = "mab1.";
/// HMAC-SHA256, unpadded base64url.
const TAG_LEN: usize = 43;
/// Shortest key accepted: the HMAC-SHA256 output size (RFC 2104 §3).
pub const MIN_KEY_BYTES: usize = 32;
/// Longest server session id wrapped; longer ones are not bound (and so not usable).
const MAX_ID_BYTES: usize = 1024;
/// Domain separation: these MACs can never collide with another use of the same key.
const CONTEXT: &[u8] = b"mcp-authz session binding v1\n";

/// The session-binding key. `Debug` never prints it.
#[derive(Clone)]
pub struct SessionKey(hmac::Key);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// A key from its bytes; ASCII whitespace around it (a trailing newline in a file) is
    /// ignored. At least [`MIN_KEY_BYTES`].
    pub fn from_bytes(raw: &[u8]) -> Result<SessionKey, String> {
        let key = raw.trim_ascii();
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key has {} bytes; at least {MIN_KEY_BYTES} are needed (e.g. `openssl rand -base64 48`)",
                key.len()
            ));
        }
        Ok(SessionKey(hmac::Key::new(hmac::HMAC_SHA256, key)))
    }

    pub fn from_file(path: &Path) -> Result<SessionKey, String> {
        let raw =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        SessionKey::from_bytes(&raw)
    }

    pub fn from_env(var: &str) -> Result<SessionKey, String> {
        let raw = std::env::var_os(var).ok_or_else(|| format!("{var} is not set"))?;
        SessionKey::from_bytes(raw.as_encoded_bytes())
    }

    /// The id the client gets for the server's session `id`, opened by `binding`. `None` when
    /// `id` is not a session id the transport allows (visible ASCII, MCP Streamable HTTP
    /// "Session Management") or is too long: such a session is not handed out at all.
    pub fn wrap(&self, binding: &str, id: &str) -> Option<String> {
        if id.is_empty() || id.len() > MAX_ID_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.encode(hmac::sign(&self.0, &mac_input(binding, id)).as_ref());
        Some(format!("{PREFIX}{tag}.{id}"))
    }

    /// The server's session id inside `wrapped`, if `binding` opened it; `None` for every
    /// other value (another principal's session, a bare server id, a forged or altered tag).
    pub fn unwrap<'a>(&self, binding: &str, wrapped: &'a str) -> Option<&'a str> {
        let rest = wrapped.strip_prefix(PREFIX)?;
        let (tag, id) = (
            rest.get(..TAG_LEN)?,
            rest.get(TAG_LEN..)?.strip_prefix('.')?,
        );
        if id.is_empty() || id.len() > MAX_ID_BYTES || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Constant-time comparison (aws-lc's verify).
        hmac::verify(&self.0, &mac_input(binding, id), &tag).ok()?;
        Some(id)
    }
}

/// What is MACed. The binding is a JSON array (no raw newline inside), so binding and id
/// cannot be shifted into each other.
fn mac_input(binding: &str, id: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + binding.len() + 1 + id.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(binding.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(id.as_bytes());
    m
}

/// Who a session belongs to: the resource and the token's issuer, subject and client, as a
/// JSON array (missing claims are `null`, so "no subject" never equals an empty subject).
///
/// `None` for a token that names neither a subject nor a client: bound to (resource, `iss`)
/// alone, a session would be shared by every such token of the issuer, so none is opened for it
/// (the id is removed from the response; a presented id is `session_unknown`).
pub fn binding(resource: &str, p: &Principal) -> Option<String> {
    if p.subject.is_none() && p.client_id.is_none() {
        return None;
    }
    Some(serde_json::json!([resource, p.issuer, p.subject, p.client_id]).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scopes;

    fn principal(sub: Option<&str>, client: Option<&str>) -> Principal {
        Principal {
            issuer: "https://iam.example".into(),
            subject: sub.map(str::to_owned),
            client_id: client.map(str::to_owned),
            scopes: Scopes::parse_space("files:list"),
            expires_at: 0,
            cnf_jkt: None,
        }
    }

    #[test]
    fn a_session_opens_only_for_its_principal() {
        let key = SessionKey::from_bytes(&[7u8; 32]).expect("key");
        let alice = binding("files", &principal(Some("alice"), Some("app"))).expect("binds");
        let wrapped = key.wrap(&alice, "3f2c-session").expect("wraps");
        assert!(wrapped.starts_with(PREFIX));
        assert_eq!(key.unwrap(&alice, &wrapped), Some("3f2c-session"));
        for other in [
            principal(Some("bob"), Some("app")),
            principal(Some("alice"), Some("other-app")),
            principal(Some("alice"), None),
            principal(None, Some("app")),
        ] {
            let other = binding("files", &other).expect("binds");
            assert_eq!(key.unwrap(&other, &wrapped), None);
        }
        // Neither subject nor client: nothing to bind to, so no session at all.
        assert_eq!(binding("files", &principal(None, None)), None);
        assert_eq!(
            key.unwrap(
                &binding("admin", &principal(Some("alice"), Some("app"))).expect("binds"),
                &wrapped
            ),
            None
        );
        // Another key, a bare id, an altered id or tag, a merged duplicate header: all refused.
        let other_key = SessionKey::from_bytes(&[8u8; 32]).expect("key");
        assert_eq!(other_key.unwrap(&alice, &wrapped), None);
        assert_eq!(key.unwrap(&alice, "3f2c-session"), None);
        assert_eq!(key.unwrap(&alice, &wrapped.replace("3f2c", "3f2d")), None);
        let mut flipped = wrapped.clone().into_bytes();
        flipped[PREFIX.len()] = if flipped[PREFIX.len()] == b'A' {
            b'B'
        } else {
            b'A'
        };
        assert_eq!(
            key.unwrap(&alice, &String::from_utf8(flipped).expect("ascii")),
            None
        );
        assert_eq!(key.unwrap(&alice, &format!("{wrapped},{wrapped}")), None);
        assert_eq!(key.unwrap(&alice, ""), None);
        assert_eq!(key.unwrap(&alice, PREFIX), None);
    }

    #[test]
    fn only_transport_valid_ids_are_wrapped() {
        let key = SessionKey::from_bytes(&[7u8; 40]).expect("key");
        let b = binding("files", &principal(Some("a"), None)).expect("binds");
        for bad in ["", "a b", "a\r\nx: 1", "caf\u{e9}"] {
            assert_eq!(key.wrap(&b, bad), None, "{bad:?}");
        }
        assert_eq!(key.wrap(&b, &"x".repeat(MAX_ID_BYTES + 1)), None);
        let dotted = key.wrap(&b, "a.b.c").expect("wraps");
        assert_eq!(key.unwrap(&b, &dotted), Some("a.b.c"));
    }

    #[test]
    fn short_keys_are_refused_and_never_printed() {
        assert!(SessionKey::from_bytes(b"too short").is_err());
        assert!(SessionKey::from_bytes(b"   \n").is_err());
        let key = SessionKey::from_bytes(b"0123456789abcdef0123456789abcdef\n").expect("key");
        assert_eq!(format!("{key:?}"), "SessionKey(..)");
    }
}
