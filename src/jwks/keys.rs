//! JWKS documents read key by key (RFC 7517): which keys are usable, which are skipped and
//! why, each key parsed once into verification material bound to its own type and `alg`, and
//! the key set the Check path picks candidates from.
//!
//! Post-quantum keys: ML-DSA-65 (FIPS 204) in exactly two spellings, Hanzo IAM's
//! (`kty: "MLDSA"`, `alg: "MLDSA65"`, raw public key in `x`) and draft-ietf-cose-dilithium's
//! JOSE one (`kty: "AKP"`, `alg: "ML-DSA-65"`, raw public key in `pub`), each only with its
//! own `alg`; ML-DSA-44 and ML-DSA-87 in the JOSE spelling only (`ML-DSA-44`, `ML-DSA-87`).

use std::time::Instant;

use aws_lc_rs::signature::{
    self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents, VerificationAlgorithm,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use serde_json::Value;

use crate::config::Alg;

/// The key type a JWK holds; decides which algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
    /// ML-DSA-65 published as Hanzo IAM does: `kty: "MLDSA"`, verifies only `MLDSA65`.
    MlDsa65Hanzo,
    /// ML-DSA-65 published as draft-ietf-cose-dilithium does: `kty: "AKP"`, verifies only
    /// `ML-DSA-65`.
    MlDsa65Akp,
    /// ML-DSA-44 in the draft's spelling (`kty: "AKP"`, `alg: "ML-DSA-44"`).
    MlDsa44Akp,
    /// ML-DSA-87 in the draft's spelling (`kty: "AKP"`, `alg: "ML-DSA-87"`).
    MlDsa87Akp,
}

impl KeyKind {
    /// RFC 7518 §3: the algorithms each key type can verify. Anything else is refused, so a
    /// token cannot pick HS256 against a public key or ES256 against an RSA key.
    pub fn supports(self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (
                KeyKind::Rsa,
                Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
            ) | (KeyKind::P256, Alg::ES256)
                | (KeyKind::P384, Alg::ES384)
                | (KeyKind::Ed25519, Alg::EdDSA)
                | (KeyKind::MlDsa65Hanzo, Alg::MLDSA65)
                | (KeyKind::MlDsa65Akp, Alg::ML_DSA_65)
                | (KeyKind::MlDsa44Akp, Alg::ML_DSA_44)
                | (KeyKind::MlDsa87Akp, Alg::ML_DSA_87)
        )
    }
}

/// One usable verification key.
pub struct Key {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The JWK's own `alg`, when it names one: then only that algorithm verifies with it.
    pub alg: Option<Alg>,
    /// EC and Ed25519 keys, verified through jsonwebtoken (which has no ML-DSA).
    decoding: Option<DecodingKey>,
    /// RSA and ML-DSA keys parsed once per algorithm they accept: jsonwebtoken rebuilds an
    /// RSA key from `n`/`e` on every verification, ~18 % of an RS256 check
    /// (benches/BENCHMARKS.md §1), and has no ML-DSA at all.
    parsed: ParsedKeys,
    /// SHA-256 of the public key material (type, curve, decoded components): what the
    /// key-set fingerprint compares, so a key replaced under the same `kid` is a new set.
    material: [u8; 32],
}

/// A public key parsed once for each algorithm it verifies.
type ParsedKeys = Vec<(Alg, ParsedPublicKey)>;

/// Digest of a key's type and decoded public components, each length-prefixed so no two
/// different keys share an encoding.
fn material_digest(kty: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in std::iter::once(kty.as_bytes()).chain(parts.iter().copied()) {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl Key {
    pub fn accepts(&self, alg: Alg) -> bool {
        self.kind.supports(alg) && self.alg.is_none_or(|a| a == alg)
    }

    /// Verify `signature` (raw bytes) over `message` with this key and `alg`; `false` for any
    /// failure, including an algorithm the key does not accept.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        if let Some((_, parsed)) = self.parsed.iter().find(|(a, _)| *a == alg) {
            return parsed.verify_sig(message, signature).is_ok();
        }
        // EC and Ed25519: jsonwebtoken's aws-lc-rs verifier (parsing once gains nothing there).
        let (Some(decoding), Some(jwt)) = (&self.decoding, jwt_alg(alg)) else {
            return false;
        };
        let provider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
        (provider.verifier_factory)(&jwt, decoding)
            .is_ok_and(|v| v.verify(message, &signature.to_vec()).is_ok())
    }
}

