//! Helper containers are served through their helper or not at all: a helper that is
//! gone, or a socket that is not the helper's, is restored (restart, else recreate with
//! the home kept) and never bypassed with Docker exec, which would hand a root student
//! the capabilities only labssh-init may hold.

use std::net::SocketAddr;

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::RestartContainerOptionsBuilder;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::helper_container::{self, init_pid};
use super::routes::{Owner, Route, SpawnPath};
use super::{docker_message, DockerBackend};
use crate::backend::helper::{HelperError, HelperSocket};
use crate::backend::{Process, SpawnSpec};

/// Docker's stop timeout for a restart; labssh containers stop at once on TERM.
const RESTART_TIMEOUT_SECS: i32 = 2;

/// What a helper is asked to do.
pub(super) enum Ask<'a> {
    /// Start a process.
    Spawn(&'a SpawnSpec),
    /// Open a TCP connection to `host:port`.
    Connect(&'a str, u16),
    /// Resolve `host` (every address with the port).
    Lookup(&'a str, u16),
    /// Listen on an address.
    Listen(SocketAddr),
}

/// What it gives back, one variant per [`Ask`].
pub(super) enum Answer {
    /// The started process.
    Process(Process),
    /// The connection, made inside the container.
    Stream(TcpStream),
    /// What the name resolves to in the container.
    Addresses(Vec<SocketAddr>),
    /// The socket listening inside the container.
    Listener(TcpListener),
}

impl Ask<'_> {
    async fn through(
        &self,
        socket: &HelperSocket,
        ready_by: Instant,
    ) -> Result<Answer, HelperError> {
        Ok(match *self {
            Ask::Spawn(spec) => Answer::Process(socket.spawn(spec, ready_by).await?),
            Ask::Connect(host, port) => {
                Answer::Stream(socket.connect_tcp(host, port, ready_by).await?)
            }
            Ask::Lookup(host, port) => {
                Answer::Addresses(socket.lookup(host, port, ready_by).await?)
            }
            Ask::Listen(addr) => Answer::Listener(socket.listen_tcp(addr, ready_by).await?),
        })
    }
}

impl DockerBackend {
    /// Asks the container's helper, restoring the helper once when it is gone or what
    /// answers is not the helper. `Ok(None)`: the container has no helper (it was made
    /// for Docker exec), so the caller takes the other way.
    pub(super) async fn via_helper(
        &self,
        container: &str,
        ask: Ask<'_>,
    ) -> Result<Option<Answer>, HelperError> {
        let route = self
            .route(container)
            .await
            .map_err(|e| HelperError::Unavailable(e.to_string()))?;
        if route.path == SpawnPath::Exec {
            return Ok(None);
        }
        if let Some(socket) = &route.helper {
            match ask.through(socket, route.ready_by).await {
                Err(HelperError::Tampered(why)) => {
                    tracing::warn!(container = %route.name, reason = %why, "refused a socket that is not the container's labssh-init; restoring its helper");
                }
                Err(HelperError::Unavailable(why)) => {
                    tracing::warn!(container = %route.name, reason = %why, "the container's helper does not answer; restoring it");
                }
                done => return done.map(Some),
            }
        }
        let (socket, ready_by) = self.restore(container, &route).await?;
        ask.through(&socket, ready_by).await.map(Some)
    }

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
    /// the last ensure saw, home kept.
    async fn restore(
        &self,
        container: &str,
        broken: &Route,
    ) -> Result<(HelperSocket, Instant), HelperError> {
        let failed = |what: &str, e: String| {
            HelperError::Unavailable(format!(
                "your container's helper could not be restored ({what}: {e}); try again"
            ))
        };
        let _guard = self.locks.lock(&broken.name).await;
        let inspect = self
            .inspect(container)
            .await
            .map_err(|e| failed("looking it up", e.to_string()))?;
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
        let Some(owner) = &broken.owner else {
            return Err(failed("recreating", "log in again".to_owned()));
        };
        self.remove(&id)
            .await
            .map_err(|e| failed("removing", e.to_string()))?;
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
