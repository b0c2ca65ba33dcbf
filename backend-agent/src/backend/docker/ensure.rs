//! A student's container made sure of: found by name (or by the name containers had
//! before), created from the catalogue if missing, started if stopped, recreated if
//! of an older layout, moved if on another network than its egress policy's (the
//! student is told); a new one is made in [`create`], with the home volume, the home
//! directory and the passwd entry.

use std::sync::Arc;

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use labssh_proto::pb;
use tokio::time::Instant;

use super::container_spec::{container_name, legacy_container_name, LABEL_ENV, LABEL_USER};
use super::errors::{docker_message, status_of};
use super::network::{egress_of, Target};
use super::routes::{Owner, Route, SpawnPath};
use super::timing::timed;
use super::{helper_container, DockerBackend};
use crate::backend::{BackendError, EnsureOptions, EnsureStep, Ensured};

mod create;

/// What a student reads whose stopped GPU container was recreated with other GPUs.
const GPUS_TAKEN: &str = "your container was stopped while idle and its GPUs went to someone else; it was recreated with free ones (your home directory is kept, other files outside it are not)";

impl DockerBackend {
    /// [`crate::backend::Backend::ensure`] on Docker.
    pub(super) async fn ensure_container(
        &self,
        user: &str,
        env: &pb::Environment,
        options: &EnsureOptions,
    ) -> Result<Ensured, BackendError> {
        BackendError::check_names(user, &env.name)?;
        let name = container_name(&self.prefix, user, &env.name);
        let target = Target::of(&self.prefix, &self.agent, &egress_of(env)?);
        let _guard = timed(&name, "lock", self.locks.lock(&name)).await;
        let Some(existing) = timed(&name, "find", self.find(&name, user, env)).await? else {
            let _permit = timed(&name, "queue", options.admit(Some(EnsureStep::Creating))).await?;
            return timed(&name, "cold_total", self.create(&name, user, env)).await;
        };
        let id = existing.id.clone().unwrap_or_else(|| name.clone());
        if options.renew {
            if let Some(why) = self.renewal(&existing, env).await {
                let _permit = options.admit(Some(EnsureStep::Recreating(why))).await?;
                tracing::info!(container = %id, reason = ?why, "recreating a container at a login with no other session; the home volume is kept");
                self.remove(&id).await?;
                return self.create(&name, user, env).await;
            }
        }
        // After a renewal, which makes it anew with the login's ids.
        super::ids::check(&existing, env)?;
        if helper_container::is_outdated(&existing) {
            let _permit = options.admit(None).await?;
            tracing::warn!(container = %id, "recreating a container of an older layout (its helper's socket directory was writable from inside); the home volume is kept");
            self.remove(&id).await?;
            return self.create(&name, user, env).await;
        }
        let mut notice = String::new();
        if !target.holds(&existing) {
            if target.needs_recreate(&existing) {
                let _permit = options.admit(None).await?;
                tracing::warn!(container = %id, network = %target.network_mode(), "recreating a container on its environment's network; the home volume is kept");
                self.remove(&id).await?;
                let created = self.create(&name, user, env).await?;
                return Ok(Ensured {
                    notice: target.notice(true),
                    ..created
                });
            }
            self.ensure_network(&target).await?;
            self.reconnect(&id, &existing, &target).await?;
            tracing::warn!(container = %id, network = %target.network_mode(), "moved a container to its environment's network");
            notice = target.notice(false);
        }
        let found_name = existing
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_else(|| name.clone());
        let owner = Owner {
            user: user.to_owned(),
            env: std::sync::Arc::new(env.clone()),
        };
        let running = existing.state.as_ref().and_then(|s| s.running) == Some(true);
        // A stopped container waits for its place in the start queue before the GPU
        // lock, which a create takes while holding its place.
        let _permit = match running {
            true => None,
            false => options.admit(None).await?,
        };
        // Starting a stopped GPU container: its devices are checked and taken
        // under the GPU lock, so two containers never start on one GPU.
        let gpu_guard = if env.gpus.is_some() && !running {
            Some(self.gpu_lock.lock().await)
        } else {
            None
        };
        if gpu_guard.is_some() && !self.gpus_still_free(&existing).await? {
            drop(gpu_guard);
            tracing::info!(container = %id, "recreating a stopped container whose GPUs another took meanwhile; the home volume is kept");
            options.step(EnsureStep::Creating);
            self.remove(&id).await?;
            let created = self.create(&name, user, env).await?;
            return Ok(Ensured {
                notice: GPUS_TAKEN.to_owned(),
                ..created
            });
        }
        let started = self
            .run_existing(&id, &found_name, &existing, owner, options)
            .await?;
        Ok(Ensured {
            container_id: id,
            name: found_name,
            created: false,
            started,
            notice,
        })
    }

