//! Helper containers are served through their helper or not at all: a helper that is
//! gone, or a socket that is not the helper's, is restored (restart, else recreate with
//! the home kept) and never bypassed with Docker exec, which would hand a root student
//! the capabilities only labssh-init may hold.

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::RestartContainerOptionsBuilder;
use tokio::time::Instant;

use super::errors::{docker_message, status_of};
use super::helper_container::{self, init_pid};
use super::routes::{Owner, Route};
use super::DockerBackend;
use crate::backend::helper::{HelperError, HelperSocket};

/// Docker's stop timeout for a restart; labssh containers stop at once on TERM.
const RESTART_TIMEOUT_SECS: i32 = 2;

/// What the student reads when restoring failed at `what` with `e`.
fn failed(what: &str, e: String) -> HelperError {
    HelperError::Unavailable(format!(
        "your container's helper could not be restored ({what}: {e}); try again"
    ))
}

impl DockerBackend {
    /// Records what an ensure saw of a running container, keeping the known helper when
    /// its init is the same process.
    pub(super) fn refresh_route(&self, id: &str, inspect: &ContainerInspectResponse, owner: Owner) {
        let known = self.routes.get(id);
        let same_init = known
            .as_ref()
            .and_then(|r| r.helper.as_ref())
            .is_some_and(|s| Some(s.pid()) == init_pid(inspect));
        let route = match known {
            Some(known) if same_init => Route {
                owner: Some(owner),
                ..known
            },
            _ => helper_container::route_of(inspect, Instant::now(), Some(owner)),
        };
        self.routes.set(id, route);
    }

    /// Brings the helper of `container` back: another task may have done it already
    /// (its init changed), else the container is restarted; should its helper still
    /// not answer, or the container be of an older layout, it is recreated from what
    /// the last ensure saw, home kept. A helper that does not answer also says what the
    /// agent knew of the container is stale (Docker's event of an outside change may not
    /// have come yet): Docker is asked, and a container gone meanwhile is made again.
    pub(super) async fn restore(
        &self,
        container: &str,
        broken: &Route,
    ) -> Result<(HelperSocket, Instant), HelperError> {
        let _guard = self.locks.lock(&broken.name).await;
        self.known.forget(container);
        let inspect = match self.ask(container).await {
            Ok(inspect) => inspect,
            Err(e) if status_of(&e) == Some(404) && broken.owner.is_some() => {
                tracing::warn!(container = %broken.name, "the container is gone; making it again");
                return self.recreate(None, broken).await;
            }
            Err(e) => return Err(failed("looking it up", docker_message(&e))),
        };
        let id = inspect.id.clone().unwrap_or_else(|| container.to_owned());
        let broken_pid = broken.helper.as_ref().map(HelperSocket::pid);
        let current = init_pid(&inspect);
        if current.is_some() && current != broken_pid && !helper_container::is_outdated(&inspect) {
            // Restarted meanwhile (by another session's restore, or an operator).
            if let Some(ready) = self.ready_route(&id, broken.owner.clone()).await {
                return Ok(ready);
            }
        }
        if !helper_container::is_outdated(&inspect) {
            self.known.forget(&id);
            let options = RestartContainerOptionsBuilder::new()
                .t(RESTART_TIMEOUT_SECS)
                .build();
            self.docker
                .restart_container(&id, Some(options))
                .await
                .map_err(|e| failed("restarting", docker_message(&e)))?;
            tracing::warn!(container = %broken.name, "restarted the container to restore its helper");
            if let Some(ready) = self.ready_route(&id, broken.owner.clone()).await {
                return Ok(ready);
            }
        }
        self.recreate(Some(&id), broken).await
    }

    /// Removes the container `id` (unless it is gone already) and makes it again from
    /// what the last ensure saw, home kept.
    async fn recreate(
        &self,
        id: Option<&str>,
        broken: &Route,
    ) -> Result<(HelperSocket, Instant), HelperError> {
        let Some(owner) = &broken.owner else {
            return Err(failed("recreating", "log in again".to_owned()));
        };
        if let Some(id) = id {
            self.remove(id)
                .await
                .map_err(|e| failed("removing", e.to_string()))?;
        }
        let name = super::container_name(&self.prefix, &owner.user, &owner.env.name);
        let created = self
            .create(&name, &owner.user, &owner.env)
            .await
            .map_err(|e| failed("recreating", e.to_string()))?;
        tracing::warn!(container = %name, "recreated the container to restore its helper; the home volume is kept");
        let route = self.routes.get(&created.container_id);
        match route.as_ref().and_then(|r| r.helper.clone()) {
            Some(socket) if socket.probe().await == Ok(true) => {
                Ok((socket, route.map_or_else(Instant::now, |r| r.ready_by)))
            }
            _ => Err(failed(
                "recreating",
                "its labssh-init does not answer".to_owned(),
            )),
        }
    }

    /// The route of a container Docker just (re)started, if its helper is ready.
    async fn ready_route(&self, id: &str, owner: Option<Owner>) -> Option<(HelperSocket, Instant)> {
        let route = match self.after_start(id, owner).await {
            Ok(route) => route,
            Err(e) => {
                tracing::warn!(container = id, error = %e, "the restarted container is not usable");
                return None;
            }
        };
        let socket = route.helper?;
        (socket.probe().await == Ok(true)).then_some((socket, route.ready_by))
    }
}
