//! A new student container's passwd and group files without Docker's archive API.
//!
//! Under a burst of cold logins each archive call costs seconds (the daemon mounts the
//! container's file systems and runs a helper process per call): reading /etc/passwd
//! and /etc/group from every new container and writing them back was the largest part
//! of a creation after Docker's own start. The image's files are the same for every
//! container of one image id, so they are read once per image id (from a container
//! created for it, never started, removed at once) and kept; each new container gets
//! them with its student added, written to its own directory under the helper directory
//! and bound read-only over /etc/passwd and /etc/group, as a read-only root's are
//! ([`super::prepare`]). That directory goes with the container
//! (`helper_container::prune_dirs`).
//!
//! Nothing changes for an image that already has the student's ids (nothing is bound),
//! and one whose files are not plain files is left alone, as before.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use labssh_proto::pb;
use tokio::sync::OnceCell;

use super::container_spec::LABEL_PREFIX;
use super::errors::docker_message;
use super::passwd::{self, ImageFiles, Unread};
use super::prepare::write_files;
use super::DockerBackend;
use crate::backend::{home_dir, shell};

/// The passwd and group files of each image id met, once read.
#[derive(Default)]
pub struct ImageEtc {
    /// Image id → its files (`None`: not plain files, left alone); a cell whose read
    /// failed stays empty and is tried again by the next creation.
    by_id: Mutex<HashMap<String, Arc<OnceCell<Option<ImageFiles>>>>>,
}

/// What a new container's passwd and group files need.
#[derive(Debug, PartialEq, Eq)]
pub enum Etc {
    /// Bind these (the directory holding [`super::container_spec::ETC_FILES`]).
    Bound(PathBuf),
    /// Nothing: the image has the student's ids, or its files are not plain files.
    Nothing,
    /// Unknown here (no helper directory, or the image's files could not be read or the
    /// directory written): the container's own files are read and written after its
    /// creation, as before.
    Archive,
}

impl DockerBackend {
    /// The passwd and group files of `user`'s new container `name` of `env`, whose image
    /// has id `image_id`.
    pub(super) async fn student_etc(
        &self,
        name: &str,
        user: &str,
        env: &pb::Environment,
        image_id: &str,
    ) -> Etc {
        let Some(setup) = &self.helper else {
            return Etc::Archive;
        };
        let cell = {
            let mut by_id = self
                .image_etc
                .by_id
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            by_id.entry(image_id.to_owned()).or_default().clone()
        };
        let read = cell.get_or_try_init(|| self.read_image_etc(image_id)).await;
        let Ok(files) = read else {
            return Etc::Archive;
        };
        let Some(files) = files else {
            return Etc::Nothing;
        };
        let ids = (env.uid, env.gid);
        let files = passwd::add_student(files, user, ids, &home_dir(user), shell(env));
        if files.iter().all(|f| !f.changed) {
            return Etc::Nothing;
        }
        let dir = setup.dir.join(name);
        match write_files(&dir, &files) {
            Ok(()) => Etc::Bound(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot write a container's passwd files; writing them into it instead");
                Etc::Archive
            }
        }
    }

    /// The files of image `image_id`, read from a container created for it (never
    /// started, no network) and removed at once.
    async fn read_image_etc(&self, image_id: &str) -> Result<Option<ImageFiles>, ()> {
        let probe = ContainerCreateBody {
            image: Some(image_id.to_owned()),
            entrypoint: Some(vec!["/nonexistent".to_owned()]),
            labels: Some([(LABEL_PREFIX.to_owned(), self.prefix.clone())].into()),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = match self.docker.create_container(None, probe).await {
            Ok(created) => created,
            Err(e) => {
                tracing::warn!(image = image_id, error = %docker_message(&e), "cannot read the image's passwd files");
                return Err(());
            }
        };
        let files = passwd::read_files_or_why(&self.docker, &created.id).await;
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        if let Err(e) = self.docker.remove_container(&created.id, Some(force)).await {
            tracing::warn!(container = %created.id, error = %docker_message(&e), "cannot remove the container that read an image's passwd files");
        }
        match files {
            Ok(files) => Ok(Some(files)),
            Err(Unread::NotPlain) => Ok(None),
            Err(Unread::Failed) => Err(()),
        }
    }
}
