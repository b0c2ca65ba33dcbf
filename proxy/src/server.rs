//! The SSH server: shared state, the russh `Server`, and `run`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use russh::server::Server as _;
use russh::{MethodKind, MethodSet};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::credential_cache::{self, CredentialCache};
use crate::handler::Connection;
use crate::upstream::Upstream;
use crate::users::Users;

/// Keepalives find dead clients (laptops closed mid-session) so their
/// containers' processes are hung up instead of lingering.
const SSH_KEEPALIVE: Duration = Duration::from_secs(30);
/// Messages buffered per channel before back-pressure reaches TCP; with
/// 32 KiB packets this bounds a channel's buffer to about 1 MiB.
const CHANNEL_BUFFER: usize = 32;

/// State shared by every connection of this replica.
pub(crate) struct Shared {
    /// The replica's configuration.
    pub config: Config,
    /// Accounts, reloaded when the file changes.
    pub users: Users,
    /// Validated-credential cache (Redis or in-process).
    pub cache: CredentialCache,
    /// Controller and agent clients.
    pub upstream: Upstream,
    /// Source of connection ids for logs.
    pub next_id: AtomicU64,
}

struct ProxyServer {
    shared: Arc<Shared>,
}

impl russh::server::Server for ProxyServer {
    type Handler = Connection;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Connection {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        Connection::new(self.shared.clone(), peer, id)
    }

    fn handle_session_error(&mut self, error: anyhow::Error) {
        tracing::debug!("ssh connection ended with error: {error:#}");
    }
}

/// Serves SSH on an already-bound listener until `shutdown` resolves; then
/// disconnects every client with a message and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let keys = crate::host_key::load_host_keys(&config.host_keys)?;
    let users = Users::open(&config.users_file)?;
    let cache_key = credential_cache::load_or_create_key(&config.cache_key_file)?;
    let cache = if config.redis_url.is_empty() {
        CredentialCache::memory(cache_key, config.auth_cache_ttl())
    } else {
        CredentialCache::redis(&config.redis_url, cache_key, config.auth_cache_ttl())
            .map_err(|e| anyhow::anyhow!("redis_url: {e}"))?
    };
    let upstream = Upstream::new(
        &config.controller,
        config.controller_timeout(),
        config.placement_cache_ttl(),
    )?;

    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    methods.push(MethodKind::Password);
    methods.push(MethodKind::KeyboardInteractive);
    let ssh_config = russh::server::Config {
        server_id: russh::SshId::Standard(
            format!("SSH-2.0-labssh_{}", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods,
        keys,
        auth_rejection_time: Duration::from_millis(config.auth_rejection_ms),
        // OpenSSH opens with a "none" probe; answering it at once saves a
        // full rejection delay on every login.
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(config.inactivity_timeout_secs)),
        keepalive_interval: Some(SSH_KEEPALIVE),
        channel_buffer_size: CHANNEL_BUFFER,
        nodelay: true,
        ..Default::default()
    };

    let local = listener.local_addr()?;
    tracing::info!(
        listen = %local,
        controller = %config.controller,
        cache = cache.kind(),
        users_file = %config.users_file.display(),
        "proxy listening for SSH"
    );
    let shared = Arc::new(Shared {
        config,
        users,
        cache,
        upstream,
        next_id: AtomicU64::new(1),
    });
    let mut server = ProxyServer { shared };
    let running = server.run_on_socket(Arc::new(ssh_config), &listener);
    let handle = running.handle();
    tokio::select! {
        res = running => res?,
        _ = shutdown => {
            tracing::info!(listen = %local, "proxy shutting down; disconnecting clients");
            handle.shutdown("labssh proxy is shutting down".into());
        }
    }
    Ok(())
}
