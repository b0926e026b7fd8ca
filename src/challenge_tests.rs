use super::*;
use crate::normalize::UriError;

fn target() -> ChallengeTarget {
    ChallengeTarget {
        realm: "MCP Server".into(),
        resource_metadata: "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
            .into(),
        dpop: None,
    }
}

fn header<'a>(r: &'a DenyResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn no_credentials_has_no_error_code() {
    let r = render(
        DenyReason::NoCredentials,
        Some(&target()),
        Some("files:list"),
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        header(&r, "www-authenticate"),
        Some(
            "Bearer realm=\"MCP Server\", scope=\"files:list\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        )
    );
    assert_eq!(
        r.body,
        r#"{"error":"unauthorized","message":"Authentication required. Use OAuth 2.0 with the authorization server listed in the Protected Resource Metadata."}"#
    );
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        Some("WWW-Authenticate")
    );
}

#[test]
fn insufficient_scope_names_scopes() {
    let r = render(
        DenyReason::InsufficientScope,
        Some(&target()),
        Some("files:list files:read"),
    );
    assert_eq!(r.status, 403);
    let h = header(&r, "www-authenticate").unwrap();
    assert!(h.contains("error=\"insufficient_scope\""), "{h}");
    assert!(h.contains("scope=\"files:list files:read\""), "{h}");
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["scope"], "files:list files:read");
}

/// RFC 9449 §7.1: the `DPoP` challenge with `algs`, after `Bearer` in mode `allowed`,
/// alone in mode `required`; the error on the scheme it concerns; a nonce in `DPoP-Nonce`.
#[test]
fn dpop_challenges() {
    let with = |bearer_too, request_used_dpop, nonce: Option<&str>| ChallengeTarget {
        dpop: Some(DpopChallenge {
            algs: "ES256 EdDSA".into(),
            bearer_too,
            request_used_dpop,
            nonce: nonce.map(str::to_owned),
        }),
        ..target()
    };
    let rm =
        "resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\"";
    let r = render(
        DenyReason::NoCredentials,
        Some(&with(true, false, None)),
        None,
    );
    assert_eq!(
        header(&r, "www-authenticate").unwrap(),
        format!(
            "Bearer realm=\"MCP Server\", {rm}, DPoP algs=\"ES256 EdDSA\", realm=\"MCP Server\", {rm}"
        )
    );
    let r = render(
        DenyReason::Dpop(DpopError::ProofHtu),
        Some(&with(true, true, None)),
        None,
    );
    let h = header(&r, "www-authenticate").unwrap();
    let (bearer, dpop) = h.split_once(", DPoP ").unwrap();
    assert!(!bearer.contains("error="), "{h}");
    assert!(dpop.contains("error=\"invalid_dpop_proof\""), "{h}");
    // A Bearer request's token error goes on Bearer.
    let r = render(
        DenyReason::Token(TokenError::Expired),
        Some(&with(true, false, None)),
        None,
    );
    let h = header(&r, "www-authenticate").unwrap();
    let (bearer, dpop) = h.split_once(", DPoP ").unwrap();
    assert!(bearer.contains("error=\"invalid_token\""), "{h}");
    assert!(!dpop.contains("error="), "{h}");
    // Required: DPoP only; the nonce goes out, and browsers may read it.
    let r = render(
        DenyReason::Dpop(DpopError::UseNonce),
        Some(&with(false, true, Some("n0nce"))),
        None,
    );
    let h = header(&r, "www-authenticate").unwrap();
    assert!(h.starts_with("DPoP algs=") && !h.contains("Bearer"), "{h}");
    assert!(h.contains("error=\"use_dpop_nonce\""), "{h}");
    assert_eq!(header(&r, "dpop-nonce"), Some("n0nce"));
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        Some("WWW-Authenticate, DPoP-Nonce")
    );
    // 503s carry no challenge.
    let r = render(
        DenyReason::Dpop(DpopError::ReplayCacheFull),
        Some(&with(true, true, None)),
        None,
    );
    assert_eq!((r.status, header(&r, "www-authenticate")), (503, None));
}

#[test]
fn policy_and_503_have_no_challenge() {
    for reason in [
        DenyReason::NoRoute,
        DenyReason::BadPath,
        DenyReason::Token(TokenError::NoKeys),
    ] {
        let r = render(reason, Some(&target()), None);
        assert_eq!(header(&r, "www-authenticate"), None, "{reason:?}");
    }
    let r = render(DenyReason::Token(TokenError::NoKeys), Some(&target()), None);
    assert_eq!(r.status, 503);
    assert_eq!(header(&r, "retry-after"), Some("30"));
}

