//! Server-issued DPoP nonces (RFC 9449 §8, §9), stateless: a nonce is its issue time and an
//! HMAC-SHA-256 over it and the resource, under a key every replica shares
//! (`dpop.nonce_key_file`). Any replica can check any replica's nonce, and a proof carrying a
//! nonce can be no older than `nonce_seconds`, whichever replica sees it.

use aws_lc_rs::{constant_time, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Distinguishes this use of the key from any other.
const CONTEXT: &[u8] = b"mcp-authz dpop nonce v1\n";
/// Bytes of the MAC kept in a nonce (128 bits).
const TAG_BYTES: usize = 16;
/// How far a nonce's issue time may be ahead of this replica's clock (replicas' clocks differ).
const MAX_CLOCK_SKEW_SECONDS: u64 = 5;

pub use crate::config::NonceKey;

impl NonceKey {
    fn tag(&self, resource_id: &str, issued: u64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(self.hmac());
        ctx.update(CONTEXT);
        ctx.update(&(resource_id.len() as u64).to_be_bytes());
        ctx.update(resource_id.as_bytes());
        ctx.update(&issued.to_be_bytes());
        ctx.sign()
    }

    /// A nonce for `resource_id`, issued at `now`.
    pub fn issue(&self, resource_id: &str, now: u64) -> String {
        let mut raw = Vec::with_capacity(8 + TAG_BYTES);
        raw.extend_from_slice(&now.to_be_bytes());
        raw.extend_from_slice(&self.tag(resource_id, now).as_ref()[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` was issued for `resource_id` by a holder of this key, at most
    /// `lifetime` seconds before `now`.
    pub fn check(&self, resource_id: &str, nonce: &str, now: u64, lifetime: u64) -> bool {
        if nonce.len() > 64 {
            return false;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if raw.len() != 8 + TAG_BYTES {
            return false;
        }
        let (time, tag) = raw.split_at(8);
        let issued = u64::from_be_bytes(time.try_into().unwrap_or_default());
        if issued > now.saturating_add(MAX_CLOCK_SKEW_SECONDS)
            || now.saturating_sub(issued) > lifetime
        {
            return false;
        }
        let want = self.tag(resource_id, issued);
        constant_time::verify_slices_are_equal(&want.as_ref()[..TAG_BYTES], tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_verify_for_their_resource_key_and_lifetime_only() {
        let key = NonceKey::from_bytes(&[1u8; 32]).unwrap();
        let other = NonceKey::from_bytes(&[2u8; 32]).unwrap();
        let n = key.issue("files", 1000);
        assert!(key.check("files", &n, 1000, 60));
        assert!(key.check("files", &n, 1060, 60));
        assert!(!key.check("files", &n, 1061, 60));
        assert!(!key.check("other", &n, 1000, 60));
        assert!(!other.check("files", &n, 1000, 60));
        // Issued in the future beyond the skew allowance.
        assert!(!key.check("files", &key.issue("files", 1006), 1000, 60));
        assert!(key.check("files", &key.issue("files", 1005), 1000, 60));
        // Tampered time or tag.
        let mut raw = URL_SAFE_NO_PAD.decode(&n).unwrap();
        raw[7] ^= 1;
        assert!(!key.check("files", &URL_SAFE_NO_PAD.encode(&raw), 1000, 60));
        for bad in ["", "x", "!!!!", &"A".repeat(100)] {
            assert!(!key.check("files", bad, 1000, 60), "{bad}");
        }
        assert!(NonceKey::from_bytes(b" short \n").is_err());
        assert_eq!(format!("{key:?}"), "NonceKey(..)");
    }
}
