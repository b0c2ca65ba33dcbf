//! What every stream and call of the Agent service shares, below all of them: the
//! backend, the catalogue, the limits and the agent's own lifetime.

use std::sync::{Arc, Mutex};

use labssh_proto::pb;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{BackendError, EnsureOptions, EnsureStep, Ensured, SharedBackend};
use crate::catalogue::{Catalogue, CatalogueError};
use crate::forward::host_watch::HostGuard;
use crate::forward::pending::Pending;
use crate::hooks::{Hooks, Target};
use crate::identity::{self, IdentityError};
use crate::inventory::Inventory;
use crate::lifecycle::{Lifecycle, Reason};
use crate::limits::Limits;
use crate::names;
use crate::start_queue::{self, Caller, Class, StartQueue};

/// How long a call arriving before the controller's catalogue waits for it.
pub const CATALOGUE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// Idle pause and stop, and what keeps containers awake.
    pub lifecycle: Arc<Lifecycle>,
    /// Bounds the containers created or started at once; students first.
    pub starts: Arc<StartQueue>,
    /// The session processes of each agent socket (`ssh -A`), who alone may use it.
    pub agent_peers: Arc<crate::forward::agent_peers::AgentPeers>,
    /// Seconds labssh-init keeps a session whose agent went away (`reattach_grace`);
    /// 0: sessions end with the agent.
    pub reattach_grace: u32,
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
    /// The login's identity may not use the environment, or lacks the uid/gid it
    /// takes from it; nothing was made.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl Shared {
    /// Validates the request, looks the environment up and ensures the container
    /// for a forward or listener (the caller holds it open through
    /// [`Lifecycle::hold`]); records a created or started container at once.
    pub async fn ensure(
        &self,
        user: &str,
        environment: &str,
        identity: Option<&pb::Identity>,
    ) -> Result<(pb::Environment, Ensured), EnsureError> {
        let caller = Caller::quiet(Class::Student);
        self.ensure_with((user, identity), environment, None, caller)
            .await
    }

    /// [`Shared::ensure`] for a session's login: each step is told to `progress` in
    /// the student's words, and a container nobody else holds open may be recreated
    /// (older than `max_age`, or outdated). A create or start waits in the start
    /// queue as `caller`; a prestarted container is marked so until a student's
    /// ensure finds it. The environment is the one `identity` may use, with its
    /// uid/gid where it takes them from it ([`identity::apply`]); that environment
    /// is what the caller gets back.
    pub async fn ensure_with(
        &self,
        (user, identity): (&str, Option<&pb::Identity>),
        environment: &str,
        progress: Option<Box<dyn Fn(String) + Send + Sync>>,
        caller: Caller,
    ) -> Result<(pb::Environment, Ensured), EnsureError> {
        if !names::is_valid_user(user) {
            return Err(EnsureError::InvalidUser(user.to_owned()));
        }
        // A restarted agent hears from the proxies (a resumed session, an `ssh -R`
        // asked for again) before the controller's Welcome: the catalogue is waited
        // for, boundedly, rather than the environment called unknown.
        let _ = tokio::time::timeout(CATALOGUE_WAIT, self.catalogue.received()).await;
        let env = identity::apply(self.catalogue.get(environment)?, identity).inspect_err(|e| {
            tracing::info!(user, environment, "refused by the login's identity: {e}")
        })?;
        let reason = match progress.is_some() {
            true => Reason::Login,
            false => Reason::Forward,
        };
        self.ensure_resolved(user, env, progress, caller, reason)
            .await
    }

    /// [`Shared::ensure_with`] of an environment already resolved for `user` (its ids
    /// filled in), the container's changes recorded for `reason`: what an action on a
    /// container the student had (`labssh container start|reset`) ensures.
    pub async fn ensure_resolved(
        &self,
        user: &str,
        env: pb::Environment,
        progress: Option<Box<dyn Fn(String) + Send + Sync>>,
        caller: Caller,
        reason: Reason,
    ) -> Result<(pb::Environment, Ensured), EnsureError> {
        let class = caller.class;
        let environment = env.name.as_str();
        self.lifecycle.settle(user, environment).await;
        let login = progress.is_some();
        let steps = Arc::new(Mutex::new(Vec::new()));
        let options = {
            let (steps, lifecycle) = (steps.clone(), self.lifecycle.clone());
            let (user, environment) = (user.to_owned(), environment.to_owned());
            EnsureOptions {
                renew: login && self.lifecycle.alone(&user, &environment),
                steps: Some(Arc::new(move |step: EnsureStep| {
                    if let Some(progress) = &progress {
                        progress(lifecycle.words(&user, &environment, step));
                    }
                    steps.lock().unwrap_or_else(|e| e.into_inner()).push(step);
                })),
                admission: Some(start_queue::admission(self.starts.clone(), caller)),
            }
        };
        let ensuring = std::time::Instant::now();
        let ensured = self
            .backend
            .ensure_with(user, &env, &options)
            .await
            .inspect_err(|e| tracing::warn!(user, environment, error = %e, "ensure failed"))?;
        if ensured.created {
            self.inventory.note_created(&ensured.name, user, &env.name);
        } else if ensured.started {
            self.inventory.note_running(&ensured.name, user, &env.name);
        }
        match class {
            Class::Prestart if ensured.created || ensured.started => {
                self.inventory.mark_prestarted(&ensured.name)
            }
            Class::Prestart => {}
            Class::Student => self.inventory.mark_used(&ensured.name),
        }
        if (ensured.created || ensured.started) && env.gpus.is_some() {
            // Which GPUs it took is in its label: report them before the next
            // placement counts them free.
            self.inventory.refresh(&self.backend).await;
        }
        let steps = std::mem::take(&mut *steps.lock().unwrap_or_else(|e| e.into_inner()));
        let names = (user, environment, ensured.name.as_str());
        self.lifecycle
            .ensured(names, &steps, reason, ensuring.elapsed())
            .await;
        if steps == [EnsureStep::Unpausing] {
            // Thawed, not started: no "start" hooks; the timers a frozen container
            // ended are armed again.
            let thawed = Ensured {
                started: false,
                ..ensured.clone()
            };
            self.hooks
                .ensured(user, &env, &thawed)
                .await
                .map_err(EnsureError::Hook)?;
            let target = Target {
                user: user.to_owned(),
                env: env.clone(),
                container: ensured.name.clone(),
            };
            self.hooks.resumed(target).await;
        } else {
            self.hooks
                .ensured(user, &env, &ensured)
                .await
                .map_err(EnsureError::Hook)?;
        }
        Ok((env, ensured))
    }
}
