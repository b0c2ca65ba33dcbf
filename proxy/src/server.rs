//! The SSH server: `run`, the accept loop and each connection's task.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use labssh_telemetry::metrics::{self as telemetry, Component};
use russh::keys::PrivateKey;
use russh::server::{Handle, RunningSession};
use russh::{MethodKind, MethodSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::connection::{self, Connection, Handler};
use crate::credential_cache::{self, CredentialCache};
use crate::proxy_protocol::{self, Peer, Policy};
use crate::rate_limit::RateLimiter;
use crate::redis_link::RedisLink;
use crate::state::Shared;
use crate::upstream::Upstream;
use crate::users::Users;

/// Keepalives find dead clients (laptops closed mid-session) so their
/// containers' processes are hung up instead of lingering.
const SSH_KEEPALIVE: Duration = Duration::from_secs(30);
/// Messages buffered per channel before back-pressure reaches TCP; with
/// 32 KiB packets this bounds a channel's buffer to about 1 MiB.
const CHANNEL_BUFFER: usize = 32;

/// How long shutdown waits for connections to take their leave.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// Back-off after a failed accept (e.g. out of file descriptors), so the
/// loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves SSH on an already-bound listener until `shutdown` resolves; then
/// disconnects every client with a message and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let keys = crate::host_key::load_host_keys(&config.host_keys)?;
    let ssh_config = Arc::new(ssh_config(&config, keys));
    let policy = Policy {
        trusted: proxy_protocol::parse_trusted(&config.proxy_protocol.trusted)
            .map_err(|p| anyhow::anyhow!(p.join("; ")))?,
        required: config.proxy_protocol.required,
    };
    let shared = Arc::new(replica(config)?);
    let config = &shared.config;
    let max_connections = config.max_connections;
    let local = listener.local_addr()?;
    tracing::info!(
        listen = %local,
        controller = %config.controller,
        cache = shared.cache.kind(),
        users_file = %config.users_file.display(),
        proxy_protocol_from = ?config.proxy_protocol.trusted,
        max_connections,
        "proxy listening for SSH"
    );
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop) = watch::channel(false);
    let accepting = Accepting {
        shared: shared.clone(),
        ssh_config,
        policy,
        stop,
        slots: slots.clone(),
    };
    accepting.accept_until(&listener, shutdown).await;
    tracing::info!(listen = %local, "proxy shutting down; disconnecting clients");
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within {DRAIN_GRACE:?}");
    }
    Ok(())
}

/// The replica's shared state: accounts, credential cache, limits, clients.
fn replica(config: Config) -> anyhow::Result<Shared> {
    let users = Users::open(&config.users_file)?;
    let cache_key = credential_cache::load_or_create_key(&config.cache_key_file)?;
    let redis = if config.redis_url.is_empty() {
        None
    } else {
        Some(Arc::new(
            RedisLink::new(&config.redis_url).map_err(|e| anyhow::anyhow!("redis_url: {e}"))?,
        ))
    };
    let cache = match &redis {
        None => CredentialCache::memory(cache_key, config.auth_cache_ttl()),
        Some(link) => CredentialCache::redis(link.clone(), cache_key, config.auth_cache_ttl()),
    };
    let limiter = RateLimiter::new(config.rate_limit.clone(), redis);
    let upstream = Upstream::new(
        &config.controller,
        config.tls.clone(),
        config.controller_timeout(),
        config.placement_cache_ttl(),
    )?;
    Ok(Shared {
        config,
        users,
        cache,
        limiter,
        upstream,
        next_id: AtomicU64::new(1),
    })
}

/// russh's configuration for this replica.
fn ssh_config(config: &Config, keys: Vec<PrivateKey>) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    methods.push(MethodKind::Password);
    methods.push(MethodKind::KeyboardInteractive);
    russh::server::Config {
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
    }
}

