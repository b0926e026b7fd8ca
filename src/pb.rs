//! Generated protobuf and gRPC types for Envoy's ext_authz v3 API (trimmed, wire-compatible subset; see `proto/README.md`).
//!
//! The module tree mirrors the protobuf package hierarchy, because the generated
//! code refers to types in other packages through relative `super::` paths.

/// `envoy.*` protobuf packages.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    rustdoc::all
)]
pub mod envoy {
    /// `envoy.service.*` packages.
    pub mod service {
        /// `envoy.service.auth.*` packages.
        pub mod auth {
            /// `envoy.service.auth.v3`: the `Authorization` service with its
            /// request and response messages.
            pub mod v3 {
                tonic::include_proto!("envoy.service.auth.v3");
            }
        }
        /// `envoy.service.ext_proc.*` packages.
        pub mod ext_proc {
            /// `envoy.service.ext_proc.v3`: the `ExternalProcessor` service (session binding
            /// on the response path).
            pub mod v3 {
                tonic::include_proto!("envoy.service.ext_proc.v3");
            }
        }
    }

    /// `envoy.config.*` packages.
    pub mod config {
        /// `envoy.config.core.*` packages.
        pub mod core {
            /// `envoy.config.core.v3`: header and query parameter types.
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }

    /// `envoy.type.*` packages.
    pub mod r#type {
        /// `envoy.type.v3`: HTTP status types.
        pub mod v3 {
            // prost-build escapes the `type` keyword in the generated file name.
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
}

/// `google.*` protobuf packages other than the well-known types, which come
/// from `prost-types`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    rustdoc::all
)]
pub mod google {
    /// `google.rpc.*` packages.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}
