//! labssh backend agent: one per node. Creates and starts per-user containers, spawns
//! processes in them for the proxies' Session streams, and reports its inventory to the
//! controller over a long-lived Attach stream.

pub mod backend;
mod catalogue;
pub mod config;
mod controller_link;
mod firewall;
mod forward;
mod inventory;
mod limits;
mod names;
mod service;
mod session;
mod signal;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use labssh_proto::pb::agent_server::AgentServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use backend::{Backend, DockerBackend, SharedBackend};
pub use config::{Config, ConfigError};

/// HTTP/2 pings find proxies that vanished without closing their connection, so their
/// sessions are hung up instead of lingering.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Every SSH channel is one stream, and a proxy carries all of its students to this
/// agent over one connection: allow a whole class at once (hyper's default is 200).
const MAX_CONCURRENT_STREAMS: u32 = 4096;
/// Upper bound on waiting for sessions to hang up their processes at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs the agent with the Docker backend from `config` until `shutdown` resolves.
///
/// Serves the Agent gRPC service on `listener` and keeps an Attach stream to the
/// controller, reconnecting as needed; a missing controller never stops the agent.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    limits::nofile::raise(&config)?;
    let backend = DockerBackend::connect(&config)
        .await
        .context("cannot use the container runtime")?;
    run_with_backend(listener, config, Arc::new(backend), shutdown).await
}

/// [`run`] with any [`Backend`], e.g. a fake one in tests.
pub async fn run_with_backend(
    listener: TcpListener,
    config: Config,
    backend: SharedBackend,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local = listener
        .local_addr()
        .context("listener has no local address")?;
    let _firewall = config.firewall.then(|| {
        let mut ports = vec![local.port()];
        if let Some(port) = url_port(&config.controller) {
            ports.push(port);
        }
        ports.extend(&config.firewall_ports);
        ports.sort_unstable();
        ports.dedup();
        firewall::Firewall::protect(&config.name, &config.container_bridge, &ports)
    });
    let endpoint = if config.advertise.is_empty() {
        if local.ip().is_unspecified() {
            tracing::warn!(%local, "listening on a wildcard address; set `advertise` so proxies can reach this agent");
        }
        format!("{}://{local}", config.tls.scheme())
    } else {
        config.advertise.clone()
    };
    tracing::info!(agent = %config.name, listen = %local, advertise = %endpoint, controller = %config.controller, "agent listening");

    let forward_deny = config
        .forward_deny
        .iter()
        .filter_map(|d| labssh_proto::net::parse_net(d).ok())
        .collect::<Vec<_>>();
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let catalogue = Arc::new(catalogue::Catalogue::default());
    let inventory = Arc::new(inventory::Inventory::new(config.capacity));

    tasks.spawn(inventory::refresh_loop(
        inventory.clone(),
        backend.clone(),
        Duration::from_secs(config.inventory_refresh_secs),
        stop.clone(),
    ));
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

    let shared = Arc::new(service::Shared {
        limits: limits::Limits::start(
            &config,
            backend.clone(),
            inventory.clone(),
            catalogue.clone(),
            &tasks,
            stop.clone(),
        ),
        name: config.name.clone(),
        backend,
        catalogue,
        inventory,
        shutdown: stop.clone(),
        tasks: tasks.clone(),
        guard: forward::host_watch::HostGuard::watch(&forward_deny),
        pending: Default::default(),
    });
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|stream| {
            // Keystrokes are tiny; do not let Nagle hold them back.
            let _ = stream.set_nodelay(true);
        })
    });
    let server = config
        .tls
        .server_builder()
        .map_err(|e| anyhow::anyhow!("tls: bad certificate or key: {e}"))?;
    let serve = server
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        // As the proxy's side: a stalled stream holds at most its own window, and
        // the connection's is many streams' worth.
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(128 << 20))
        // Frames up to 64 KiB carry a 32 KiB SSH packet with its gRPC header in one
        // (HTTP/2's default is 16 KiB): fewer frames to cut and parse per byte.
        .max_frame_size(Some(64 << 10))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .add_service(AgentServer::new(service::AgentService::new(shared)))
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
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sessions did not finish hanging up");
    }
    served.context("gRPC server failed")?;
    tracing::info!("agent stopped");
    Ok(())
}

/// The port of an `http(s)://host:port` URL.
fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}