/// What the accept loop hands each connection; lives as long as `run`.
struct Accepting {
    /// Replica-wide state.
    shared: Arc<Shared>,
    /// russh server configuration.
    ssh_config: Arc<russh::server::Config>,
    /// PROXY protocol policy.
    policy: Policy,
    /// Becomes true on shutdown.
    stop: watch::Receiver<bool>,
    /// One permit per open connection, at most `max_connections`.
    slots: Arc<Semaphore>,
}

impl Accepting {
    /// Accepts connections, each served by its own task, until `shutdown`.
    async fn accept_until(&self, listener: &TcpListener, shutdown: impl Future<Output = ()>) {
        let max_connections = self.shared.config.max_connections;
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, max_connections, "connection refused: too many connections");
                continue;
            };
            let conn = Accepted {
                shared: self.shared.clone(),
                ssh_config: self.ssh_config.clone(),
                policy: self.policy.clone(),
                stop: self.stop.clone(),
            };
            // One connection, one trace: its phases are children of this span.
            let span = connection::span(peer);
            let serve = async move {
                conn.serve(stream, peer).await;
                drop(slot);
            };
            tokio::spawn(tracing::Instrument::instrument(serve, span));
        }
    }
}

/// What a connection task needs.
struct Accepted {
    /// Replica-wide state.
    shared: Arc<Shared>,
    /// russh server configuration.
    ssh_config: Arc<russh::server::Config>,
    /// PROXY protocol policy.
    policy: Policy,
    /// Becomes true on shutdown.
    stop: watch::Receiver<bool>,
}

impl Accepted {
    async fn serve(self, mut stream: TcpStream, socket_peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let Peer::Client(client) = match self.policy.accept(&mut stream, socket_peer).await {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!("connection refused: {e}");
                return;
            }
        };
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (logged_in, login_seen) = watch::channel(false);
        let (connection, handler) =
            Connection::new(self.shared.clone(), Some(client), id, logged_in);
        let grace = self.shared.config.login_grace();
        let deadline = tokio::time::Instant::now() + grace;
        let started = russh::server::run_stream(self.ssh_config.clone(), stream, handler);
        let session = match tokio::time::timeout_at(deadline, started).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(conn = id, %client, "ssh handshake failed: {e:#}");
                return;
            }
            Err(_) => {
                telemetry::error(Component::Proxy, "login_grace");
                tracing::info!(conn = id, %client, "no SSH version within {grace:?}; closed");
                return;
            }
        };
        let handle = session.handle();
        tokio::spawn(tracing::Instrument::in_current_span(
            connection.run(handle.clone()),
        ));
        self.watch(session, handle, id, client, deadline, login_seen)
            .await;
    }

    /// Waits for the connection to end, disconnecting it when the login
    /// grace passes without a login, or at shutdown.
    async fn watch(
        mut self,
        session: RunningSession<Handler>,
        handle: Handle,
        id: u64,
        client: SocketAddr,
        deadline: tokio::time::Instant,
        mut login_seen: watch::Receiver<bool>,
    ) {
        let grace = self.shared.config.login_grace();
        // Resolves only if the login grace passes without a login.
        let grace_over = async move {
            if tokio::time::timeout_at(deadline, login_seen.wait_for(|done| *done))
                .await
                .is_ok()
            {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = session => {
                if let Err(e) = result {
                    tracing::debug!(conn = id, %client, "ssh connection ended with error: {e:#}");
                }
            }
            _ = grace_over => {
                telemetry::error(Component::Proxy, "login_grace");
                tracing::info!(conn = id, %client, "not logged in within {grace:?}; disconnected");
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        format!("labssh: no login within {} s", grace.as_secs()),
                        String::new(),
                    )
                    .await;
            }
            _ = async { let _ = self.stop.wait_for(|stop| *stop).await; } => {
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "labssh proxy is shutting down".into(),
                        String::new(),
                    )
                    .await;
            }
        }
    }
}
