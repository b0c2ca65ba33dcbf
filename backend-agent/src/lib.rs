//! labssh backend agent: one per node. Creates and starts per-user containers, spawns
//! processes in them for the proxies' Session streams, and reports its inventory to the
//! controller over a long-lived Attach stream.

mod actions;
pub mod backend;
mod catalogue;
pub mod config;
mod controller_link;
mod discovery;
mod firewall;
mod forward;
pub mod gpus;
mod hooks;
mod identity;
mod inventory;
mod lifecycle;
mod limits;
mod names;
mod service;
mod session;
mod signal;
pub mod start_queue;
mod state;
mod stream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use labssh_proto::pb::agent_server::AgentServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use backend::docker::DockerBackend;
pub use backend::kubernetes::KubeBackend;
pub use backend::{Backend, BackendError, SharedBackend};
pub use config::{Config, ConfigError};
pub use limits::nofile::NofileError;

/// HTTP/2 pings find proxies that vanished without closing their connection, so their
/// sessions are hung up instead of lingering.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Every SSH channel is one stream, and a proxy carries all of its students to this
/// agent over one connection: allow a whole class at once (hyper's default is 200).
const MAX_CONCURRENT_STREAMS: u32 = 4096;
/// As the proxy's side: a stalled stream holds at most its own window...
const STREAM_WINDOW: u32 = 1 << 20;
/// ...and the connection's is many streams' worth.
const CONNECTION_WINDOW: u32 = 128 << 20;
/// Frames up to 64 KiB carry a 32 KiB SSH packet with its gRPC header in one (HTTP/2's
/// default is 16 KiB): fewer frames to cut and parse per byte.
const MAX_FRAME_SIZE: u32 = 64 << 10;
/// Upper bound on waiting for sessions to hang up their processes at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the agent could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The open-file limit `nofile` asks for cannot be had.
    #[error(transparent)]
    Nofile(#[from] NofileError),
    /// Docker cannot be reached.
    #[error("cannot use the container runtime")]
    Runtime(#[source] BackendError),
    /// The listener handed in has no local address.
    #[error("listener has no local address")]
    Listener(#[source] std::io::Error),
    /// Installing the container firewall failed outright (its task panicked).
    #[error("installing the container firewall")]
    InstallFirewall(#[source] tokio::task::JoinError),
    /// Removing the container firewall failed outright (its task panicked).
    #[error("removing the container firewall")]
    RemoveFirewall(#[source] tokio::task::JoinError),
    /// The certificate or key in `[tls]` cannot be used.
    #[error("tls: bad certificate or key")]
    Tls(#[source] labssh_proto::tls::ApplyError),
    /// The gRPC server failed while serving.
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// Runs the agent with the backend `config` names (Docker or Kubernetes) until
/// `shutdown` resolves.
///
/// Serves the Agent gRPC service on `listener` and keeps an Attach stream to the
/// controller, reconnecting as needed; a missing controller never stops the agent.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    config.validate()?;
    limits::nofile::raise(&config)?;
    let backend: SharedBackend = match config.backend {
        config::BackendKind::Docker => Arc::new(
            DockerBackend::connect(&config)
                .await
                .map_err(AgentError::Runtime)?,
        ),
        config::BackendKind::Kubernetes => Arc::new(
            KubeBackend::connect(&config)
                .await
                .map_err(AgentError::Runtime)?,
        ),
    };
    run_with_backend(listener, config, backend, shutdown).await
}

/// [`run`] with any [`Backend`], e.g. a fake one in tests.
pub async fn run_with_backend(
    listener: TcpListener,
    config: Config,
    backend: SharedBackend,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let local = listener.local_addr().map_err(AgentError::Listener)?;
    config.tls.warn_if_off("agent");
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let firewall = firewall::setup::install(&config, local, &tasks, &stop)
        .await
        .map_err(AgentError::InstallFirewall)?;
    if let Some(firewall) = &firewall {
        backend.guard_networks(firewall.clone()).await;
    }
    let endpoint = advertised(&config, local);
    tracing::info!(agent = %config.name, listen = %local, advertise = %endpoint, controller = %config.controller, "agent listening");
    let shared = start(&config, endpoint, backend, &tasks, &stop);
    let served = serve(listener, &config, shared, shutdown, &stop).await;
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sessions did not finish hanging up");
    }
    if let Some(firewall) = firewall {
        firewall::setup::remove(firewall)
            .await
            .map_err(AgentError::RemoveFirewall)?;
    }
    served?;
    tracing::info!("agent stopped");
    Ok(())
}

/// The endpoint proxies are told to reach this agent at.
fn advertised(config: &Config, local: SocketAddr) -> String {
    if !config.advertise.is_empty() {
        return config.advertise.clone();
    }
    if local.ip().is_unspecified() {
        tracing::warn!(%local, "listening on a wildcard address; set `advertise` so proxies can reach this agent");
    }
    format!("{}://{local}", config.tls.scheme())
}

/// Starts what runs beside the gRPC service (inventory refresh, the controller link,
/// disk measurements) on `tasks` until `stop`, and returns the state the service
/// shares.
fn start(
    config: &Config,
    endpoint: String,
    backend: SharedBackend,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Arc<state::Shared> {
    let forward_deny = config
        .forward_deny
        .iter()
        .filter_map(|d| labssh_proto::net::parse_net(d).ok())
        .collect::<Vec<_>>();
    let catalogue = Arc::new(catalogue::Catalogue::default());
    let inventory =
        Arc::new(inventory::Inventory::new(config.capacity).with_gpus(gpus::node_gpus(config)));
    tasks.spawn(inventory::refresh_loop(
        inventory.clone(),
        backend.clone(),
        Duration::from_secs(config.inventory_refresh_secs),
        stop.clone(),
    ));
    if config.services_interval_ms > 0 {
        tasks.spawn(discovery::discovery_loop(
            inventory.clone(),
            backend.clone(),
            Duration::from_millis(config.services_interval_ms),
            stop.clone(),
        ));
    }
    let link = controller_link::ControllerLink {
        name: config.name.clone(),
        endpoint,
        controller: config.controller.clone(),
        tls: config.tls.clone(),
        catalogue: catalogue.clone(),
        inventory: inventory.clone(),
        backend: backend.clone(),
    };
    tasks.spawn(link.run(stop.clone()));
    let limits = limits::Limits::start(
        config,
        backend.clone(),
        inventory.clone(),
        catalogue.clone(),
        tasks,
        stop.clone(),
    );
    let hooks = hooks::Hooks::start(
        &config.name,
        backend.clone(),
        catalogue.clone(),
        tasks,
        stop.clone(),
    );
    let lifecycle = lifecycle::Lifecycle::new(
        &config.name,
        backend.clone(),
        inventory.clone(),
        catalogue.clone(),
        hooks.clone(),
    );
    tasks.spawn(lifecycle.clone().run(stop.clone()));
    Arc::new(state::Shared {
        starts: start_queue::StartQueue::new(
            &config.name,
            config.start_concurrency,
            config.start_queue_limit,
        ),
        lifecycle,
        hooks,
        limits,
        name: config.name.clone(),
        backend,
        catalogue,
        inventory,
        shutdown: stop.clone(),
        tasks: tasks.clone(),
        guard: forward::host_watch::HostGuard::watch(&forward_deny),
        pending: Default::default(),
        agent_peers: Default::default(),
        reattach_grace: config.reattach_grace,
    })
}

/// Serves the Agent service on `listener` until `shutdown` resolves (which cancels
/// `stop`) or the server fails.
async fn serve(
    listener: TcpListener,
    config: &Config,
    shared: Arc<state::Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop: &CancellationToken,
) -> Result<(), AgentError> {
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            // Keystrokes are tiny; do not let Nagle hold them back.
            let _ = stream.set_nodelay(true);
        })
    });
    let server = config.tls.server_builder().map_err(AgentError::Tls)?;
    let serve = server
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .max_frame_size(Some(MAX_FRAME_SIZE))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        // Every call's role is checked here, before any method sees it.
        .add_service(labssh_proto::roles::Guard::new(
            AgentServer::new(service::AgentService::new(shared)),
            config.tls.enabled(),
        ))
        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
    tokio::pin!(serve);
    let served = tokio::select! {
        served = &mut serve => served,
        _ = shutdown => {
            tracing::info!("agent shutting down");
            stop.cancel();
            serve.await
        }
    };
    served.map_err(AgentError::Serve)
}
