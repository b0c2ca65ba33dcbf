//! labssh: an SSH gateway that puts every lab student in their own container.
//!
//! The roles live in their own crates (`labssh-proxy`, `labssh-controller`,
//! `labssh-agent`); this crate wires them together, as one binary and as an
//! in-process [`cluster::Cluster`] used by `labssh up` and the tests.

pub mod certs;
pub mod cluster;
pub mod replay;
