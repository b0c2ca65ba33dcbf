//! The SSH server: `run`, the accept loop, and ([`serve`]) each connection's
//! task. The accept loop refuses what [`crate::preauth`] limits before spending
//! anything on a connection.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use russh::keys::PrivateKey;
use russh::{MethodKind, MethodSet};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::connection;
use crate::credential_cache::{self, CredentialCache};
use crate::preauth::{self, Gate, Reason, Refusals};
use crate::proxy_protocol::Policy;
use crate::rate_limit::RateLimiter;
use crate::redis_link::RedisLink;
use crate::state::Shared;
use crate::upstream::Upstream;
use crate::users::Users;

mod serve;

use serve::Accepted;

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
    let policy = Policy::of(&config.proxy_protocol)?;
    let name = replica_name(listener.local_addr()?.port());
    let shared = Arc::new(replica(config, &name)?);
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
    let report = tokio::spawn(report_refusals(shared.clone()));
    let sessions = tokio::spawn(crate::live::report(
        shared.live.clone(),
        shared.upstream.controller(),
        shared.audit.clone(),
    ));
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
    report.abort();
    sessions.abort();
    shared.refusals.report_all();
    Ok(())
}

/// Logs, every window, the refusals counted but not logged.
async fn report_refusals(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(preauth::LOG_WINDOW);
    tick.tick().await;
    loop {
        tick.tick().await;
        shared.refusals.report();
    }
}

/// A roll for `max_startups`'s random early drop: uniform in 0..100.
fn roll() -> u32 {
    rand::thread_rng().gen_range(0..100)
}

/// The replica's shared state: accounts, credential cache, limits, clients.
pub(crate) fn replica(config: Config, name: &str) -> anyhow::Result<Shared> {
    let users = Users::open(&config.users_file)?;
    let auth = crate::auth::chain::Chain::new(&config.auth)?;
    let trust = crate::auth::certificate::Trust::new(&config.auth)?;
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
    let limiter = RateLimiter::new(config.rate_limit.clone(), redis.clone());
    let upstream = Upstream::new(
        &config.controller,
        config.tls.clone(),
        config.controller_timeout(),
        config.placement_cache_ttl(),
    )?;
    let audit = crate::audit::Audit::open(
        &config.audit,
        labssh_telemetry::metrics::Component::Proxy,
        name,
    )
    .map_err(|e| anyhow::anyhow!("audit.path {:?}: {e}", config.audit.path))?;
    let recorder = crate::recording::Recorder::open(&config.recording)
        .map_err(|e| anyhow::anyhow!("recording.dir {}: {e}", config.recording.dir.display()))?;
    Ok(Shared {
        audit,
        recorder,
        live: crate::live::Live::new(name),
        gate: Gate::new(&config),
        refusals: Refusals::default(),
        config,
        users,
        auth,
        trust,
        cache,
        limiter,
        redis,
        upstream,
        next_id: AtomicU64::new(1),
    })
}

/// How operators and audit lines name this replica: the host's name and the SSH
/// port it listens on.
pub(crate) fn replica_name(port: u16) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}:{port}")
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
        // Keepalives find dead clients (laptops closed mid-session, half-open
        // TCP) so their containers' processes are hung up instead of lingering.
        keepalive_interval: config.client_alive_interval(),
        keepalive_max: config.client_alive_count_max,
        // The connection counts failures as OpenSSH does and disconnects with
        // its words; russh's own count, which includes the "none" probe, is
        // only a backstop one above it.
        max_auth_attempts: config.max_auth_tries as usize + 1,
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
            let accepted = tokio::time::Instant::now();
            let refusals = &self.shared.refusals;
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                refusals.refuse(Reason::MaxConnections, peer.ip(), max_connections);
                continue;
            };
            // A balancer's client is known once its header is read (by the
            // connection's task); anyone else's now.
            let admitted = if self.policy.trusts(&peer) {
                None
            } else {
                let gate = &self.shared.gate;
                match gate.admit(Some(peer.ip()), roll()) {
                    Ok(unauthenticated) => Some(unauthenticated),
                    Err(reason) => {
                        refusals.refuse(reason, peer.ip(), gate.limit(reason));
                        continue;
                    }
                }
            };
            let conn = Accepted {
                shared: self.shared.clone(),
                ssh_config: self.ssh_config.clone(),
                policy: self.policy.clone(),
                stop: self.stop.clone(),
                accepted,
                admitted,
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
