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

mod auth;
mod channel;
pub mod config;
mod connection;
pub mod credential_cache;
mod forward;
pub mod host_key;
pub mod login_name;
pub mod preauth;
pub mod proxy_protocol;
pub mod rate_limit;
mod redis_link;
mod server;
mod state;
pub mod upstream;
pub mod users;

pub use config::{Config, ConfigError};
pub use server::run;
