//! DPoP-bound access tokens at the resource server (RFC 9449): which scheme a resource takes,
//! the proof checked against the request (`proof.rs`), the token bound to the proof's key
//! (`cnf.jkt`, §6), and each proof accepted once (`replay.rs`, §11.1). The Check pipeline
//! calls [`check_proof`] before the token is validated and [`Dpop::bind`] after.

use std::sync::Arc;

use crate::config::{DpopMode, Resource};
use crate::metrics::Metrics;

pub mod nonce;
pub mod proof;
pub mod replay;
pub mod store;

pub use proof::{Expected, VerifiedProof};
use replay::{ReplayCache, ReplayError};
use store::{SharedStore, StoreAnswer};

/// Why a DPoP request, or a bound token, was refused. Every variant has its own response
/// (`challenge.rs`): proof problems are `invalid_dpop_proof`, token and binding problems
/// `invalid_token` (RFC 9449 §7.1, §12.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("no DPoP proof header")]
    ProofMissing,
    #[error("more than one DPoP proof header")]
    ProofMultiple,
    #[error("DPoP proof is not a well-formed compact JWS")]
    ProofMalformed,
    #[error("DPoP proof typ is not dpop+jwt")]
    ProofTyp,
    #[error("DPoP proof algorithm is not allowed for this resource or key")]
    ProofAlg,
    #[error("DPoP proof jwk is not a usable public key")]
    ProofKey,
    #[error("DPoP proof signature is invalid")]
    ProofSignature,
    #[error("DPoP proof jti is missing or too long")]
    ProofJti,
    #[error("DPoP proof htm is not the request method")]
    ProofHtm,
    #[error("DPoP proof htu is not the request URI")]
    ProofHtu,
    #[error("DPoP proof iat is outside the accepted window")]
    ProofIat,
    #[error("DPoP proof ath is not the hash of the access token")]
    ProofAth,
    #[error("DPoP proof was already used")]
    ProofReplayed,
    #[error("DPoP proof has no valid server-issued nonce")]
    UseNonce,
    #[error("DPoP replay cache is full")]
    ReplayCacheFull,
    #[error("DPoP shared replay store is unavailable")]
    ReplayStoreUnavailable,
    #[error("token presented with DPoP is not bound to a key (no cnf.jkt)")]
    TokenUnbound,
    #[error("token is bound to another key than the proof's")]
    KeyMismatch,
    #[error("DPoP-bound token presented as a bearer token")]
    BearerDowngrade,
    #[error("this resource accepts only DPoP-bound tokens")]
    Required,
}

impl DpopError {
    /// Errors about the proof (RFC 9449 §7.1 `invalid_dpop_proof`), as opposed to the token.
    pub fn is_proof(self) -> bool {
        !matches!(
            self,
            DpopError::ReplayCacheFull
                | DpopError::ReplayStoreUnavailable
                | DpopError::TokenUnbound
                | DpopError::KeyMismatch
                | DpopError::BearerDowngrade
                | DpopError::Required
        )
    }
}

/// The proof of a request, checked before its token (RFC 9449 §7.1): `None` when the request
/// uses `Bearer` (`dpop_scheme` false) on a resource that takes it (mode `off` or `allowed`).
pub fn check_proof(
    resource: &Resource,
    dpop_scheme: bool,
    proof_header: Option<&str>,
    expected: &Expected<'_>,
) -> Result<Option<VerifiedProof>, DpopError> {
    match (resource.dpop.mode, dpop_scheme) {
        (DpopMode::Required, false) => Err(DpopError::Required),
        (_, false) => Ok(None),
        (_, true) => {
            let proof = proof::single_proof(proof_header)?;
            let p = proof::verify(proof, expected, &resource.dpop)?;
            // RFC 9449 §9: with nonces required, a proof without a current one is refused
            // with `use_dpop_nonce` and a fresh `DPoP-Nonce`.
            if let Some(n) = &resource.dpop.nonce {
                let ok = p
                    .nonce
                    .as_deref()
                    .is_some_and(|v| n.key.check(&resource.id, v, expected.now, n.seconds));
                if !ok {
                    return Err(DpopError::UseNonce);
                }
            }
            Ok(Some(p))
        }
    }
}

/// A fresh nonce for `resource` (RFC 9449 §9 `DPoP-Nonce`), when it requires them.
pub fn fresh_nonce(resource: &Resource, now: u64) -> Option<String> {
    resource
        .dpop
        .nonce
        .as_ref()
        .map(|n| n.key.issue(&resource.id, now))
}

/// RFC 9449 §6, §7.2: the token's `cnf.jkt` and the proof's key. A bound token without a
/// proof is a downgrade whatever the mode; a proof with an unbound token binds nothing.
pub fn check_binding(
    cnf_jkt: Option<&str>,
    proof: Option<&VerifiedProof>,
) -> Result<(), DpopError> {
    match (cnf_jkt, proof) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(DpopError::BearerDowngrade),
        (None, Some(_)) => Err(DpopError::TokenUnbound),
        (Some(jkt), Some(p)) if jkt == p.jkt => Ok(()),
        (Some(_), Some(_)) => Err(DpopError::KeyMismatch),
    }
}