    /// Makes an existing container run: unpaused, or started; true if it was not
    /// running.
    async fn run_existing(
        &self,
        id: &str,
        name: &str,
        existing: &ContainerInspectResponse,
        owner: Owner,
        options: &EnsureOptions,
    ) -> Result<bool, BackendError> {
        let state = existing.state.as_ref();
        let running = state.and_then(|s| s.running) == Some(true);
        let paused = state.and_then(|s| s.paused) == Some(true);
        if running {
            if paused {
                options.step(EnsureStep::Unpausing);
                self.known.forget(id);
                self.docker
                    .unpause_container(id)
                    .await
                    .map_err(|e| BackendError::StartFailed(docker_message(&e)))?;
            }
            self.refresh_route(id, existing, owner);
            return Ok(paused);
        }
        if state.and_then(|s| s.status) == Some(ContainerStateStatusEnum::REMOVING) {
            return Err(BackendError::StartFailed(
                "the container is being removed; try again".to_owned(),
            ));
        }
        options.step(EnsureStep::Starting);
        self.known.forget(id);
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| BackendError::StartFailed(docker_message(&e)))?;
        tracing::info!(container = %name, "started container");
        self.after_start(id, Some(owner)).await?;
        Ok(true)
    }

    /// Removes a container (its home volume stays) and forgets its route.
    pub(super) async fn remove(&self, id: &str) -> Result<(), BackendError> {
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        self.routes.remove(id);
        self.known.forget(id);
        self.docker
            .remove_container(id, Some(force))
            .await
            .map_err(|e| BackendError::Runtime {
                action: "removing the container",
                message: docker_message(&e),
            })
    }

    /// Removes the container named `name` (an operator's or a student's action), under
    /// its lock so no ensure crosses it; the home volume stays.
    pub(super) async fn remove_named(&self, name: &str) -> Result<(), BackendError> {
        let _guard = self.locks.lock(name).await;
        let existing = match self.look_up(name).await {
            Ok(existing) => existing,
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(super::lookup_failed(e)),
        };
        let id = existing.id.clone().unwrap_or_else(|| name.to_owned());
        self.remove(&id).await?;
        tracing::info!(container = %name, "removed a container; the home volume is kept");
        Ok(())
    }

    /// Deletes `user`'s home volume; Docker refuses while a container still uses it.
    pub(super) async fn remove_home_volume(&self, user: &str) -> Result<(), BackendError> {
        BackendError::check_names(user, "home")?;
        let volume = super::container_spec::volume_name(&self.prefix, user);
        match self
            .docker
            .remove_volume(
                &volume,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await
        {
            Ok(()) => {
                tracing::info!(%volume, "removed a home volume");
                Ok(())
            }
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(BackendError::Runtime {
                action: "removing the home volume",
                message: docker_message(&e),
            }),
        }
    }

    /// Records how processes start in a container Docker just started, and waits for its
    /// helper; fails if the container stopped at once (its command could not start).
    pub(super) async fn after_start(
        &self,
        id: &str,
        owner: Option<Owner>,
    ) -> Result<Route, BackendError> {
        let inspect = timed(id, "inspect", self.inspect_fresh(id)).await?;
        let mut route = helper_container::route_of(&inspect, Instant::now(), owner);
        if route.path == SpawnPath::Helper {
            match &route.helper {
                Some(socket) => {
                    let ready = helper_container::wait_ready(&self.docker, id, socket);
                    timed(id, "helper_ready", ready)
                        .await
                        .map_err(BackendError::StartFailed)?;
                }
                None => {
                    return Err(BackendError::StartFailed(
                        helper_container::stopped_soon(&self.docker, id)
                            .await
                            .unwrap_or_else(|| "its labssh-init cannot be reached".to_owned()),
                    ))
                }
            }
        }
        // Ready (or given up on): from now on a missing socket means a helper to restore.
        route.ready_by = Instant::now();
        self.routes.set(id, route.clone());
        Ok(route)
    }

    /// The container of `user` and `env`: by its name, else by the name containers had
    /// before; `None` if there is neither. A container by the old name that belongs to
    /// someone else (the old names could collide) is not theirs. What the agent knows
    /// of a container is not asked of Docker again.
    async fn find(
        &self,
        name: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<Option<Arc<ContainerInspectResponse>>, BackendError> {
        let legacy = legacy_container_name(&self.prefix, user, &env.name);
        for candidate in [name, legacy.as_str()] {
            let existing = match self.look_up(candidate).await {
                Ok(existing) => existing,
                Err(e) if status_of(&e) == Some(404) => continue,
                Err(e) => return Err(super::lookup_failed(e)),
            };
            let labels = existing.config.as_ref().and_then(|c| c.labels.as_ref());
            let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
            if label(LABEL_USER) == Some(user) && label(LABEL_ENV) == Some(env.name.as_str()) {
                return Ok(Some(existing));
            }
            if candidate == name {
                return Err(BackendError::NameTaken(name.to_owned()));
            }
        }
        Ok(None)
    }
}
