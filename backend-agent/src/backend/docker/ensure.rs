//! A student's container made sure of: found by name (or by the name containers had
//! before), created from the catalogue if missing, started if stopped, recreated if
//! of an older layout, moved if on another network than its egress policy's (the
//! student is told); the home volume, the home directory and the passwd entry set
//! up on creation.

use bollard::body_full;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ImageInspect,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use labssh_proto::pb;
use tokio::time::Instant;

use super::container_spec::{
    container_name, legacy_container_name, volume_labels, volume_name, ContainerPlan, HelperPlan,
    LABEL_ENV, LABEL_USER,
};
use super::errors::{docker_message, status_of};
use super::network::{egress_of, Target};
use super::prepare::Prepared;
use super::routes::{Owner, Route, SpawnPath};
use super::{archive, helper_container, passwd, DockerBackend};
use crate::backend::init_binary::HelperSetup;
use crate::backend::{home_dir, shell, BackendError, EnsureOptions, EnsureStep, Ensured};
use crate::names;

/// Where home directories live; see [`crate::backend::home_dir`].
const HOME_PARENT: &str = "/home";
/// What a student reads whose stopped GPU container was recreated with other GPUs.
const GPUS_TAKEN: &str = "your container was stopped while idle and its GPUs went to someone else; it was recreated with free ones (your home directory is kept, other files outside it are not)";
/// Homes are private: other students never share a container, but operators' tools might.
const HOME_MODE: u32 = 0o700;

impl DockerBackend {
    /// [`crate::backend::Backend::ensure`] on Docker.
    pub(super) async fn ensure_container(
        &self,
        user: &str,
        env: &pb::Environment,
        options: &EnsureOptions,
    ) -> Result<Ensured, BackendError> {
        if !names::is_valid_user(user) {
            return Err(BackendError::InvalidName {
                what: "user",
                name: user.to_owned(),
            });
        }
        if !names::is_valid_env(&env.name) {
            return Err(BackendError::InvalidName {
                what: "environment",
                name: env.name.clone(),
            });
        }
        let name = container_name(&self.prefix, user, &env.name);
        let target = Target::of(&self.prefix, &self.agent, &egress_of(env)?);
        let _guard = self.locks.lock(&name).await;
        let Some(existing) = self.find(&name, user, env).await? else {
            let _permit = options.admit(Some(EnsureStep::Creating)).await?;
            return self.create(&name, user, env).await;
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
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| BackendError::StartFailed(docker_message(&e)))?;
        tracing::info!(container = %name, "started container");
        self.after_start(id, Some(owner)).await?;
        Ok(true)
    }

