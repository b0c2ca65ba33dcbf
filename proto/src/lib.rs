//! gRPC contracts between the labssh proxy, controller and backend agents.
//!
//! Generated code lives in [`pb`]; conversions to domain types live with the
//! crates that consume them.

/// Generated protobuf messages and tonic clients/servers for `labssh.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("labssh.v1");
}

pub mod config;
pub mod duration;
pub mod egress;
pub mod forwarding;
pub mod groups;
pub mod names;
pub mod net;
pub mod place;
pub mod roles;
pub mod tls;
