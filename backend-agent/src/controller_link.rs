//! The agent's long-lived Attach stream to the controller: register, receive the
//! catalogue, heartbeat; reconnect with backoff whenever it breaks.

use std::sync::Arc;
use std::time::Duration;

use labssh_proto::pb;
use labssh_proto::pb::controller_client::ControllerClient;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::backend::SharedBackend;
use crate::catalogue::Catalogue;
use crate::inventory::Inventory;

/// First reconnect delay: quick enough that a controller restart is barely noticed.
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest reconnect delay, so agents find a recovered controller within seconds.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A controller that accepts TCP but does not answer is as good as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for the Welcome after registering.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Used when the controller asks for no particular heartbeat interval.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);
/// Floor on the heartbeat interval, whatever the controller asks.
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);
/// HTTP/2 pings detect a controller that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds the inventory read before registering when Docker is slow.
const REGISTER_REFRESH_TIMEOUT: Duration = Duration::from_secs(5);
/// Outgoing messages in flight; heartbeats are dropped, not queued, beyond this.
const OUTBOX: usize = 4;

/// Everything the link needs; lives as long as the agent.
pub struct ControllerLink {
    /// This agent's name.
    pub name: String,
    /// Endpoint proxies should dial, sent in Register.
    pub endpoint: String,
    /// Controller URL.
    pub controller: String,
    /// mTLS material; the controller is verified as `labssh-controller`.
    pub tls: labssh_proto::tls::TlsFiles,
    /// Updated from every Welcome.
    pub catalogue: Arc<Catalogue>,
    /// Source of the status in Register and Heartbeat.
    pub inventory: Arc<Inventory>,
    /// Read once before each Register, so the controller gets the full inventory.
    pub backend: SharedBackend,
}

/// How one Attach attempt ended.
enum Ended {
    /// Shutdown was requested.
    Shutdown,
    /// The stream broke after a Welcome (so the next attempt starts with a short delay).
    AfterWelcome(LinkError),
    /// It never got as far as a Welcome.
    BeforeWelcome(LinkError),
}

