//! Who a request acts for: the facts a valid access token establishes (issuer, subject,
//! client, scopes, expiry). Produced by `token`, read by the decision, the token cache, session
//! binding and the identity headers; it depends on nothing but `scope`, so every one of them
//! can use it without depending on token validation.

use crate::scope::Scopes;

/// The facts a valid token establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub issuer: String,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Scopes,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// RFC 9449 §6: the SHA-256 thumbprint of the key the token is bound to (`cnf.jkt`, in
    /// the JWT or the introspection answer). A bound token is accepted only with a DPoP proof
    /// signed by that key.
    pub cnf_jkt: Option<String>,
}
