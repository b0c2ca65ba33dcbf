//! labssh proxy: an SSH server that authenticates students and splices each
//! of their SSH channels to a stream into their own container.
//!
//! Per connection: authenticate (users file, with a Redis cache of validated
//! credentials) → ask the controller where the user's container lives → one
//! gRPC stream per session channel to that node's agent.

mod auth;
mod channel;
pub mod config;
mod connection;
pub mod credential_cache;
mod forward;
pub mod host_key;
pub mod login_name;
pub mod proxy_protocol;
pub mod rate_limit;
mod redis_link;
mod server;
mod state;
pub mod upstream;
pub mod users;

pub use config::{Config, ConfigError};
pub use server::run;
