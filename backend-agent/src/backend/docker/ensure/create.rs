//! A new container: created from the catalogue with its home volume, the student's
//! home directory and passwd entry set up (from this host where it can, through
//! Docker's archive API where not), started, and removed again if it does not start.

use bollard::body_full;
use bollard::models::{
    ContainerCreateBody, ContainerCreateResponse, ImageInspect, VolumeCreateRequest,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, UploadToContainerOptionsBuilder};
use labssh_proto::pb;

use super::super::container_spec::{volume_labels, volume_name, ContainerPlan, HelperPlan};
use super::super::errors::{docker_message, status_of};
use super::super::etc_files::Etc;
use super::super::network::{egress_of, Target};
use super::super::prepare::Prepared;
use super::super::routes::{Owner, SpawnPath};
use super::super::timing::timed;
use super::super::{archive, passwd, DockerBackend};
use crate::backend::init_binary::HelperSetup;
use crate::backend::{home_dir, shell, BackendError, Ensured};

/// Where home directories live; see [`crate::backend::home_dir`].
const HOME_PARENT: &str = "/home";
/// Homes are private: other students never share a container, but operators' tools might.
const HOME_MODE: u32 = 0o700;

impl DockerBackend {
    /// Creates and starts the container `name` of `user` for `env`, with its home
    /// volume; a container that does not start is removed again.
    pub(in crate::backend::docker) async fn create(
        &self,
        name: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<Ensured, BackendError> {
        let image = timed(name, "image", self.image(env)).await?;
        let target = Target::of(&self.prefix, &self.agent, &egress_of(env)?);
        timed(name, "network", self.ensure_network(&target)).await?;
        // Creating an existing volume returns it unchanged.
        let volume = self.docker.create_volume(VolumeCreateRequest {
            name: Some(volume_name(&self.prefix, user)),
            labels: Some(volume_labels(&self.agent, &self.prefix, user)),
            ..Default::default()
        });
        let volume = timed(name, "volume", volume)
            .await
            .map_err(|e| BackendError::CreateFailed(docker_message(&e)))?;
        // Held until the container (and its label saying which GPUs it has) exists.
        let _gpus_held = match env.gpus {
            Some(_) => Some(self.gpu_lock.lock().await),
            None => None,
        };
        let mut prepared = timed(name, "prepare", self.prepare(name, user, env)).await?;
        // A student's home and passwd entry, unless `prepare` saw to them (a read-only
        // root), set up before the container exists where this host can.
        let student = !env.run_as_root && !prepared.set_up;
        let (mut home_done, mut etc) = (true, Etc::Nothing);
        if student {
            home_done = self
                .home_from_host(&volume, (env.uid, env.gid), HOME_MODE)
                .await;
            etc = match image.id.as_deref() {
                Some(id) => timed(name, "etc", self.student_etc(name, user, env, id)).await,
                None => Etc::Archive,
            };
            if let Etc::Bound(dir) = &etc {
                prepared.etc_dir = Some(dir.clone());
            }
        }
        let (body, path) = self.plan(user, env, &image, &target, &prepared).await;
        let created = timed(name, "create", self.create_on(name, body, &target, env)).await?;
        tracing::info!(container = name, image = %env.image, spawn = path.name(), "created container");
        if student && !home_done {
            timed(name, "home", self.fix_home(&created.id, user, env)).await;
        }
        if student && etc == Etc::Archive {
            let home = home_dir(user);
            let ids = (env.uid, env.gid);
            let entries =
                passwd::ensure_entries(&self.docker, &created.id, user, ids, &home, shell(env));
            timed(name, "passwd", entries).await;
        }
        timed(
            name,
            "start",
            self.start_created(&created.id, name, (user, env), &target),
        )
        .await?;
        Ok(Ensured {
            container_id: created.id,
            name: name.to_owned(),
            created: true,
            started: true,
            notice: String::new(),
        })
    }

    /// Creates the container from `body` on `target`'s network. Docker's 404 is the
    /// image or the network missing: a network taken for existing is made sure of
    /// again (someone removed it) and the creation tried once more.
    async fn create_on(
        &self,
        name: &str,
        body: ContainerCreateBody,
        target: &Target,
        env: &pb::Environment,
    ) -> Result<ContainerCreateResponse, BackendError> {
        let options = || CreateContainerOptionsBuilder::new().name(name).build();
        let missing = |e: &bollard::errors::Error| status_of(e) == Some(404);
        let failed = |e: bollard::errors::Error| BackendError::CreateFailed(docker_message(&e));
        match self
            .docker
            .create_container(Some(options()), body.clone())
            .await
        {
            Ok(created) => return Ok(created),
            Err(e) if missing(&e) && self.forget_network(target) => {
                tracing::warn!(container = name, network = %target.network_mode(), "a containers' network was gone; making it again");
                self.ensure_network(target).await?;
            }
            Err(e) if missing(&e) => return Err(self.image_missing(env)),
            Err(e) => return Err(failed(e)),
        }
        match self.docker.create_container(Some(options()), body).await {
            Ok(created) => Ok(created),
            Err(e) if missing(&e) => Err(self.image_missing(env)),
            Err(e) => Err(failed(e)),
        }
    }

    /// The environment's image, which must be on this node: nodes do not pull.
    async fn image(&self, env: &pb::Environment) -> Result<ImageInspect, BackendError> {
        let ticket = self.known.ticket();
        match self.docker.inspect_image(&env.image).await {
            Ok(image) => {
                if let Some(id) = &image.id {
                    self.known.store_image(ticket, &env.image, id);
                }
                Ok(image)
            }
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

    /// Starts a container just created. One that never ran is removed, so the next
    /// login recreates it from the catalogue as it is then instead of failing the
    /// same way forever.
    async fn start_created(
        &self,
        id: &str,
        name: &str,
        (user, env): (&str, &pb::Environment),
        target: &Target,
    ) -> Result<(), BackendError> {
        let owner = Owner {
            user: user.to_owned(),
            env: std::sync::Arc::new(env.clone()),
        };
        let mut started = timed(name, "docker_start", self.docker.start_container(id, None)).await;
        // Docker checks the network only now: one taken for existing may be gone.
        if matches!(&started, Err(e) if status_of(e) == Some(404)) && self.forget_network(target) {
            tracing::warn!(container = name, network = %target.network_mode(), "a containers' network was gone; making it again");
            started = match self.ensure_network(target).await {
                Ok(()) => self.docker.start_container(id, None).await,
                Err(e) => {
                    self.remove_unstarted(id, name).await;
                    return Err(e);
                }
            };
        }
        let started = match started {
            Ok(()) => timed(name, "after_start", self.after_start(id, Some(owner))).await,
            Err(e) => Err(BackendError::StartFailed(docker_message(&e))),
        };
        if let Err(e) = started {
            self.remove_unstarted(id, name).await;
            return Err(e);
        }
        Ok(())
    }

    /// Removes a container that did not start (logged if it cannot).
    async fn remove_unstarted(&self, id: &str, name: &str) {
        if let Err(rm) = self.remove(id).await {
            tracing::warn!(container = name, error = %rm, "cannot remove container that failed to start");
        }
    }

    /// Makes the home volume the student's: owned by uid:gid, mode 0700, even when the
    /// image's /etc/passwd has no such user.
    pub(in crate::backend::docker) async fn fix_home(
        &self,
        container: &str,
        user: &str,
        env: &pb::Environment,
    ) {
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