#[test]
fn descriptions_use_rfc6750_charset() {
    let all = every_reason();
    let mut labels = std::collections::BTreeSet::new();
    for r in all {
        let s = r.shape();
        assert!(
            s.description.bytes().all(|b| b == 0x20
                || b == 0x21
                || (0x23..=0x5b).contains(&b)
                || (0x5d..=0x7e).contains(&b)),
            "{r:?}"
        );
        assert!(labels.insert(s.label), "duplicate label {}", s.label);
        if s.status == 401 && r != DenyReason::NoCredentials {
            // RFC 9449 §7.1: proof problems have their own error code.
            let proof = matches!(r, DenyReason::Dpop(e) if e.is_proof());
            let want = if r == DenyReason::Dpop(DpopError::UseNonce) {
                "use_dpop_nonce"
            } else if proof {
                "invalid_dpop_proof"
            } else {
                "invalid_token"
            };
            assert_eq!(s.error, Some(want), "{r:?}");
        }
    }
}

/// One of each reason. The `match` lists every variant without a wildcard, so a new reason
/// (or a new body or token error) does not compile until it is added here, and so to the
/// README check below.
fn every_reason() -> Vec<DenyReason> {
    let all = vec![
        DenyReason::NoCredentials,
        DenyReason::MalformedCredentials,
        DenyReason::TokenInQuery,
        DenyReason::TokenInactive,
        DenyReason::IntrospectionUnavailable,
        DenyReason::InsufficientScope,
        DenyReason::NoRoute,
        DenyReason::UnknownResource,
        DenyReason::BadPath,
        DenyReason::UnsupportedEncoding,
        DenyReason::UnknownSession,
        DenyReason::Internal,
        DenyReason::Undecodable,
        DenyReason::Token(TokenError::Malformed),
        DenyReason::Token(TokenError::TooLong),
        DenyReason::Token(TokenError::UnknownIssuer),
        DenyReason::Token(TokenError::DisallowedAlg),
        DenyReason::Token(TokenError::UnknownKid),
        DenyReason::Token(TokenError::BadSignature),
        DenyReason::Token(TokenError::MissingExp),
        DenyReason::Token(TokenError::Expired),
        DenyReason::Token(TokenError::NotYetValid),
        DenyReason::Token(TokenError::WrongAudience),
        DenyReason::Token(TokenError::NotAccessToken),
        DenyReason::Token(TokenError::NoKeys),
        DenyReason::Body(BodyError::Missing),
        DenyReason::Body(BodyError::TooLarge),
        DenyReason::Body(BodyError::NotJsonRpc),
        DenyReason::Body(BodyError::DuplicateKey),
        DenyReason::Body(BodyError::TooDeep),
        DenyReason::Body(BodyError::BadBatch),
        DenyReason::Body(BodyError::BadHeader),
        DenyReason::Body(BodyError::HeaderMismatch),
        DenyReason::Body(BodyError::TooManyMembers),
        DenyReason::McpDenied(McpDenial::Method),
        DenyReason::McpDenied(McpDenial::Tool),
        DenyReason::McpDenied(McpDenial::Resource),
        DenyReason::McpDenied(McpDenial::Prompt),
        DenyReason::McpDenied(McpDenial::BadUri(UriError::DotSegment)),
        DenyReason::Destination(DestinationError::Mismatch),
        DenyReason::Destination(DestinationError::Unauthenticated),
        DenyReason::Dpop(DpopError::ProofMissing),
        DenyReason::Dpop(DpopError::ProofMultiple),
        DenyReason::Dpop(DpopError::ProofMalformed),
        DenyReason::Dpop(DpopError::ProofTyp),
        DenyReason::Dpop(DpopError::ProofAlg),
        DenyReason::Dpop(DpopError::ProofKey),
        DenyReason::Dpop(DpopError::ProofSignature),
        DenyReason::Dpop(DpopError::ProofJti),
        DenyReason::Dpop(DpopError::ProofHtm),
        DenyReason::Dpop(DpopError::ProofHtu),
        DenyReason::Dpop(DpopError::ProofIat),
        DenyReason::Dpop(DpopError::ProofAth),
        DenyReason::Dpop(DpopError::ProofReplayed),
        DenyReason::Dpop(DpopError::UseNonce),
        DenyReason::Dpop(DpopError::ReplayCacheFull),
        DenyReason::Dpop(DpopError::ReplayStoreUnavailable),
        DenyReason::Dpop(DpopError::TokenUnbound),
        DenyReason::Dpop(DpopError::KeyMismatch),
        DenyReason::Dpop(DpopError::BearerDowngrade),
        DenyReason::Dpop(DpopError::Required),
    ];
    for r in &all {
        match r {
            DenyReason::NoCredentials
            | DenyReason::MalformedCredentials
            | DenyReason::TokenInQuery
            | DenyReason::TokenInactive
            | DenyReason::IntrospectionUnavailable
            | DenyReason::InsufficientScope
            | DenyReason::NoRoute
            | DenyReason::UnknownResource
            | DenyReason::BadPath
            | DenyReason::UnsupportedEncoding
            | DenyReason::UnknownSession
            | DenyReason::Internal
            | DenyReason::Undecodable => {}
            DenyReason::Token(
                TokenError::Malformed
                | TokenError::TooLong
                | TokenError::UnknownIssuer
                | TokenError::DisallowedAlg
                | TokenError::UnknownKid
                | TokenError::BadSignature
                | TokenError::MissingExp
                | TokenError::Expired
                | TokenError::NotYetValid
                | TokenError::WrongAudience
                | TokenError::NotAccessToken
                | TokenError::NoKeys,
            ) => {}
            DenyReason::Body(
                BodyError::Missing
                | BodyError::TooLarge
                | BodyError::NotJsonRpc
                | BodyError::DuplicateKey
                | BodyError::TooDeep
                | BodyError::BadBatch
                | BodyError::BadHeader
                | BodyError::HeaderMismatch
                | BodyError::TooManyMembers,
            ) => {}
            // Every `UriError` shares one response; one stands for all.
            DenyReason::McpDenied(
                McpDenial::Method
                | McpDenial::Tool
                | McpDenial::Resource
                | McpDenial::Prompt
                | McpDenial::BadUri(_),
            ) => {}
            DenyReason::Destination(
                DestinationError::Mismatch | DestinationError::Unauthenticated,
            ) => {}
            DenyReason::Dpop(
                DpopError::ProofMissing
                | DpopError::ProofMultiple
                | DpopError::ProofMalformed
                | DpopError::ProofTyp
                | DpopError::ProofAlg
                | DpopError::ProofKey
                | DpopError::ProofSignature
                | DpopError::ProofJti
                | DpopError::ProofHtm
                | DpopError::ProofHtu
                | DpopError::ProofIat
                | DpopError::ProofAth
                | DpopError::ProofReplayed
                | DpopError::UseNonce
                | DpopError::ReplayCacheFull
                | DpopError::ReplayStoreUnavailable
                | DpopError::TokenUnbound
                | DpopError::KeyMismatch
                | DpopError::BearerDowngrade
                | DpopError::Required,
            ) => {}
        }
    }
    all
}

