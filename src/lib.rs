//! mcp-authz: an Envoy ext_authz gRPC service that makes MCP servers OAuth 2.1 protected
//! resources. See README.md for the architecture table.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod authz;
pub mod cache;
pub mod challenge;
pub mod check;
pub mod config;
pub mod credentials;
pub mod doctor;
pub mod dpop;
pub mod explain;
pub mod extproc;
pub mod fetch_url;
pub mod introspect;
pub mod jwks;
pub mod logfmt;
pub mod mcp;
pub mod mesh;
pub mod metrics;
pub mod normalize;
pub mod pb;
pub mod policy;
pub mod principal;
pub mod render;
pub mod scope;
pub mod session;
pub mod token;
pub mod trace;
