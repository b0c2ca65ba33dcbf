//! The controller's own clients to agents, for the Ensure calls of a prestart:
//! one lazily connected channel per agent endpoint, kept for the process's life
//! (an agent's channel reconnects by itself after the agent restarts).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use labssh_proto::pb::agent_client::AgentClient;
use labssh_proto::roles::{server_name, Role};
use labssh_proto::tls::TlsFiles;
use tonic::transport::{Channel, Endpoint};

/// A dead node should fail its students' prestarts promptly, not after the
/// kernel's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Channels to agents, by (agent name, endpoint): the name is the one its
/// certificate must carry.
#[derive(Debug)]
pub struct AgentClients {
    /// The controller's certificate, presented as a client under mTLS.
    tls: TlsFiles,
    /// Cached channels; entries live as long as the controller.
    channels: Mutex<HashMap<(String, String), Channel>>,
}

impl AgentClients {
    /// Clients presenting `tls` (the controller's identity) when mTLS is on.
    pub fn new(tls: TlsFiles) -> Self {
        Self {
            tls,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// A client for agent `agent` at `endpoint`; the server must prove it is
    /// that agent under mTLS.
    pub fn client(&self, agent: &str, endpoint: &str) -> Result<AgentClient<Channel>, String> {
        let key = (agent.to_string(), endpoint.to_string());
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(&key) {
            return Ok(AgentClient::new(channel.clone()));
        }
        let endpoint_config = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("agent {agent}: endpoint {endpoint:?} is not a URI: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT);
        let endpoint_config = self
            .tls
            .secure(endpoint_config, &server_name(Role::Agent, agent))
            .map_err(|e| format!("agent {agent}: the controller's tls files: {e}"))?;
        let channel = endpoint_config.connect_lazy();
        channels.insert(key, channel.clone());
        Ok(AgentClient::new(channel))
    }
}