/// DPoP state: one replica-local replay cache per resource, and the shared stores, each
/// created on first use.
pub struct Dpop {
    caches: papaya::HashMap<String, Arc<ReplayCache>>,
    /// By URL (a reload that changes the timeout replaces the store).
    stores: papaya::HashMap<String, Arc<SharedStore>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Dpop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dpop")
            .field("resources", &self.caches.len())
            .finish()
    }
}

impl Dpop {
    pub fn new(metrics: Metrics) -> Dpop {
        Dpop {
            caches: papaya::HashMap::new(),
            stores: papaya::HashMap::new(),
            metrics,
        }
    }

    /// This resource's replay cache. A reload that changes its size starts a new one (the
    /// old entries are dropped: proofs seen just before a resize could be replayed once).
    pub fn replay_cache(&self, resource: &Resource) -> Arc<ReplayCache> {
        let capacity = resource.dpop.replay_cache_entries;
        let caches = self.caches.pin();
        // No allocation on the usual path: the cache exists with this size.
        if let Some(c) = caches.get(resource.id.as_str())
            && c.capacity() == capacity
        {
            return c.clone();
        }
        let current =
            caches.get_or_insert_with(resource.id.clone(), || Arc::new(ReplayCache::new(capacity)));
        if current.capacity() == capacity {
            return current.clone();
        }
        let fresh = Arc::new(ReplayCache::new(capacity));
        caches.insert(resource.id.clone(), fresh.clone());
        fresh
    }

    /// The shared store of `resource`, when it has one.
    fn store(&self, resource: &Resource) -> Option<Arc<SharedStore>> {
        let s = resource.dpop.replay_store.as_ref()?;
        let stores = self.stores.pin();
        if let Some(found) = stores.get(s.url.as_str())
            && found.timeout_ms() == s.timeout_ms
        {
            return Some(found.clone());
        }
        let fresh = Arc::new(SharedStore::new(s)?);
        stores.insert(s.url.clone(), fresh.clone());
        Some(fresh)
    }

    /// After the token: binding (`check_binding`), then the proof recorded so it is accepted
    /// once: in this replica's cache, then (when configured) in the shared store, which
    /// catches a proof replayed to another replica. Recorded last, so only a proof that would
    /// otherwise be accepted uses up its `jti`.
    pub async fn bind(
        &self,
        resource: &Resource,
        cnf_jkt: Option<&str>,
        proof: Option<&VerifiedProof>,
        now: u64,
    ) -> Result<(), DpopError> {
        check_binding(cnf_jkt, proof)?;
        let Some(p) = proof else { return Ok(()) };
        let key = ReplayCache::key(&resource.id, &p.jkt, &p.jti);
        let until = p
            .iat
            .saturating_add(resource.dpop.iat_window_seconds)
            .saturating_add(1);
        self.replay_cache(resource)
            .record(key, until, now)
            .map_err(|e| match e {
                ReplayError::Replayed => DpopError::ProofReplayed,
                ReplayError::Full => DpopError::ReplayCacheFull,
            })?;
        let Some(store) = self.store(resource) else {
            return Ok(());
        };
        let ttl_ms = until.saturating_sub(now).max(1).saturating_mul(1000);
        match store.record(&key, ttl_ms).await {
            Ok(StoreAnswer::First) => Ok(()),
            Ok(StoreAnswer::Seen) => Err(DpopError::ProofReplayed),
            Err(()) => Err(DpopError::ReplayStoreUnavailable),
        }
    }

    /// Count a proof's outcome (`mcp_authz_dpop_proofs_total`): `ok` or the denial label.
    pub fn outcome(&self, label: &'static str) {
        self.metrics.dpop_proof(label);
    }

    /// Drop expired replay entries (run periodically).
    pub fn sweep(&self, now: u64) {
        for (_, c) in self.caches.pin().iter() {
            c.sweep(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(jkt: &str) -> VerifiedProof {
        VerifiedProof {
            jkt: jkt.into(),
            jti: "j".into(),
            iat: 0,
            alg: crate::config::Alg::ES256,
            nonce: None,
        }
    }

    #[test]
    fn binding_table() {
        assert_eq!(check_binding(None, None), Ok(()));
        assert_eq!(
            check_binding(Some("a"), None),
            Err(DpopError::BearerDowngrade)
        );
        assert_eq!(
            check_binding(None, Some(&proof("a"))),
            Err(DpopError::TokenUnbound)
        );
        assert_eq!(check_binding(Some("a"), Some(&proof("a"))), Ok(()));
        assert_eq!(
            check_binding(Some("a"), Some(&proof("b"))),
            Err(DpopError::KeyMismatch)
        );
    }
}