/// aws-lc-rs parameters jsonwebtoken's aws_lc_rs backend uses for each RSA algorithm.
fn rsa_params(alg: Alg) -> Option<&'static RsaParameters> {
    Some(match alg {
        Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Alg::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Alg::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Alg::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Alg::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Alg::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        Alg::ES256
        | Alg::ES384
        | Alg::EdDSA
        | Alg::MLDSA65
        | Alg::ML_DSA_65
        | Alg::ML_DSA_44
        | Alg::ML_DSA_87 => return None,
    })
}

/// One ML-DSA parameter set: its public-key size (FIPS 204 Table 2: 1,312, 1,952 and 2,592
/// bytes for ML-DSA-44/65/87) and aws-lc-rs verifier. The size is checked before parsing, so
/// only the raw encoding is taken (aws-lc-rs would also take an X.509 SubjectPublicKeyInfo).
struct MlDsaSet {
    kind: KeyKind,
    public_key_bytes: usize,
    verification: &'static dyn VerificationAlgorithm,
}

/// The parameter set an ML-DSA algorithm names; `None` for every other algorithm.
fn ml_dsa_set(alg: Alg) -> Option<MlDsaSet> {
    let (kind, public_key_bytes, verification): (_, _, &'static dyn VerificationAlgorithm) =
        match alg {
            Alg::MLDSA65 => (KeyKind::MlDsa65Hanzo, 1952, &signature::ML_DSA_65),
            Alg::ML_DSA_65 => (KeyKind::MlDsa65Akp, 1952, &signature::ML_DSA_65),
            Alg::ML_DSA_44 => (KeyKind::MlDsa44Akp, 1312, &signature::ML_DSA_44),
            Alg::ML_DSA_87 => (KeyKind::MlDsa87Akp, 2592, &signature::ML_DSA_87),
            _ => return None,
        };
    Some(MlDsaSet {
        kind,
        public_key_bytes,
        verification,
    })
}

/// Parse an ML-DSA JWK's raw public key (base64url in `member`: `x` for Hanzo IAM, `pub` for
/// draft-ietf-cose-dilithium). The JWK's own `alg` is required and must be one of `spellings`:
/// the draft makes `alg` REQUIRED for `AKP` keys (the key type alone does not say which
/// parameter set), and Hanzo IAM always sends it. The key then verifies that algorithm only.
fn ml_dsa(
    alg: Option<Alg>,
    spellings: &[Alg],
    encoded: Option<&str>,
    kty: &str,
) -> Result<(KeyKind, ParsedKeys, [u8; 32]), SkipReason> {
    let alg = alg.ok_or(SkipReason::Malformed)?;
    if !spellings.contains(&alg) {
        return Err(SkipReason::UnsupportedAlg);
    }
    let set = ml_dsa_set(alg).ok_or(SkipReason::UnsupportedAlg)?;
    let raw = encoded
        .and_then(|x| URL_SAFE_NO_PAD.decode(x).ok())
        .filter(|b| b.len() == set.public_key_bytes)
        .ok_or(SkipReason::Malformed)?;
    let parsed = ParsedPublicKey::new(set.verification, &raw).map_err(|_| SkipReason::Malformed)?;
    Ok((set.kind, vec![(alg, parsed)], material_digest(kty, &[&raw])))
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish()
    }
}

/// Why a JWK was skipped (metric label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    UnsupportedKty,
    Symmetric,
    EncryptionKey,
    UnsupportedAlg,
    UnsupportedCurve,
    WeakRsa,
    Malformed,
}

impl SkipReason {
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::UnsupportedKty => "unsupported_kty",
            SkipReason::Symmetric => "symmetric",
            SkipReason::EncryptionKey => "encryption_key",
            SkipReason::UnsupportedAlg => "unsupported_alg",
            SkipReason::UnsupportedCurve => "unsupported_curve",
            SkipReason::WeakRsa => "weak_rsa",
            SkipReason::Malformed => "malformed",
        }
    }
}

/// Keys left out of a set: their `kid` (if any) and why.
pub type Skipped = Vec<(Option<String>, SkipReason)>;

