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
mod state;
mod stream;

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
    config.tls.warn_if_off("agent");
    let firewall = if config.firewall {
        let plan = firewall_plan(&config, local).await;
        Some(Arc::new(
            tokio::task::spawn_blocking(move || firewall::Firewall::protect(plan))
                .await
                .context("installing the container firewall")?,
        ))
    } else {
        None
    };
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
    if let Some(firewall) = &firewall {
        tasks.spawn(repair_firewall(firewall.clone(), stop.clone()));
    }

    let shared = Arc::new(state::Shared {
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
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sessions did not finish hanging up");
    }
    if let Some(firewall) = firewall {
        tokio::task::spawn_blocking(move || firewall.remove())
            .await
            .context("removing the container firewall")?;
    }
    served.context("gRPC server failed")?;
    tracing::info!("agent stopped");
    Ok(())
}

/// What the container firewall refuses: this agent's port, the controller's
/// and `firewall_ports` on this host; `cluster_networks` and the controller's
/// addresses everywhere.
async fn firewall_plan(config: &Config, local: std::net::SocketAddr) -> firewall::Plan {
    let mut ports = vec![local.port()];
    ports.extend(&config.firewall_ports);
    let mut networks: Vec<labssh_proto::net::IpNet> = config
        .cluster_networks
        .iter()
        .filter_map(|n| labssh_proto::net::parse_net(n).ok())
        .collect();
    if let Some((host, port)) = url_host_port(&config.controller) {
        ports.extend(port);
        match tokio::net::lookup_host((host.as_str(), port.unwrap_or(0))).await {
            Ok(addrs) => networks.extend(
                addrs
                    .map(|a| a.ip().to_canonical())
                    // Containers cannot reach this host's loopback at all.
                    .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
                    .map(labssh_proto::net::IpNet::from),
            ),
            Err(e) => tracing::warn!(
                controller = %config.controller,
                "cannot resolve the controller's address to firewall it from containers: {e}"
            ),
        }
    }
    firewall::Plan::new(
        &config.name,
        local,
        &config.container_bridge,
        &ports,
        &networks,
    )
}

/// How often the firewall rules are checked for having been flushed.
const FIREWALL_REPAIR_INTERVAL: Duration = Duration::from_secs(30);

/// Puts back firewall rules that vanished (a firewall reload, an operator's flush).
async fn repair_firewall(firewall: Arc<firewall::Firewall>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(FIREWALL_REPAIR_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {
                let firewall = firewall.clone();
                let _ = tokio::task::spawn_blocking(move || firewall.repair()).await;
            }
        }
    }
}

/// The host and port of an `http(s)://host[:port]/...` URL; IPv6 hosts
/// without their brackets.
fn url_host_port(url: &str) -> Option<(String, Option<u16>)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok())),
        None => Some((authority.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::url_host_port;

    #[test]
    fn controller_urls() {
        let hp = |u: &str| url_host_port(u).unwrap();
        assert_eq!(hp("http://10.0.0.2:7000"), ("10.0.0.2".into(), Some(7000)));
        assert_eq!(
            hp("https://[fd00::2]:7000/"),
            ("fd00::2".into(), Some(7000))
        );
        assert_eq!(hp("https://ctl.lab/x"), ("ctl.lab".into(), None));
        assert!(url_host_port("nonsense").is_none());
    }
}
