//! Which URLs mcp-authz fetches from (issuer metadata, JWKS, redirects): https, or plain http
//! to a loopback host or behind the explicit development switch. Checked when the configuration
//! is validated and again on every fetch and redirect, so it sits below both `config` and
//! `jwks`.

use url::Url;

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Fetch targets must be https, except loopback or an explicit development switch.
pub fn check_fetch_url(url: &Url, allow_insecure_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(url) || allow_insecure_http => Ok(()),
        "http" => Err("plain http is refused for non-loopback hosts (set jwks.allow_insecure_http for development)".into()),
        other => Err(format!("scheme {other:?} is not supported")),
    }
}