    /// Creates and starts the container `name` of `user` for `env`, with its home
    /// volume; a container that does not start is removed again.
    pub(super) async fn create(
        &self,
        name: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<Ensured, BackendError> {
        let image = self.image(env).await?;
        let target = Target::of(&self.prefix, &self.agent, &egress_of(env)?);
        self.ensure_network(&target).await?;
        // Creating an existing volume returns it unchanged.
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume_name(&self.prefix, user)),
                labels: Some(volume_labels(&self.agent, &self.prefix, user)),
                ..Default::default()
            })
            .await
            .map_err(|e| BackendError::CreateFailed(docker_message(&e)))?;
        // Held until the container (and its label saying which GPUs it has) exists.
        let _gpus_held = match env.gpus {
            Some(_) => Some(self.gpu_lock.lock().await),
            None => None,
        };
        let prepared = self.prepare(name, user, env).await?;
        let (body, path) = self.plan(user, env, &image, &target, &prepared).await;
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let created = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(e) if status_of(&e) == Some(404) => return Err(self.image_missing(env)),
            Err(e) => return Err(BackendError::CreateFailed(docker_message(&e))),
        };
        tracing::info!(container = name, image = %env.image, spawn = path.name(), "created container");
        if !env.run_as_root {
            self.set_up_student(&created.id, user, env, prepared.set_up)
                .await;
        }
        self.start_created(&created.id, name, user, env).await?;
        Ok(Ensured {
            container_id: created.id,
            name: name.to_owned(),
            created: true,
            started: true,
            notice: String::new(),
        })
    }

    /// The environment's image, which must be on this node: nodes do not pull.
    async fn image(&self, env: &pb::Environment) -> Result<ImageInspect, BackendError> {
        match self.docker.inspect_image(&env.image).await {
            Ok(image) => Ok(image),
            Err(e) if status_of(&e) == Some(404) => Err(self.image_missing(env)),
            Err(e) => Err(BackendError::Runtime {
                action: "looking up the image",
                message: docker_message(&e),
            }),
        }
    }

    /// The create request for `user`'s container of `env`, and how processes will
    /// start in it: through labssh-init unless the environment asks for exec or this
    /// agent has no helper.
    async fn plan(
        &self,
        user: &str,
        env: &pb::Environment,
        image: &ImageInspect,
        target: &Target,
        prepared: &Prepared,
    ) -> (ContainerCreateBody, SpawnPath) {
        let helper = match (&self.helper, env.spawn == SpawnPath::Exec.name()) {
            (Some(setup), false) => Some(helper_plan(setup, image)),
            _ => None,
        };
        let path = if helper.is_some() {
            SpawnPath::Helper
        } else {
            SpawnPath::Exec
        };
        let body = ContainerPlan {
            agent: &self.agent,
            prefix: &self.prefix,
            user,
            env,
            default_keepalive: &self.keepalive_cmd,
            helper,
            sftp: self.sftp.as_deref(),
            network: &target.network_mode(),
            gpus: &prepared.gpus,
            etc_dir: prepared.etc_dir.as_deref(),
        }
        .create_body();
        (self.with_layer_quota(body, env).await, path)
    }

    /// The student's home directory and passwd entry in a new container, unless
    /// [`DockerBackend::prepare`] saw to them (`done`: a read-only root).
    async fn set_up_student(&self, id: &str, user: &str, env: &pb::Environment, done: bool) {
        if done {
            return;
        }
        self.fix_home(id, user, env).await;
        passwd::ensure_entries(
            &self.docker,
            id,
            user,
            (env.uid, env.gid),
            &home_dir(user),
            shell(env),
        )
        .await;
    }

    /// Starts a container just created. One that never ran is removed, so the next
    /// login recreates it from the catalogue as it is then instead of failing the
    /// same way forever.
    async fn start_created(
        &self,
        id: &str,
        name: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<(), BackendError> {
        let owner = Owner {
            user: user.to_owned(),
            env: std::sync::Arc::new(env.clone()),
        };
        let started = match self.docker.start_container(id, None).await {
            Ok(()) => self.after_start(id, Some(owner)).await,
            Err(e) => Err(BackendError::StartFailed(docker_message(&e))),
        };
        if let Err(e) = started {
            if let Err(rm) = self.remove(id).await {
                tracing::warn!(container = name, error = %rm, "cannot remove container that failed to start");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Removes a container (its home volume stays) and forgets its route.
    pub(super) async fn remove(&self, id: &str) -> Result<(), BackendError> {
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        self.routes.remove(id);
        self.docker
            .remove_container(id, Some(force))
            .await
            .map_err(|e| BackendError::Runtime {
                action: "removing the container",
                message: docker_message(&e),
            })
    }

    /// Makes the home volume the student's: owned by uid:gid, mode 0700, even when the
    /// image's /etc/passwd has no such user.
    pub(super) async fn fix_home(&self, container: &str, user: &str, env: &pb::Environment) {
        let archive = match archive::directory(user, env.uid, env.gid, HOME_MODE) {
            Ok(archive) => archive,
            Err(e) => {
                tracing::warn!(container, user, error = %e, "cannot set up home directory");
                return;
            }
        };
        // Without copyUIDGID Docker keeps the archive's owner; with it, it would chown to
        // the container's user, which is root for a helper container.
        let options = UploadToContainerOptionsBuilder::new()
            .path(HOME_PARENT)
            .copy_uidgid("false")
            .no_overwrite_dir_non_dir("true")
            .build();
        if let Err(e) = self
            .docker
            .upload_to_container(container, Some(options), body_full(archive.into()))
            .await
        {
            tracing::warn!(container, user, error = %docker_message(&e), "cannot set up home directory");
        }
    }

    /// Records how processes start in a container Docker just started, and waits for its
    /// helper; fails if the container stopped at once (its command could not start).
    pub(super) async fn after_start(
        &self,
        id: &str,
        owner: Option<Owner>,
    ) -> Result<Route, BackendError> {
        let inspect = self.inspect(id).await?;
        let mut route = helper_container::route_of(&inspect, Instant::now(), owner);
        if route.path == SpawnPath::Helper {
            match &route.helper {
                Some(socket) => {
                    helper_container::wait_ready(&self.docker, id, socket)
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
    /// someone else (the old names could collide) is not theirs.
    async fn find(
        &self,
        name: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<Option<ContainerInspectResponse>, BackendError> {
        let legacy = legacy_container_name(&self.prefix, user, &env.name);
        for candidate in [name, legacy.as_str()] {
            let existing = match self.docker.inspect_container(candidate, None).await {
                Ok(existing) => existing,
                Err(e) if status_of(&e) == Some(404) => continue,
                Err(e) => {
                    return Err(BackendError::Runtime {
                        action: "looking up the container",
                        message: docker_message(&e),
                    })
                }
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

    fn image_missing(&self, env: &pb::Environment) -> BackendError {
        BackendError::ImageNotAvailable {
            image: env.image.clone(),
            agent: self.agent.clone(),
        }
    }
}

/// The helper part of a new container's plan: the image's own command and user.
fn helper_plan<'a>(setup: &'a HelperSetup, image: &ImageInspect) -> HelperPlan<'a> {
    let config = image.config.as_ref();
    HelperPlan {
        init: &setup.init,
        image_entrypoint: config
            .and_then(|c| c.entrypoint.clone())
            .unwrap_or_default(),
        image_cmd: config.and_then(|c| c.cmd.clone()).unwrap_or_default(),
        image_user: config.and_then(|c| c.user.clone()).unwrap_or_default(),
    }
}