/// An immutable, parsed key set.
#[derive(Debug)]
pub struct KeySet {
    pub keys: Vec<Key>,
    pub skipped: Skipped,
    /// When these keys were last confirmed by a successful fetch.
    pub confirmed_at: Instant,
    /// Increments on every successful fetch whose keys differ from the previous set.
    pub generation: u64,
}

impl KeySet {
    /// Candidate keys for a token: with a `kid`, the keys carrying it (duplicate kids are
    /// tried, so a rotation that reuses a kid keeps working); without one, every key that can
    /// verify the algorithm. Either way at most `MAX_CANDIDATES`, in JWKS order, so a large set
    /// cannot be used to burn CPU (README "Token validation, precisely").
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Alg,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.accepts(alg) && (kid.is_none() || k.kid.as_deref() == kid))
            .take(MAX_CANDIDATES)
    }

    /// Whether the published set names this kid at all, usable or skipped: refetching for a
    /// kid we already saw and skipped cannot help.
    pub fn knows_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
            || self.skipped.iter().any(|(k, _)| k.as_deref() == Some(kid))
    }

    /// What identifies a set for the verified-token cache. It includes each key's material,
    /// not only its `kid`: Casdoor names kids after certificates, so regenerating a certificate
    /// (the usual answer to a key compromise) publishes new material under the same `kid`, and
    /// tokens verified under the old key must then be verified again (RFC 7517 §4.5 makes no
    /// promise that a `kid` keeps naming the same key).
    pub(super) fn fingerprint(&self) -> Vec<KeyPrint> {
        self.keys
            .iter()
            .map(|k| (k.kid.clone(), k.kind, k.alg, k.material))
            .collect()
    }
}

/// One key as the fingerprint sees it: `kid`, type, `alg`, material digest.
pub(super) type KeyPrint = (Option<String>, KeyKind, Option<Alg>, [u8; 32]);

const MAX_CANDIDATES: usize = 4;

#[derive(Deserialize)]
struct JwkSetDoc {
    keys: Vec<Value>,
}

/// Parse a JWKS document key by key: an unusable key is skipped and reported, never fatal
/// for the rest (Hanzo's JWKS carries `kty: "MLDSA"` keys beside its RSA keys).
pub fn parse_jwks(body: &[u8]) -> Result<(Vec<Key>, Skipped), String> {
    let doc: JwkSetDoc = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for v in doc.keys {
        let kid = v.get("kid").and_then(Value::as_str).map(str::to_owned);
        match parse_jwk(&v) {
            Ok(key) => keys.push(key),
            Err(reason) => skipped.push((kid, reason)),
        }
    }
    Ok((keys, skipped))
}

/// One JWK outside a key set (a DPoP proof's `jwk`, RFC 9449 §4.2): the same parsing, the
/// same refusals (symmetric, encryption, weak RSA, unknown types and curves).
pub fn parse_public_jwk(v: &Value) -> Result<Key, SkipReason> {
    parse_jwk(v)
}

