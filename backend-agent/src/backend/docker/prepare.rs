//! What a new container needs before Docker creates it: its GPUs assigned, the shared
//! course-data volumes it mounts found, and, for a read-only root, the passwd and group
//! files bound over the image's.
//!
//! A read-only root refuses Docker's archive upload anywhere outside a volume, so
//! neither the student's home directory (its entry is extracted into /home, onto the
//! volume's mount point) nor their passwd entry can be written into the container as
//! for others. Both go through a throwaway container instead (created, never
//! started, writable, the same home volume mounted): the home is set up there, the
//! image's passwd and group read and the entry added, and the result written to the
//! container's own directory under the helper directory (removed with the container,
//! see `helper_container::prune_dirs`) and bound read-only at /etc/passwd and
//! /etc/group.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, Mount, MountType,
};
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use labssh_proto::pb;

use super::container_spec::{volume_name, ETC_FILES, LABEL_GPUS, LABEL_PREFIX};
use super::errors::{docker_message, status_of};
use super::{passwd, DockerBackend};
use crate::backend::{home_dir, shell, BackendError};
use crate::gpus;

/// Only root enters a container's directory; the files in it are world-readable, as
/// /etc/passwd is.
const DIR_MODE: u32 = 0o700;
/// /etc/passwd's usual mode.
const FILE_MODE: u32 = 0o644;

/// What [`DockerBackend::prepare`] set up for one new container.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The GPUs (device ids) it gets.
    pub gpus: Vec<String>,
    /// The directory of its passwd and group files, with a read-only root.
    pub etc_dir: Option<PathBuf>,
    /// Whether its home and passwd entry are set up already (a read-only root).
    pub set_up: bool,
}

impl DockerBackend {
    /// Everything `env`'s new container `name` of `user` needs before its creation.
    /// The caller holds [`DockerBackend::gpu_lock`] for GPU environments until the
    /// container exists, so two creations never get the same devices.
    pub(super) async fn prepare(
        &self,
        name: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<Prepared, BackendError> {
        self.check_course_data(env).await?;
        let gpus = match &env.gpus {
            Some(request) => self.assign_gpus(request).await?,
            None => Vec::new(),
        };
        let read_only = env.isolation.as_ref().is_some_and(|i| i.read_only_root);
        let set_up = read_only && !env.run_as_root;
        let etc_dir = if set_up {
            self.read_only_setup(name, user, env).await
        } else {
            None
        };
        Ok(Prepared {
            gpus,
            etc_dir,
            set_up,
        })
    }

    /// Fails with a message for the student (and a warning for the operator) when a
    /// course-data volume is missing: Docker would quietly create an empty one.
    async fn check_course_data(&self, env: &pb::Environment) -> Result<(), BackendError> {
        let mounts = env.isolation.iter().flat_map(|i| &i.mounts);
        for mount in mounts {
            match self.docker.inspect_volume(&mount.source).await {
                Ok(_) => {}
                Err(e) if status_of(&e) == Some(404) => {
                    tracing::warn!(volume = %mount.source, target = %mount.target, environment = %env.name, "a course-data volume is missing on this node; create it (docker volume create) and fill it");
                    return Err(BackendError::CourseDataMissing {
                        volume: mount.source.clone(),
                        target: mount.target.clone(),
                        agent: self.agent.clone(),
                    });
                }
                Err(e) => {
                    return Err(BackendError::Runtime {
                        action: "looking up a course-data volume",
                        message: docker_message(&e),
                    })
                }
            }
        }
        Ok(())
    }

    /// The devices a new container asking for `request` gets: the node's GPUs less
    /// those this agent's containers hold (their labels).
    async fn assign_gpus(&self, request: &pb::GpuRequest) -> Result<Vec<String>, BackendError> {
        let held = self.held_gpus().await?;
        gpus::assign(request, &self.gpus, &held)
            .map_err(|e| BackendError::GpusUnavailable(e.to_string()))
    }

    /// Whether a stopped container's GPUs (its label) are still free to start it
    /// with: a stopped container gives its GPUs back, and another may have taken
    /// them meanwhile. The caller holds [`DockerBackend::gpu_lock`].
    pub(super) async fn gpus_still_free(
        &self,
        existing: &ContainerInspectResponse,
    ) -> Result<bool, BackendError> {
        let held = self.held_gpus().await?;
        let labels = existing.config.as_ref().and_then(|c| c.labels.as_ref());
        let mine = labels.and_then(|l| l.get(LABEL_GPUS));
        Ok(mine
            .into_iter()
            .flat_map(|ids| ids.split(','))
            .all(|id| !held.contains(id)))
    }

    /// GPUs held by this agent's running (or paused) containers: a stopped one holds
    /// none, so an idle-stopped GPU container never keeps others from its GPUs.
    pub(super) async fn held_gpus(&self) -> Result<HashSet<String>, BackendError> {
        let list = self.list_own(false, Some(LABEL_GPUS)).await?;
        Ok(list
            .iter()
            .filter_map(|c| c.labels.as_ref()?.get(LABEL_GPUS))
            .flat_map(|ids| ids.split(',').map(str::to_owned))
            .filter(|id| !id.is_empty())
            .collect())
    }

    /// The home directory and the passwd and group files of a read-only root, these
    /// written to `name`'s directory; `None` (the container works without the entry,
    /// as with any image whose files cannot be read) when there is no helper
    /// directory or something fails.
    async fn read_only_setup(
        &self,
        name: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Option<PathBuf> {
        let files = self.set_up_on_probe(user, env).await?;
        let Some(setup) = &self.helper else {
            tracing::warn!(
                container = name,
                "a read-only root without the helper directory: the student gets no passwd entry"
            );
            return None;
        };
        let dir = setup.dir.join(name);
        match write_files(&dir, &files) {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot write the passwd files of a read-only root");
                None
            }
        }
    }

    /// Sets the home up on a container created (never started, writable) with the
    /// home volume and removed at once, and returns the image's passwd and group with
    /// the student added, read from it.
    async fn set_up_on_probe(
        &self,
        user: &str,
        env: &pb::Environment,
    ) -> Option<[passwd::EtcFile; 2]> {
        let home = Mount {
            target: Some(home_dir(user)),
            source: Some(volume_name(&self.prefix, user)),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        };
        let probe = ContainerCreateBody {
            image: Some(env.image.clone()),
            entrypoint: Some(vec!["/nonexistent".to_owned()]),
            labels: Some([(LABEL_PREFIX.to_owned(), self.prefix.clone())].into()),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_owned()),
                mounts: Some(vec![home]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = match self.docker.create_container(None, probe).await {
            Ok(created) => created,
            Err(e) => {
                tracing::warn!(image = %env.image, error = %docker_message(&e), "cannot set up the home and passwd entry of a read-only root");
                return None;
            }
        };
        self.fix_home(&created.id, user, env).await;
        let ids = (env.uid, env.gid);
        let files = passwd::with_student(
            &self.docker,
            &created.id,
            user,
            ids,
            &home_dir(user),
            shell(env),
        )
        .await;
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        if let Err(e) = self.docker.remove_container(&created.id, Some(force)).await {
            tracing::warn!(container = %created.id, error = %docker_message(&e), "cannot remove the container that set up a read-only root");
        }
        files
    }
}

/// Writes the files into `dir` (created if need be), in place: a bound file must stay
/// the same inode.
pub(super) fn write_files(dir: &Path, files: &[passwd::EtcFile; 2]) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    for file in files {
        debug_assert!(ETC_FILES.contains(&file.name));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(dir.join(file.name))?;
        out.write_all(file.text.as_bytes())?;
    }
    Ok(())
}