/// The README's decision matrix names every reason's label with its status (item 4 of
/// issue 11: the matrix must say exactly what is refused).
#[test]
fn every_reason_is_in_the_readme_matrix() {
    let readme = include_str!("../README.md");
    let start = readme.find("## Decision matrix").expect("matrix section");
    let end = start + readme[start..].find("\n### ").expect("next section");
    let matrix = &readme[start..end];
    for r in every_reason() {
        let s = r.shape();
        let label = format!("`{}`", s.label);
        let row = matrix
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&label))
            .unwrap_or_else(|| panic!("{label} ({r:?}) is not in the README decision matrix"));
        let cells: Vec<&str> = row.split(" | ").collect();
        assert!(
            cells
                .get(1)
                .is_some_and(|c| c.starts_with(&s.status.to_string())),
            "{label}: README says {:?}, the code {}",
            cells.get(1),
            s.status
        );
        if let Some(error) = s.error {
            assert!(
                row.contains(&format!("error=\"{error}\"")),
                "{label}: {row}"
            );
        } else if s.challenge {
            assert!(row.contains("no `error`"), "{label}: {row}");
        } else {
            assert!(
                cells.get(2).is_some_and(|c| c.starts_with('—')),
                "{label} has no challenge: {row}"
            );
        }
    }
}
