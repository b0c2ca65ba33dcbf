//! What every stream and call of the Agent service shares, below all of them: the
//! backend, the catalogue, the limits and the agent's own lifetime.

use std::sync::Arc;

use labssh_proto::pb;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{BackendError, Ensured, SharedBackend};
use crate::catalogue::{Catalogue, CatalogueError};
use crate::forward::host_watch::HostGuard;
use crate::forward::pending::Pending;
use crate::hooks::Hooks;
use crate::inventory::Inventory;
use crate::limits::Limits;
use crate::names;

/// State shared by all rpcs; lives as long as the agent.
pub struct Shared {
    /// This agent's name, the `agent` label of its metrics.
    pub name: String,
    /// The container runtime.
    pub backend: SharedBackend,
    /// Environments from the controller.
    pub catalogue: Arc<Catalogue>,
    /// Containers and session count for heartbeats.
    pub inventory: Arc<Inventory>,
    /// Cancelled when the agent shuts down; ends every session.
    pub shutdown: CancellationToken,
    /// Session tasks, so shutdown can wait for their cleanup.
    pub tasks: TaskTracker,
    /// Addresses forwarding never reaches, whatever the catalogue says; follows this
    /// host's address changes.
    pub guard: HostGuard,
    /// What one student may hold on this node: caps and disk quotas.
    pub limits: Arc<Limits>,
    /// `ssh -R` connections accepted and not yet attached.
    pub pending: Arc<Pending>,
    /// The environments' lifecycle hooks and their timers.
    pub hooks: Hooks,
}

/// Why a student's container could not be ensured; the message is for the student.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnsureError {
    /// The user name is not one labssh accepts.
    #[error("invalid user name '{0}'")]
    InvalidUser(String),
    /// The environment is not in the catalogue (or there is no catalogue yet).
    #[error(transparent)]
    Environment(#[from] CatalogueError),
    /// The runtime could not find, create or start the container.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A required create hook failed.
    #[error("{0}")]
    Hook(String),
}

impl Shared {
    /// Validates the request, looks the environment up and ensures the container;
    /// records a created or started container in the inventory at once.
    pub async fn ensure(
        &self,
        user: &str,
        environment: &str,
    ) -> Result<(pb::Environment, Ensured), EnsureError> {
        if !names::is_valid_user(user) {
            return Err(EnsureError::InvalidUser(user.to_owned()));
        }
        let env = self.catalogue.get(environment)?;
        let ensured = self
            .backend
            .ensure(user, &env)
            .await
            .inspect_err(|e| tracing::warn!(user, environment, error = %e, "ensure failed"))?;
        if ensured.created || ensured.started {
            self.inventory.note_running(&ensured.name, user, &env.name);
            if env.gpus.is_some() {
                // Which GPUs it took is in its label: report them before the next
                // placement counts them free.
                self.inventory.refresh(&self.backend).await;
            }
        }
        self.hooks
            .ensured(user, &env, &ensured)
            .await
            .map_err(EnsureError::Hook)?;
        Ok((env, ensured))
    }
}
