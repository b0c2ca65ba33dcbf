//! What every part of the proxy may use, below all of them: the replica's
//! shared state, and what a logged-in connection hands to each of its channel
//! and forwarding tasks. Nothing here imports the modules that use it, so
//! dependencies point one way (server → connection → channel, forward →
//! upstream).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use labssh_proto::pb;
use russh::server::Handle;
use tokio::sync::Semaphore;

use crate::auth::certificate::Trust;
use crate::auth::chain::Chain;
use crate::auth::identity::Identity;
use crate::config::Config;
use crate::credential_cache::CredentialCache;
use crate::login_name::LoginName;
use crate::preauth::{Gate, Refusals};
use crate::rate_limit::RateLimiter;
use crate::upstream::Upstream;
use crate::users::Users;

/// State shared by every connection of this replica; lives as long as `run`.
pub(crate) struct Shared {
    /// The replica's configuration.
    pub config: Config,
    /// Accounts, reloaded when the file changes.
    pub users: Users,
    /// The authenticators, in `auth.chain`'s order.
    pub auth: Chain,
    /// Trusted user CAs and revoked keys (`auth.trusted_user_ca_keys`,
    /// `auth.revoked_keys`), reloaded when their files change.
    pub trust: Trust,
    /// Validated-credential cache (Redis or in-process).
    pub cache: CredentialCache,
    /// Brute-force limits.
    pub limiter: RateLimiter,
    /// Redis, when `redis_url` is set: also where shared services are kept.
    pub redis: Option<Arc<crate::redis_link::RedisLink>>,
    /// Controller and agent clients.
    pub upstream: Upstream,
    /// Source of connection ids for logs.
    pub next_id: AtomicU64,
    /// Connections not logged in yet, and their limits.
    pub gate: Gate,
    /// Refusals before a login: counted, and logged sparingly.
    pub refusals: Refusals,
    /// The audit log (off unless `[audit] path` is set).
    pub audit: crate::audit::Audit,
    /// Session recording (off unless `[recording] dir` is set).
    pub recorder: crate::recording::Recorder,
    /// Open connections and sessions, reported to the controller for operators.
    pub live: Arc<crate::live::Live>,
}

/// What a session channel or a forwarding task needs from its connection,
/// once the client has logged in. Each task holds its own copy for as long as
/// it runs.
#[derive(Clone)]
pub(crate) struct Context {
    /// Replica-wide state.
    pub shared: Arc<Shared>,
    /// The authenticated login.
    pub login: LoginName,
    /// Who the login is: groups, ids, restrictions.
    pub identity: Arc<Identity>,
    /// Connection number, for logs.
    pub conn: u64,
    /// The client's address, for logs.
    pub peer: String,
    /// Connection handle: exit-signal requests, `forwarded-tcpip` channels.
    pub handle: Handle,
    /// The connection's `ssh` span, parent of every channel's and forward's.
    pub span: tracing::Span,
    /// Client-to-container bytes the connection's forwards may hold in the
    /// proxy, in KiB (see `forward::CONNECTION_BUDGET_KIB`).
    pub budget: Arc<Semaphore>,
    /// Slots for forwarded connections open at once on the SSH connection, both
    /// directions (`direct-tcpip` and accepted `ssh -R` connections).
    pub slots: Arc<Semaphore>,
    /// The connection's agent socket in the container (`ssh -A`), once it listens:
    /// every session started afterwards gets it as `SSH_AUTH_SOCK`.
    pub agent_socket: Arc<std::sync::OnceLock<String>>,
    /// The X11 display of each session channel that asked for one (`x11-req`),
    /// set before the request is answered, taken by the channel's start.
    pub x11: X11Displays,
}

/// X11 displays listening in the container, by the session channel they serve.
pub(crate) type X11Displays =
    Arc<std::sync::Mutex<std::collections::HashMap<russh::ChannelId, pb::X11Auth>>>;

impl Context {
    /// The environment the login asked for; empty means the default.
    pub fn environment(&self) -> String {
        self.login.environment.clone().unwrap_or_default()
    }
}
