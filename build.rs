//! Compiles our trimmed Envoy ext_authz protos (see `proto/README.md`) with
//! `protox`, a pure-Rust protobuf compiler, so no system `protoc` is needed.

use anyhow::Context as _;

const PROTOS: &[&str] = &[
    "proto/envoy/service/auth/v3/external_auth.proto",
    "proto/envoy/service/auth/v3/attribute_context.proto",
    "proto/envoy/service/ext_proc/v3/external_processor.proto",
    "proto/envoy/config/core/v3/address.proto",
    "proto/envoy/config/core/v3/base.proto",
    "proto/envoy/type/v3/http_status.proto",
    "proto/google/rpc/status.proto",
];

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(PROTOS, ["proto"]).context("compiling proto/ with protox")?;

    // Well-known types (google.protobuf.*) map to prost-types, the prost-build default.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
        .context("generating Rust code for proto/")?;

    Ok(())
}
