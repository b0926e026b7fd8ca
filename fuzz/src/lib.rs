//! Shared fixture for the fuzz targets: signing keys generated in-process at startup, a JWKS
//! file and configuration written to a private temporary directory (keys are never fetched
//! over the network), the harness's own validly signed tokens with the scopes they carry, and
//! one `Authorizer` on a single-threaded runtime. Nothing here listens or connects.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use mcp_authz::cache::TokenCache;
use mcp_authz::check::Authorizer;
use mcp_authz::config::{Config, Resource};
use mcp_authz::jwks::JwksManager;
use mcp_authz::metrics::Metrics;

/// The one trusted issuer (never contacted: its keys come from `jwks_file`).
pub const ISSUER: &str = "https://idp.fuzz.invalid";
/// The protected resource's URI, the audience every valid token names.
pub const RESOURCE_URI: &str = "https://mcp.example.com/mcp";
/// Clock leeway configured for the issuer.
pub const LEEWAY: u64 = 30;
/// Longest token accepted (`limits.max_token_bytes`).
pub const MAX_TOKEN_BYTES: usize = 8192;

/// The policy every decision is made under. Default deny (no `default_scopes`); the tables in
/// the `decision` target restate what it requires, independently of the code under test.
pub const POLICY: &str = r#"
    scope_implications:
      files:admin: [files:read, files:write, files:list]
    routes:
      - {name: health, path: /mcp/health, public: true}
      - {name: docs, path_prefix: /docs, methods: [GET], public: true}
      - {name: read, path_prefix: /mcp/files, methods: [GET], scopes: [files:read]}
      - name: mcp
        path_prefix: /mcp
        scopes: [files:list]
        mcp:
          methods:
            logging/setLevel: [files:admin]
          tools:
            list_files: [files:list]
            read_file: [files:read]
            write_file: [files:write]
            nuke: deny
          resources:
            "file:///": [files:read]
            "file:///secret": [files:secret]
          prompts:
            summarize: [files:read]
            secret_prompt: [files:secret]
"#;

/// A private key the harness signs with, and the JWS `alg` it signs as.
pub enum Signer {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

pub struct SigningKey {
    pub kid: &'static str,
    pub signer: Signer,
}

impl SigningKey {
    pub fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
            Signer::Ed(_) => "EdDSA",
        }
    }

    fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Rsa(k) => {
                let p = k.public_key();
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                    "n": b64(p.modulus().big_endian_without_leading_zero()),
                    "e": b64(p.exponent().big_endian_without_leading_zero())})
            }
            Signer::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
                    "x": b64(&p[1..33]), "y": b64(&p[33..65])})
            }
            Signer::Ed(k) => json!({"kty": "OKP", "kid": self.kid, "crv": "Ed25519",
                "alg": "EdDSA", "x": b64(k.public_key().as_ref())}),
        }
    }

    /// The raw JWS signature over `message` (RFC 7518 §3.3, §3.4; RFC 8037 §3.1).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .expect("RSA signing");
                sig
            }
            Signer::Ec(k) => k
                .sign(&rng, message)
                .expect("ECDSA signing")
                .as_ref()
                .to_vec(),
            Signer::Ed(k) => k.sign(message).as_ref().to_vec(),
        }
    }

    /// A compact JWS over exactly these header and claims texts.
    pub fn mint_raw(&self, header: &[u8], claims: &[u8]) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = self.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    /// The header this key signs with by default.
    pub fn header(&self) -> String {
        json!({"alg": self.alg(), "kid": self.kid, "typ": "at+jwt"}).to_string()
    }
}

pub fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// One token the harness minted, with what the oracle knows about it.
pub struct Minted {
    pub token: String,
    /// `Some(scopes)` when the token is valid for the resource (signed by a key in the JWKS,
    /// right issuer, audience and lifetime); `None` when it must be refused.
    pub valid_scopes: Option<&'static [&'static str]>,
}

pub struct Fixture {
    pub runtime: tokio::runtime::Runtime,
    pub keys: Vec<SigningKey>,
    pub config: Config,
    pub jwks: Arc<JwksManager>,
    pub authorizer: Authorizer,
    /// `now` for every decision, seconds since the epoch (fixed at startup).
    pub now: u64,
    /// `$T0`..`$T9` in the `decision` target's requests.
    pub tokens: Vec<Minted>,
}

impl Fixture {
    pub fn resource(&self) -> &Resource {
        &self.config.resources[0]
    }

