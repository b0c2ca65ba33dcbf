//! The proxy's audit log (`[audit]`): [`labssh_telemetry::audit`], its lines
//! naming this replica (`"proxy": "host:port"`), and SFTP's changes to files read
//! off the stream ([`sftp`]).

pub mod sftp;

pub use labssh_telemetry::audit::{Audit, AuditConfig};
