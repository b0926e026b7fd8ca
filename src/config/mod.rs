//! Configuration: one YAML file, read in two phases — the schema (`schema.rs`: what can be
//! written, serde with unknown fields rejected and documented defaults) and the validated
//! runtime model every other module reads (`model.rs`), built by the validation
//! (`validate.rs` for the server settings, `resources.rs` for resources, issuers, routes and MCP
//! rules, `render.rs` for the Envoy and Istio sections only the renderers read). Errors name
//! the YAML path and the bad value. This file holds the error type and the entry points.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod dpop;
mod introspection;
mod introspection_check;
mod model;
mod render;
mod resources;
mod schema;
mod validate;

pub use dpop::{
    DpopMode, DpopSettings, NonceKey, NonceMode, NonceSettings, RawDpop, RawReplayStore,
    ReplayStoreSettings,
};
pub use introspection::{
    AuthMethod, ClientSecret, IntrospectMode, IntrospectionSettings, RawIntrospection,
};
pub use model::*;
pub use render::{MAX_CHECK_MESSAGE_BYTES, MAX_ENVOY_REQUEST_BYTES};
pub use schema::*;

/// Context-extension key Envoy sets on a route to name the resource it protects.
pub const RESOURCE_CONTEXT_KEY: &str = "mcp_authz_resource";

/// Context-extension key the Envoy render sets (to [`PREFLIGHTS_BY_PROXY`]) on routes whose
/// CORS filter answers every CORS preflight before ext_authz runs.
pub const PREFLIGHT_CONTEXT_KEY: &str = "mcp_authz_preflight";

/// [`PREFLIGHT_CONTEXT_KEY`]'s value: no request mcp-authz sees is a preflight to let through.
pub const PREFLIGHTS_BY_PROXY: &str = "answered_by_proxy";

/// Context-extension key the Envoy render sets (to [`IDENTITY_STRIPPED_BY_PROXY`]) on routes
/// behind a listener that strips every reserved identity header from client requests before
/// any filter runs (HCM `early_header_mutation_extensions`).
pub const IDENTITY_CONTEXT_KEY: &str = "mcp_authz_identity_headers";

/// [`IDENTITY_CONTEXT_KEY`]'s value: the allow answer need not remove client copies itself.
pub const IDENTITY_STRIPPED_BY_PROXY: &str = "stripped_by_proxy";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config is not valid YAML for mcp-authz: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

impl Config {
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(text)?;
        Config::try_from(raw)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Config::from_yaml(&text)?;
        // Relative `jwks_file` paths are relative to the config file.
        if let Some(dir) = path.parent() {
            for i in &mut cfg.issuers {
                if let KeySource::File(p) = &mut i.source
                    && p.is_relative()
                {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(cfg)
    }

    pub fn resource(&self, id: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.id == id)
    }
}

/// `host:port` with a non-zero port.
fn parse_host_port(at: &str, s: &str) -> Result<(String, u16), ConfigError> {
    let bad = || invalid(at, format!("{s:?} is not host:port"));
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(['/', ' ', '@']) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

fn parse_addr(at: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(at, format!("{s:?} is not an IP:port socket address")))
}

#[cfg(test)]
mod tests;
