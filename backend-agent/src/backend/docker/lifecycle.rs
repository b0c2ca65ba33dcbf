//! What the lifecycle does to Docker containers: pause, stop, read their CPU time
//! and the student's keep-alive file, and tell whether one is due to be recreated
//! (older than `max_age`, or made from another image or settings).

use std::time::{Duration, SystemTime};

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{StatsOptionsBuilder, StopContainerOptionsBuilder};
use futures::StreamExt;
use labssh_proto::pb;

use super::cgroup::CpuFile;
use super::container_spec::LABEL_SETTINGS;
use super::errors::docker_message;
use super::DockerBackend;
use crate::backend::lifecycle_ops::read_keepalive;
use crate::backend::{settings_hash, BackendError, KeepaliveFile, Renewal};

/// How long a stopping container's processes get after SIGTERM before SIGKILL.
const STOP_GRACE_SECS: i32 = 5;

impl DockerBackend {
    /// [`crate::backend::Backend::pause`] on Docker (the cgroup freezer).
    pub(super) async fn pause_container(&self, container: &str) -> Result<(), BackendError> {
        let _guard = self.locks.lock(&self.lock_key(container).await).await;
        self.known.forget(container);
        self.docker
            .pause_container(container)
            .await
            .map_err(|e| BackendError::Runtime {
                action: "pausing the container",
                message: docker_message(&e),
            })
    }

    /// [`crate::backend::Backend::unpause`] on Docker.
    pub(super) async fn unpause_container(&self, container: &str) -> Result<(), BackendError> {
        let _guard = self.locks.lock(&self.lock_key(container).await).await;
        self.known.forget(container);
        self.docker
            .unpause_container(container)
            .await
            .map_err(|e| BackendError::Runtime {
                action: "thawing the container",
                message: docker_message(&e),
            })
    }

    /// [`crate::backend::Backend::stop`] on Docker; a paused container is thawed
    /// first so its processes get their SIGTERM.
    pub(super) async fn stop_container(&self, container: &str) -> Result<(), BackendError> {
        let _guard = self.locks.lock(&self.lock_key(container).await).await;
        let inspect = self.inspect(container).await?;
        self.known.forget(container);
        if inspect.state.as_ref().and_then(|s| s.paused) == Some(true) {
            self.docker
                .unpause_container(container)
                .await
                .map_err(|e| BackendError::Runtime {
                    action: "thawing the container to stop it",
                    message: docker_message(&e),
                })?;
        }
        let options = StopContainerOptionsBuilder::new()
            .t(STOP_GRACE_SECS)
            .build();
        self.docker
            .stop_container(container, Some(options))
            .await
            .map_err(|e| BackendError::Runtime {
                action: "stopping the container",
                message: docker_message(&e),
            })?;
        if let Some(id) = inspect.id.as_deref() {
            self.routes.remove(id);
        }
        Ok(())
    }

    /// The name ensures lock under, for a container named or identified `container`:
    /// pausing or stopping never races with a login's ensure of the same container.
    async fn lock_key(&self, container: &str) -> String {
        match self.inspect(container).await {
            Ok(i) => i
                .name
                .as_deref()
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_else(|| container.to_owned()),
            Err(_) => container.to_owned(),
        }
    }

    /// [`crate::backend::Backend::cpu_time`] on Docker: the cgroup's counter, else
    /// Docker's stats.
    pub(super) async fn container_cpu_time(
        &self,
        container: &str,
    ) -> Result<Option<Duration>, BackendError> {
        let inspect = self.inspect(container).await?;
        let id = inspect.id.clone().unwrap_or_default();
        let pid = inspect
            .state
            .as_ref()
            .filter(|s| s.running == Some(true))
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0);
        let Some(pid) = pid else {
            return Ok(None);
        };
        let read = tokio::task::spawn_blocking(move || CpuFile::of_process(pid, &id)?.read())
            .await
            .ok()
            .flatten();
        if read.is_some() {
            return Ok(read);
        }
        let options = StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = self.docker.stats(container, Some(options)).next().await;
        Ok(stats
            .and_then(Result::ok)
            .and_then(|s| s.cpu_stats?.cpu_usage?.total_usage)
            .map(Duration::from_nanos))
    }

    /// [`crate::backend::Backend::keepalive`] on Docker: read from the host through
    /// the container's root, no symlink followed, a regular file of the student's only.
    pub(super) async fn read_keepalive(
        &self,
        container: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<Option<KeepaliveFile>, BackendError> {
        let inside = self
            .enter(container)
            .await
            .map_err(|message| BackendError::Runtime {
                action: "reading the keep-alive file",
                message,
            })?;
        Ok(read_keepalive(&inside, container, user, env).await)
    }

    /// Why `existing` should be made again for `env` now, if it should: older than
    /// `max_age`, or from another image or settings than `env`'s. A container made
    /// before its settings were recorded is not judged outdated.
    pub(super) async fn renewal(
        &self,
        existing: &ContainerInspectResponse,
        env: &pb::Environment,
    ) -> Option<Renewal> {
        let max_age = env.lifecycle.as_ref().map_or(0, |l| l.max_age_ms);
        if max_age > 0 {
            let created = existing
                .created
                .as_deref()
                .and_then(|c| humantime::parse_rfc3339_weak(c).ok());
            let age = created.and_then(|c| SystemTime::now().duration_since(c).ok());
            if let Some(age) = age.filter(|a| *a > Duration::from_millis(max_age)) {
                return Some(Renewal::MaxAge(age));
            }
        }
        let labels = existing.config.as_ref().and_then(|c| c.labels.as_ref());
        let recorded = labels.and_then(|l| l.get(LABEL_SETTINGS))?;
        if *recorded != settings_hash(env) {
            return Some(Renewal::Outdated);
        }
        let image = self.image_id_of(&env.image).await?;
        (existing.image.as_deref() != Some(image.as_str())).then_some(Renewal::Outdated)
    }

    /// The id of the image `reference` names: as known, else asked of Docker (and
    /// kept until an image event); `None` if Docker cannot say.
    async fn image_id_of(&self, reference: &str) -> Option<String> {
        if let Some(id) = self.known.image(reference) {
            return Some(id);
        }
        let ticket = self.known.ticket();
        let id = self.docker.inspect_image(reference).await.ok()?.id?;
        self.known.store_image(ticket, reference, &id);
        Some(id)
    }
}