    /// Whether `token` is one the harness signed as valid, and its scopes if so.
    pub fn valid_scopes(&self, token: &str) -> Option<&'static [&'static str]> {
        self.tokens
            .iter()
            .find(|m| m.token == token)
            .and_then(|m| m.valid_scopes)
    }

    /// The signing input (`header.payload`) of every token the harness signed as valid.
    pub fn is_valid_signing_input(&self, input: &str) -> bool {
        self.tokens.iter().any(|m| {
            m.valid_scopes.is_some() && m.token.rsplit_once('.').map(|p| p.0) == Some(input)
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Built once per process: RSA key generation and the JWKS load happen here, not per input.
pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(build);

fn build() -> Fixture {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let keys = vec![
        SigningKey {
            kid: "rsa-1",
            signer: Signer::Rsa(
                aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).expect("RSA key"),
            ),
        },
        SigningKey {
            kid: "ec-1",
            signer: Signer::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .expect("EC key"),
            ),
        },
        SigningKey {
            kid: "ed-1",
            signer: Signer::Ed({
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed key");
                Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed key")
            }),
        },
    ];
    let dir = std::env::temp_dir().join(format!("mcp-authz-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let jwks_path = dir.join("jwks.json");
    let jwks_doc = json!({"keys": keys.iter().map(SigningKey::jwk).collect::<Vec<_>>()});
    std::fs::write(&jwks_path, jwks_doc.to_string()).expect("write JWKS");
    let yaml = format!(
        r#"
listen: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
limits: {{max_token_bytes: {MAX_TOKEN_BYTES}}}
resources:
  - id: files
    uri: {RESOURCE_URI}
    realm: MCP Server
    issuers:
      - issuer: {ISSUER}
        jwks_file: {jwks}
        algorithms: [RS256, ES256, EdDSA]
        leeway_seconds: {LEEWAY}
{POLICY}
"#,
        jwks = jwks_path.display()
    );
    let config = Config::from_yaml(&yaml).expect("fuzz configuration");
    let now = now();
    let metrics = Metrics::new();
    let jwks = runtime.block_on(async {
        let jwks = JwksManager::new(&config, metrics.clone()).expect("JWKS manager");
        for (issuer, loaded) in jwks.refresh_all().await {
            assert!(
                matches!(loaded, Ok(3)),
                "keys for {issuer} not loaded: {loaded:?}"
            );
        }
        jwks
    });
    let claims = |scope: &str, iss: &str, aud: &str, exp: u64| {
        json!({"iss": iss, "sub": "user-1", "aud": aud, "exp": exp, "iat": now,
            "scope": scope, "client_id": "client-1"})
        .to_string()
    };
    let valid = |k: &SigningKey, scope: &str| {
        k.mint_raw(
            k.header().as_bytes(),
            claims(scope, ISSUER, RESOURCE_URI, now + 3600).as_bytes(),
        )
    };
    let (rsa, ec, ed) = (&keys[0], &keys[1], &keys[2]);
    let tokens = vec![
        Minted {
            token: valid(rsa, "files:list"),
            valid_scopes: Some(&["files:list"]),
        },
        Minted {
            token: valid(rsa, "files:list files:read"),
            valid_scopes: Some(&["files:list", "files:read"]),
        },
        Minted {
            token: valid(rsa, "files:admin"),
            valid_scopes: Some(&["files:admin"]),
        },
        Minted {
            token: valid(rsa, "files:list files:read files:secret"),
            valid_scopes: Some(&["files:list", "files:read", "files:secret"]),
        },
        Minted {
            token: valid(rsa, ""),
            valid_scopes: Some(&[]),
        },
        Minted {
            token: valid(ec, "files:list files:write"),
            valid_scopes: Some(&["files:list", "files:write"]),
        },
        Minted {
            token: valid(ed, "files:admin files:secret"),
            valid_scopes: Some(&["files:admin", "files:secret"]),
        },
        // Signed by a trusted key but expired, for another audience, or from another issuer:
        // never valid.
        Minted {
            token: rsa.mint_raw(
                rsa.header().as_bytes(),
                claims("files:admin files:secret", ISSUER, RESOURCE_URI, now - 3600).as_bytes(),
            ),
            valid_scopes: None,
        },
        Minted {
            token: rsa.mint_raw(
                rsa.header().as_bytes(),
                claims(
                    "files:admin",
                    ISSUER,
                    "https://other.example.com/mcp",
                    now + 3600,
                )
                .as_bytes(),
            ),
            valid_scopes: None,
        },
        Minted {
            token: rsa.mint_raw(
                rsa.header().as_bytes(),
                claims(
                    "files:admin",
                    "https://evil.invalid",
                    RESOURCE_URI,
                    now + 3600,
                )
                .as_bytes(),
            ),
            valid_scopes: None,
        },
    ];
    let authorizer = Authorizer {
        config: ArcSwap::from_pointee(config.clone()),
        jwks: jwks.clone(),
        cache: TokenCache::new(256, metrics.clone()),
        introspect: mcp_authz::introspect::Introspector::new(metrics.clone()),
        dpop: mcp_authz::dpop::Dpop::new(metrics),
    };
    Fixture {
        runtime,
        keys,
        config,
        jwks,
        authorizer,
        now,
        tokens,
    }
}

/// Expand `$T0`..`$T9` to the harness's tokens.
pub fn expand_tokens(s: &str) -> String {
    if !s.contains("$T") {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 1024);
    let mut rest = s;
    while let Some(i) = rest.find("$T") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.as_bytes().first() {
            Some(d @ b'0'..=b'9') => {
                out.push_str(&FIXTURE.tokens[usize::from(d - b'0')].token);
                rest = &after[1..];
            }
            _ => {
                out.push_str("$T");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Request headers as Envoy hands them over: lower-case names, repeats joined with `,`.
pub fn merge_header(headers: &mut HashMap<String, String>, name: &str, value: String) {
    headers
        .entry(name.to_ascii_lowercase())
        .and_modify(|v| {
            v.push(',');
            v.push_str(&value);
        })
        .or_insert(value);
}
