//! labssh controller: the registry of backend agents, placement of users'
//! containers on them, and the environment catalogue, served over gRPC.
//!
//! It keeps no database. Agents hold a long-lived Attach stream, register
//! with their full container inventory and heartbeat; after a restart the
//! controller's state is rebuilt from those streams within one heartbeat.

pub mod catalogue;
pub mod config;
pub mod containers;
pub mod members;
pub mod placement;
pub mod prestart;
pub mod registry;
pub mod schedule;
pub mod service;
pub mod services;
pub mod sessions;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use labssh_proto::pb::controller_server::ControllerServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub use config::{Config, ConfigError, EnvironmentConfig};

/// Why the controller could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The configuration breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener handed in has no local address.
    #[error("controller listener has no local address")]
    Listener(#[source] std::io::Error),
    /// The certificate or key in `[tls]` cannot be used.
    #[error("tls: bad certificate or key")]
    Tls(#[source] labssh_proto::tls::ApplyError),
    /// The gRPC server failed while serving.
    #[error("controller gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
    /// `[audit] path` cannot be opened.
    #[error("audit.path {path:?}: {source}")]
    Audit {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

use registry::Registry;
use service::ControllerService;

/// HTTP/2 pings find agent connections whose peer vanished without a FIN
/// (a powered-off node), so their stream tasks end instead of lingering.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// A ping unanswered this long closes the connection.
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the controller's gRPC service on `listener` until `shutdown`
/// resolves, then ends every agent stream and returns once in-flight calls
/// have finished.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ControllerError> {
    config.validate()?;
    config.tls.warn_if_off("controller");
    let addr = listener.local_addr().map_err(ControllerError::Listener)?;

    let audit = labssh_telemetry::audit::Audit::open(
        &config.audit,
        labssh_telemetry::metrics::Component::Controller,
        &addr.to_string(),
    )
    .map_err(|source| ControllerError::Audit {
        path: config.audit.path.clone(),
        source,
    })?;
    let stop = CancellationToken::new();
    let registry = Arc::new(Registry::new(&config));
    let catalogue = Arc::new(catalogue::Catalogue::new(&config));
    let prestarter = Arc::new(prestart::Prestarter::new(
        &config,
        registry.clone(),
        catalogue.clone(),
    ));
    let service = ControllerService::new(
        &config,
        registry.clone(),
        catalogue,
        prestarter.clone(),
        audit,
        stop.clone(),
    );
    let sweeper = tokio::spawn(sweep(registry, config.heartbeat_interval(), stop.clone()));
    let scheduler = tokio::spawn(schedule::run(
        config.schedule.clone(),
        prestarter,
        Arc::new(schedule::SystemClock),
        stop.clone(),
    ));

    // Placement replies are small and latency-bound; do not let Nagle hold
    // them back (tonic ignores its own nodelay setting for custom incoming).
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    let signal = {
        let stop = stop.clone();
        async move {
            shutdown.await;
            info!("controller shutting down");
            // Agent streams never end on their own; end them so the server's
            // graceful shutdown can finish.
            stop.cancel();
        }
    };

    info!(
        %addr,
        environments = ?config.environment_names(),
        default_environment = %config.default_environment,
        "controller serving gRPC"
    );
    let server = config.tls.server_builder().map_err(ControllerError::Tls)?;
    let served = server
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        // Every call's role is checked here, before any method sees it.
        .add_service(labssh_proto::roles::Guard::new(
            ControllerServer::new(service),
            config.tls.enabled(),
        ))
        .serve_with_incoming_shutdown(incoming, signal)
        .await;
    stop.cancel();
    let _ = sweeper.await;
    let _ = scheduler.await;
    served.map_err(ControllerError::Serve)?;
    info!(%addr, "controller stopped");
    Ok(())
}

/// Logs agents as they go silent and records the agent gauges, once per
/// heartbeat interval. Placement checks liveness itself, so this is for
/// operators only.
async fn sweep(registry: Arc<Registry>, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {
                let now = Instant::now();
                registry.sweep(now);
                labssh_telemetry::metrics::controller_agents(&registry.agents(now));
            }
        }
    }
    debug!("agent sweep stopped");
}
