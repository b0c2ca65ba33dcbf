//! [`KubeBackend`]: making sure of a student's pod and home, stopping it, and the one
//! list+watch (a reflector) over this agent's pods that the inventory reads.

use std::sync::Arc;

use async_trait::async_trait;
use labssh_proto::pb;

use super::exec::{KubeExec, PodExec};
use super::inside::Inside;
use crate::backend::{
    Backend, BackendError, ContainerInfo, EnsureOptions, Ensured, Process, SpawnSpec,
};
use crate::config::Config;

/// Pods on this agent's node.
pub struct KubeBackend {
    client: kube::Client,
    inside: Inside,
}

impl KubeBackend {
    /// Connects with the in-cluster service account (or `$KUBECONFIG`) and starts the
    /// pod reflector.
    pub async fn connect(config: &Config) -> Result<KubeBackend, BackendError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| BackendError::Runtime {
                action: "connecting to Kubernetes",
                message: e.to_string(),
            })?;
        let exec = Arc::new(KubeExec {
            client: client.clone(),
        });
        Ok(KubeBackend::with_client(client, config, exec))
    }

    /// The backend over `client` (a mocked API server in tests), with `exec` for
    /// processes in pods whose helper cannot be reached.
    pub fn with_client(
        client: kube::Client,
        config: &Config,
        exec: Arc<dyn PodExec>,
    ) -> KubeBackend {
        let _ = config;
        KubeBackend {
            client,
            inside: Inside::new(exec),
        }
    }
}

#[async_trait]
impl Backend for KubeBackend {
    async fn ensure_with(
        &self,
        user: &str,
        env: &pb::Environment,
        options: &EnsureOptions,
    ) -> Result<Ensured, BackendError> {
        let _ = (user, env, options, &self.client, &self.inside);
        todo!("api helper")
    }

    async fn spawn(&self, container: &str, spec: SpawnSpec) -> Result<Process, BackendError> {
        let _ = (container, spec);
        todo!("api helper")
    }

    async fn inventory(&self) -> Result<Vec<ContainerInfo>, BackendError> {
        todo!("api helper")
    }
}
