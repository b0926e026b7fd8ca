//! Fetching an issuer's keys: discovery of `jwks_uri` (RFC 8414, then OpenID Connect
//! Discovery), the JWKS fetch with its size, time and redirect limits, `Cache-Control` max-age,
//! and the client-credentials probe `doctor` uses.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use url::Url;

use crate::config::KeySource;
use crate::fetch_url::check_fetch_url;

use super::keys::{Key, Skipped, parse_jwks};
use super::{IssuerKeys, JwksError, JwksManager};

impl JwksManager {
    pub(super) async fn fetch_keys(
        &self,
        st: &IssuerKeys,
    ) -> Result<(Vec<Key>, Skipped, Option<Duration>), JwksError> {
        let (body, max_age, where_) = match &st.source {
            KeySource::File(path) => {
                let body = tokio::fs::read(path).await.map_err(|e| JwksError::File {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                (body, None, path.display().to_string())
            }
            KeySource::JwksUri(url) => {
                let (b, m) = self.get(url).await?;
                (b, m, url.to_string())
            }
            KeySource::Discovery => {
                let url = match st.discovered_jwks_uri.load_full() {
                    Some(u) => u,
                    None => {
                        let u = Arc::new(self.discover(&st.issuer).await?);
                        st.discovered_jwks_uri.store(Some(u.clone()));
                        u
                    }
                };
                match self.get(&url).await {
                    Ok((b, m)) => (b, m, url.to_string()),
                    Err(e) => {
                        // The metadata may have moved the JWKS: discover again next time.
                        st.discovered_jwks_uri.store(None);
                        return Err(e);
                    }
                }
            }
        };
        let (keys, skipped) = parse_jwks(&body).map_err(|message| JwksError::Json {
            url: where_,
            message,
        })?;
        Ok((keys, skipped, max_age))
    }

    /// RFC 8414 §3.1 (well-known segment inserted before the issuer path), then OpenID Connect
    /// Discovery 1.0 §4 (appended). The document's `issuer` must equal ours exactly.
    pub async fn discover(&self, issuer: &str) -> Result<Url, JwksError> {
        let mut tried = Vec::new();
        for url in discovery_urls(issuer)? {
            match self.get(&url).await {
                Ok((body, _)) => {
                    let doc: Value =
                        serde_json::from_slice(&body).map_err(|e| JwksError::Json {
                            url: url.to_string(),
                            message: e.to_string(),
                        })?;
                    let found = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
                    if found != issuer {
                        return Err(JwksError::IssuerMismatch {
                            url: url.to_string(),
                            found: found.to_owned(),
                            expected: issuer.to_owned(),
                        });
                    }
                    let jwks = doc.get("jwks_uri").and_then(Value::as_str).ok_or_else(|| {
                        JwksError::NoJwksUri {
                            url: url.to_string(),
                            message: "missing".into(),
                        }
                    })?;
                    let jwks = Url::parse(jwks).map_err(|e| JwksError::NoJwksUri {
                        url: url.to_string(),
                        message: e.to_string(),
                    })?;
                    check_fetch_url(&jwks, self.settings.allow_insecure_http).map_err(
                        |message| JwksError::NoJwksUri {
                            url: url.to_string(),
                            message,
                        },
                    )?;
                    return Ok(jwks);
                }
                Err(e) => tried.push(e.to_string()),
            }
        }
        Err(JwksError::Discovery {
            issuer: issuer.to_owned(),
            tried: tried.join("; "),
        })
    }

    /// GET with the size cap enforced while reading; only 200 counts.
    pub async fn get(&self, url: &Url) -> Result<(Vec<u8>, Option<Duration>), JwksError> {
        let fetch_err = |e: reqwest::Error| JwksError::Fetch {
            url: url.to_string(),
            message: e.to_string(),
        };
        let mut resp = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(fetch_err)?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(JwksError::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let limit = self.settings.max_response_bytes;
        let too_large = || JwksError::TooLarge {
            url: url.to_string(),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let max_age = resp
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .and_then(cache_max_age);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(fetch_err)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

impl JwksManager {
    /// `doctor` only: a client-credentials token request with an RFC 8707 `resource`.
    pub async fn client_credentials_token(
        &self,
        endpoint: &str,
        client_id: &str,
        client_secret: &str,
        resource: &str,
        scope: &str,
    ) -> Result<String, JwksError> {
        let err = |message: String| JwksError::Fetch {
            url: endpoint.to_owned(),
            message,
        };
        let url = Url::parse(endpoint).map_err(|e| err(e.to_string()))?;
        check_fetch_url(&url, self.settings.allow_insecure_http).map_err(err)?;
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials")
            .append_pair("resource", resource);
        if !scope.is_empty() {
            form.append_pair("scope", scope);
        }
        let resp = self
            .http
            .post(url)
            .basic_auth(client_id, Some(client_secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.finish())
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| err(e.to_string()))?;
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| err(format!("HTTP {status}, not JSON: {e}")))?;
        match doc.get("access_token").and_then(Value::as_str) {
            Some(t) if status == 200 => Ok(t.to_owned()),
            _ => Err(err(format!(
                "HTTP {status}: {}",
                doc.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no access_token")
            ))),
        }
    }
}

/// `Cache-Control: max-age=N` (RFC 9111 §5.2.2.1); `no-store`/`no-cache` count as 0.
pub fn cache_max_age(value: &str) -> Option<Duration> {
    let mut out = None;
    for d in value.split(',') {
        let d = d.trim().to_ascii_lowercase();
        if d == "no-store" || d == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            out = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    out
}

/// Where to look for an issuer's metadata, in order.
pub fn discovery_urls(issuer: &str) -> Result<Vec<Url>, JwksError> {
    let bad = |m: String| JwksError::Discovery {
        issuer: issuer.to_owned(),
        tried: m,
    };
    let u = Url::parse(issuer).map_err(|e| bad(e.to_string()))?;
    let origin = u.origin().ascii_serialization();
    let path = u.path().trim_end_matches('/');
    let rfc8414 = format!("{origin}/.well-known/oauth-authorization-server{path}");
    let oidc = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    [rfc8414, oidc]
        .iter()
        .map(|s| Url::parse(s).map_err(|e| bad(e.to_string())))
        .collect()
}