/// Why the link to the controller broke; logged, and the link tries again.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    /// `controller` is not a URL tonic can dial.
    #[error("bad controller URL: {0}")]
    BadUrl(#[source] tonic::transport::Error),
    /// The `[tls]` files cannot be used.
    #[error("tls: {0}")]
    Tls(#[source] labssh_proto::tls::ApplyError),
    /// The controller cannot be reached.
    #[error("cannot connect: {}", error_chain(.0))]
    Connect(#[source] tonic::transport::Error),
    /// The controller refused the Attach call.
    #[error("attach refused: {0}")]
    Refused(#[source] tonic::Status),
    /// The Attach stream failed before its Welcome.
    #[error("attach failed: {0}")]
    Failed(#[source] tonic::Status),
    /// The Attach stream ended before its Welcome.
    #[error("stream ended before Welcome")]
    EndedBeforeWelcome,
    /// No Welcome came in time.
    #[error("no Welcome from the controller")]
    NoWelcome,
    /// The controller ended the stream.
    #[error("controller closed the stream")]
    Closed,
    /// The stream failed after its Welcome.
    #[error("stream failed: {0}")]
    Stream(#[source] tonic::Status),
}

impl ControllerLink {
    /// Keeps an Attach stream open until `shutdown`; never gives up on the controller.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delay = BACKOFF_START;
        loop {
            let ended = tokio::select! {
                _ = shutdown.cancelled() => Ended::Shutdown,
                ended = self.attach_once(&shutdown) => ended,
            };
            let reason = match ended {
                Ended::Shutdown => return,
                Ended::AfterWelcome(reason) => {
                    delay = BACKOFF_START;
                    reason
                }
                Ended::BeforeWelcome(reason) => reason,
            };
            // Jitter spreads the reconnects of many agents after a controller restart.
            let pause = delay.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
            tracing::warn!(controller = %self.controller, retry_in = ?pause, "controller link down: {reason}");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    }

    async fn attach_once(&self, shutdown: &CancellationToken) -> Ended {
        let endpoint = match tonic::transport::Endpoint::from_shared(self.controller.clone()) {
            Ok(e) => e
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT),
            Err(e) => return Ended::BeforeWelcome(LinkError::BadUrl(e)),
        };
        let endpoint = match self
            .tls
            .secure(endpoint, labssh_proto::tls::CONTROLLER_NAME)
        {
            Ok(e) => e,
            Err(e) => return Ended::BeforeWelcome(LinkError::Tls(e)),
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return Ended::BeforeWelcome(LinkError::Connect(e)),
        };
        let mut client = ControllerClient::new(channel);

        let _ = tokio::time::timeout(
            REGISTER_REFRESH_TIMEOUT,
            self.inventory.refresh(&self.backend),
        )
        .await;
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let register = pb::agent_message::Msg::Register(pb::Register {
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            status: Some(self.inventory.status()),
        });
        let _ = outbox.try_send(pb::AgentMessage {
            msg: Some(register),
        });
        let mut inbound = match client.attach(ReceiverStream::new(rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Ended::BeforeWelcome(LinkError::Refused(status)),
        };
        let mut interval = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::ControllerMessage {
                msg: Some(pb::controller_message::Msg::Welcome(welcome)),
            }))) => self.welcome(welcome),
            Ok(Ok(_)) => return Ended::BeforeWelcome(LinkError::EndedBeforeWelcome),
            Ok(Err(status)) => return Ended::BeforeWelcome(LinkError::Failed(status)),
            Err(_) => return Ended::BeforeWelcome(LinkError::NoWelcome),
        };
        tracing::info!(controller = %self.controller, agent = %self.name, "registered with controller");

        let mut ticks = heartbeat_ticks(interval);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ended::Shutdown,
                message = inbound.message() => match message {
                    Ok(Some(pb::ControllerMessage {
                        msg: Some(pb::controller_message::Msg::Welcome(welcome)),
                    })) => {
                        let new_interval = self.welcome(welcome);
                        if new_interval != interval {
                            interval = new_interval;
                            ticks = heartbeat_ticks(interval);
                        }
                    }
                    Ok(Some(pb::ControllerMessage {
                        msg: Some(pb::controller_message::Msg::SetDraining(set)),
                    })) => self.inventory.set_draining(set.draining),
                    Ok(Some(_)) => {} // a newer controller's message this agent does not know
                    Ok(None) => return Ended::AfterWelcome(LinkError::Closed),
                    Err(status) => return Ended::AfterWelcome(LinkError::Stream(status)),
                },
                _ = ticks.tick() => self.heartbeat(&outbox),
                _ = self.inventory.changed() => self.heartbeat(&outbox),
            }
        }
    }

    /// Applies a Welcome; returns the heartbeat interval it asks for.
    fn welcome(&self, welcome: pb::Welcome) -> Duration {
        tracing::debug!(
            environments = welcome.environments.len(),
            heartbeat_ms = welcome.heartbeat_interval_ms,
            "catalogue received"
        );
        self.catalogue.replace(welcome.environments);
        match welcome.heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(ms.into()).max(MIN_HEARTBEAT),
        }
    }

    fn heartbeat(&self, outbox: &mpsc::Sender<pb::AgentMessage>) {
        let status = self.inventory.status();
        labssh_telemetry::metrics::agent_status(&self.name, &status);
        let heartbeat = pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
            status: Some(status),
        });
        // A full outbox means the controller is behind; the next heartbeat carries the
        // whole status anyway.
        let _ = outbox.try_send(pb::AgentMessage {
            msg: Some(heartbeat),
        });
    }
}

fn heartbeat_ticks(every: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// tonic's transport errors hide the useful part ("connection refused") in the source.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
