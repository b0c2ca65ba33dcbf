//! gRPC clients towards the controller and the agents.
//!
//! One HTTP/2 connection per proxy–agent pair carries every session stream
//! to that agent; placements are cached for a few seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use labssh_proto::pb;
use labssh_proto::roles::{self, Role};
use labssh_proto::tls::{TlsFiles, CONTROLLER_NAME};
use pb::agent_client::AgentClient;
use pb::controller_client::ControllerClient;
use tonic::transport::{Channel, Endpoint};

mod error;
mod first_answer;
mod identity;

use crate::auth::identity::Identity;
pub use error::{EndpointError, UpstreamError};
pub(crate) use first_answer::{first_answer, first_answer_with, with_first};
pub use identity::wire_identity;

/// A dead endpoint should fail a login quickly, not after TCP's minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 flow control per stream: what one session or forward may have in flight
/// from the agent; enough for full speed on a LAN.
pub const STREAM_WINDOW: u32 = 1 << 20;
/// Per connection: unread data of every stream counts against it, so it is many
/// streams' worth; one student's stalled forward cannot stop the others'.
pub const CONNECTION_WINDOW: u32 = 128 << 20;
/// Largest HTTP/2 frame the agents may send us: 64 KiB carries a 32 KiB read with its
/// gRPC header in one frame (HTTP/2's default is 16 KiB).
const MAX_FRAME_SIZE: u32 = 64 << 10;
/// Keeps idle proxy–agent connections alive through middleboxes and notices
/// a dead peer.
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(20);

/// Where a user's container lives.
#[derive(Debug, Clone)]
pub struct Placement {
    /// Agent name, for logs.
    pub agent: String,
    /// Agent gRPC endpoint.
    pub endpoint: String,
    /// Resolved environment name.
    pub environment: String,
    /// A message for the student from the controller (e.g. their previous
    /// container is on a node that is down); empty when none.
    pub notice: String,
    /// The environment's session recording: "off", "output", "input-and-output".
    pub record: String,
}

/// Connections to the controller and agents, shared by all SSH connections.
pub struct Upstream {
    /// Controller client (one lazily-connected HTTP/2 channel).
    controller: ControllerClient<Channel>,
    /// Timeout for controller calls.
    controller_timeout: Duration,
    /// Agent clients by (endpoint, agent name): the name is what TLS verifies.
    agents: Mutex<HashMap<(String, String), AgentClient<Channel>>>,
    /// Cached placements by (user, requested environment).
    placements: Mutex<HashMap<(String, String), (Instant, Placement)>>,
    /// How long a placement stays cached.
    placement_ttl: Duration,
    /// mTLS material for both controller and agents.
    tls: TlsFiles,
}

/// An endpoint with our timeouts, and mTLS verifying the server as
/// `server_name` when TLS is configured.
fn endpoint(uri: &str, tls: &TlsFiles, server_name: &str) -> Result<Endpoint, EndpointError> {
    let endpoint = Endpoint::from_shared(uri.to_string())
        .map_err(EndpointError::Uri)?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(HTTP2_KEEPALIVE)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    tls.secure(endpoint, server_name)
        .map_err(EndpointError::Tls)
}

impl Upstream {
    /// Builds the clients; nothing connects until first use.
    pub fn new(
        controller_uri: &str,
        tls: TlsFiles,
        controller_timeout: Duration,
        placement_ttl: Duration,
    ) -> Result<Upstream, UpstreamError> {
        tls.warn_if_off("proxy");
        let channel = endpoint(controller_uri, &tls, CONTROLLER_NAME)
            .map_err(|source| UpstreamError::ControllerEndpoint {
                uri: controller_uri.to_owned(),
                source,
            })?
            .connect_lazy();
        Ok(Upstream {
            controller: ControllerClient::new(channel),
            controller_timeout,
            agents: Mutex::new(HashMap::new()),
            placements: Mutex::new(HashMap::new()),
            placement_ttl,
            tls,
        })
    }

    /// Asks the controller where (user, env) lives, or answers from cache; the
    /// controller refuses an environment `identity`'s groups do not open. The
    /// cache is keyed by (user, env): a user's groups are theirs alone, and a
    /// refusal is never cached.
    pub async fn place(
        &self,
        user: &str,
        environment: &str,
        identity: &Identity,
    ) -> Result<Placement, UpstreamError> {
        let key = (user.to_string(), environment.to_string());
        if let Some((at, p)) = self.placements.lock().expect("lock").get(&key) {
            if at.elapsed() < self.placement_ttl {
                tracing::Span::current().record("cached", true);
                return Ok(p.clone());
            }
        }
        let mut client = self.controller.clone();
        let request = pb::PlaceRequest {
            user: user.to_string(),
            environment: environment.to_string(),
            identity: Some(wire_identity(identity)),
        };
        let reply = match tokio::time::timeout(
            self.controller_timeout,
            client.place(labssh_telemetry::grpc::request(request)),
        )
        .await
        {
            Err(_) => return Err(UpstreamError::ControllerDown(None)),
            Ok(Err(status)) => return Err(UpstreamError::from_place_status(status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let placement = Placement {
            agent: reply.agent_name,
            endpoint: reply.agent_endpoint,
            environment: reply.environment,
            notice: reply.notice,
            record: reply.record,
        };
        self.placements
            .lock()
            .expect("lock")
            .insert(key, (Instant::now(), placement.clone()));
        Ok(placement)
    }

    /// The controller client, for streams of the replica's own (session reports).
    pub fn controller(&self) -> ControllerClient<Channel> {
        self.controller.clone()
    }

    /// Drops a cached placement, e.g. after its agent failed.
    pub fn forget_placement(&self, user: &str, environment: &str) {
        self.placements
            .lock()
            .expect("lock")
            .remove(&(user.to_string(), environment.to_string()));
    }

    /// The client for the agent `placement` names (shared HTTP/2
    /// connection). With mTLS the server must hold that agent's own
    /// certificate (`NAME.agent.labssh`), so another node's cannot pose as it.
    pub fn agent(&self, placement: &Placement) -> Result<AgentClient<Channel>, UpstreamError> {
        let key = (placement.endpoint.clone(), placement.agent.clone());
        let mut agents = self.agents.lock().expect("lock");
        if let Some(c) = agents.get(&key) {
            return Ok(c.clone());
        }
        let uri = &placement.endpoint;
        let server_name = roles::server_name(Role::Agent, &placement.agent);
        let channel = endpoint(uri, &self.tls, &server_name)
            .map_err(|source| UpstreamError::AgentEndpoint {
                uri: uri.clone(),
                source,
            })?
            .connect_lazy();
        let client = AgentClient::new(channel);
        agents.insert(key, client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_controller_nobody_listens_for_is_down() {
        // A port nothing listens on.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let uri = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let upstream = Upstream::new(
            &uri,
            TlsFiles::default(),
            Duration::from_secs(5),
            Duration::from_secs(1),
        )
        .unwrap();
        let error = upstream
            .place("alice", "", &Identity::from("users_file"))
            .await
            .unwrap_err();
        assert!(
            matches!(error, UpstreamError::ControllerDown(Some(_))),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the lab controller is not reachable right now; please try again in a minute"
        );
    }
}