pub(super) fn parse_jwk(v: &Value) -> Result<Key, SkipReason> {
    let obj = v.as_object().ok_or(SkipReason::Malformed)?;
    let s = |name: &str| -> Result<Option<&str>, SkipReason> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(x)) => Ok(Some(x.as_str())),
            Some(_) => Err(SkipReason::Malformed),
        }
    };
    let kty = s("kty")?.ok_or(SkipReason::Malformed)?;
    let kid = s("kid")?.map(str::to_owned);
    if kid.as_ref().is_some_and(|k| k.len() > 256) {
        return Err(SkipReason::Malformed);
    }
    // RFC 7517 §4.2/§4.3: only signature-verification keys.
    if let Some(u) = s("use")?
        && u != "sig"
    {
        return Err(SkipReason::EncryptionKey);
    }
    if let Some(ops) = obj.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err(SkipReason::EncryptionKey);
        }
    }
    let alg = match s("alg")? {
        None => None,
        Some(a) => Some(Alg::parse(a).ok_or(SkipReason::UnsupportedAlg)?),
    };
    let mut parsed = vec![];
    let (kind, decoding, material) = match kty {
        "RSA" => {
            let n = s("n")?.ok_or(SkipReason::Malformed)?;
            let e = s("e")?.ok_or(SkipReason::Malformed)?;
            let n_bytes = URL_SAFE_NO_PAD
                .decode(n)
                .map_err(|_| SkipReason::Malformed)?;
            let e_bytes = URL_SAFE_NO_PAD
                .decode(e)
                .map_err(|_| SkipReason::Malformed)?;
            if rsa_bits(&n_bytes) < 2048 {
                return Err(SkipReason::WeakRsa);
            }
            if e_bytes.is_empty() || e_bytes.len() > 8 {
                return Err(SkipReason::Malformed);
            }
            let components = RsaPublicKeyComponents {
                n: &n_bytes[..],
                e: &e_bytes[..],
            };
            for a in Alg::ALL {
                if let Some(params) = rsa_params(a)
                    && alg.is_none_or(|only| only == a)
                {
                    let key = components
                        .to_parsed_public_key(params)
                        .map_err(|_| SkipReason::Malformed)?;
                    parsed.push((a, key));
                }
            }
            (
                KeyKind::Rsa,
                None,
                material_digest("RSA", &[&n_bytes, &e_bytes]),
            )
        }
        "EC" => {
            let (kind, len) = match s("crv")? {
                Some("P-256") => (KeyKind::P256, 32),
                Some("P-384") => (KeyKind::P384, 48),
                _ => return Err(SkipReason::UnsupportedCurve),
            };
            let x = s("x")?.ok_or(SkipReason::Malformed)?;
            let y = s("y")?.ok_or(SkipReason::Malformed)?;
            let lens = (URL_SAFE_NO_PAD.decode(x), URL_SAFE_NO_PAD.decode(y));
            let material = match lens {
                (Ok(xb), Ok(yb)) if xb.len() == len && yb.len() == len => {
                    material_digest(if len == 32 { "P-256" } else { "P-384" }, &[&xb, &yb])
                }
                _ => return Err(SkipReason::Malformed),
            };
            let key = DecodingKey::from_ec_components(x, y).map_err(|_| SkipReason::Malformed)?;
            (kind, Some(key), material)
        }
        "OKP" => {
            if s("crv")? != Some("Ed25519") {
                return Err(SkipReason::UnsupportedCurve);
            }
            let x = s("x")?.ok_or(SkipReason::Malformed)?;
            let material = match URL_SAFE_NO_PAD.decode(x) {
                Ok(b) if b.len() == 32 => material_digest("Ed25519", &[&b]),
                _ => return Err(SkipReason::Malformed),
            };
            let key = DecodingKey::from_ed_components(x).map_err(|_| SkipReason::Malformed)?;
            (KeyKind::Ed25519, Some(key), material)
        }
        // Each spelling with its own `alg` and its own public-key member, nothing mixed.
        "MLDSA" => {
            let (kind, keys, material) = ml_dsa(alg, &[Alg::MLDSA65], s("x")?, kty)?;
            parsed = keys;
            (kind, None, material)
        }
        "AKP" => {
            let spellings = [Alg::ML_DSA_44, Alg::ML_DSA_65, Alg::ML_DSA_87];
            let (kind, keys, material) = ml_dsa(alg, &spellings, s("pub")?, kty)?;
            parsed = keys;
            (kind, None, material)
        }
        "oct" => return Err(SkipReason::Symmetric),
        _ => return Err(SkipReason::UnsupportedKty),
    };
    if let Some(a) = alg
        && !kind.supports(a)
    {
        return Err(SkipReason::UnsupportedAlg);
    }
    Ok(Key {
        kid,
        kind,
        alg,
        decoding,
        parsed,
        material,
    })
}

pub(super) fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// The `jsonwebtoken` name of an algorithm we accept, if it has one.
fn jwt_alg(a: Alg) -> Option<jsonwebtoken::Algorithm> {
    use jsonwebtoken::Algorithm as J;
    Some(match a {
        Alg::RS256 => J::RS256,
        Alg::RS384 => J::RS384,
        Alg::RS512 => J::RS512,
        Alg::PS256 => J::PS256,
        Alg::PS384 => J::PS384,
        Alg::PS512 => J::PS512,
        Alg::ES256 => J::ES256,
        Alg::ES384 => J::ES384,
        Alg::EdDSA => J::EdDSA,
        Alg::MLDSA65 | Alg::ML_DSA_65 | Alg::ML_DSA_44 | Alg::ML_DSA_87 => return None,
    })
}
