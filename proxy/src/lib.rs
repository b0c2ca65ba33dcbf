//! labssh proxy: an SSH server that authenticates students and splices each
//! of their SSH channels to a stream into their own container.
//!
//! Per connection ([`connection`]): authenticate ([`auth`]: users file, with a
//! Redis cache of validated credentials) → for each session channel
//! ([`channel`]) ask the controller where the user's container lives and open
//! one gRPC stream to that node's agent ([`upstream`]); each forwarded
//! connection ([`forward`]) gets its own stream too. Modules depend one way:
//! server → connection → channel, forward → upstream, with [`state`] below
//! them all.

mod address_counts;
pub mod audit;
mod auth;
mod channel;
pub mod config;
mod connection;
pub mod credential_cache;
mod forward;
pub mod host_key;
pub mod live;
pub mod login_name;
pub mod preauth;
pub mod proxy_protocol;
pub mod rate_limit;
pub mod recording;
mod redis_link;
mod server;
mod shares;
mod state;
pub mod upstream;
pub mod users;
pub mod web;

pub use config::{Config, ConfigError};

/// What the fuzz targets (`fuzz-checks/`) reach of the private authenticators:
/// the revoked-keys parser and the LDAP filter builder. Not an API.
#[doc(hidden)]
pub mod untrusted {
    /// Parses a revoked-keys file (an OpenSSH KRL or public key lines), as
    /// `[auth] revoked_keys` is read: `Ok` or why not, never a panic.
    pub fn parse_revoked(bytes: &[u8]) -> Result<(), String> {
        crate::auth::certificate::revoked::Revoked::parse(bytes).map(|_| ())
    }

    /// `template` with `{user}` filled in, RFC 4515-escaped, as an LDAP search
    /// filter is built from a login name.
    pub fn ldap_filter(template: &str, user: &str) -> String {
        crate::auth::ldap::filter::fill(template, &[(crate::auth::ldap::filter::USER, user)])
    }
}
pub use server::run;
