//! Work inside a student's container, one way for every kind of work: through the
//! container's helper, restoring a helper that is gone or a socket that is not the
//! helper's (see `restore.rs`), and only in a container made for Docker exec the other
//! way: Docker exec for processes, the agent entering the container's namespace for
//! connections, names and listeners.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::time::Instant;

use super::exec;
use super::routes::SpawnPath;
use super::DockerBackend;
use crate::backend::helper::{HelperError, HelperSocket, Pipes, SocketListener};
use crate::backend::{BackendError, Process, RunAs, SpawnSpec};

/// One kind of work done inside a container.
pub(super) trait Inside {
    /// What the work gives back.
    type Output;

    /// Does it through the helper of `container`.
    async fn through(
        &self,
        container: &str,
        socket: &HelperSocket,
        ready_by: Instant,
    ) -> Result<Self::Output, HelperError>;

    /// Does it in a container without a helper (made for Docker exec).
    async fn without_helper(
        self,
        backend: &DockerBackend,
        container: &str,
    ) -> Result<Self::Output, BackendError>;

    /// The error for `message`, in this work's words.
    fn failed(&self, message: String) -> BackendError;
}

/// Start a process; without a terminal, its pipes handed to the agent or relayed.
pub(super) struct Spawn(pub SpawnSpec, pub Pipes);

/// Open a TCP connection to `host:port`.
pub(super) struct Connect<'a> {
    /// A name or an address, as the student gave it.
    pub host: &'a str,
    /// The port.
    pub port: u16,
}

/// Resolve a name (every address, with the port).
pub(super) struct Lookup<'a> {
    /// The name.
    pub host: &'a str,
    /// The port every address gets.
    pub port: u16,
}

/// Listen on an address.
pub(super) struct Listen(pub SocketAddr);

/// Connect to a unix socket as a student.
pub(super) struct ConnectUnix<'a> {
    /// Its absolute path in the container.
    pub path: &'a str,
    /// Who connects: the file's permissions apply to them.
    pub run_as: RunAs,
}

/// Listen on a unix socket made by a student.
pub(super) struct ListenUnix<'a> {
    /// Its absolute path in the container.
    pub path: &'a str,
    /// Who makes it: theirs, mode 0600.
    pub run_as: RunAs,
}

/// Why a container made for Docker exec cannot do unix sockets: the agent would have
/// to act as the student inside the container's mount namespace, which only the
/// helper, already there, does without running a process per connection.
const NO_HELPER_FOR_SOCKETS: &str =
    "unix-socket forwarding needs labssh-init in the container, and this one was made for docker exec; it gets it when it is recreated";

impl DockerBackend {
    /// Does `work` inside `container`: through its helper when it has one, else the
    /// other way.
    pub(super) async fn inside<W: Inside>(
        &self,
        container: &str,
        work: W,
    ) -> Result<W::Output, BackendError> {
        match self.via_helper(container, &work).await {
            Ok(Some(output)) => Ok(output),
            Ok(None) => work.without_helper(self, container).await,
            Err(e) => Err(work.failed(e.to_string())),
        }
    }

    /// Asks the container's helper, restoring the helper once when it is gone or what
    /// answers is not the helper. `Ok(None)`: the container has no helper (it was made
    /// for Docker exec), so the caller takes the other way.
    async fn via_helper<W: Inside>(
        &self,
        container: &str,
        work: &W,
    ) -> Result<Option<W::Output>, HelperError> {
        let route = self
            .route(container)
            .await
            .map_err(|e| HelperError::Unavailable(e.to_string()))?;
        if route.path == SpawnPath::Exec {
            return Ok(None);
        }
        if let Some(socket) = &route.helper {
            match work.through(container, socket, route.ready_by).await {
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
        work.through(container, &socket, ready_by).await.map(Some)
    }
}

impl Inside for Spawn {
    type Output = Process;

    async fn through(
        &self,
        _container: &str,
        socket: &HelperSocket,
        ready_by: Instant,
    ) -> Result<Process, HelperError> {
        socket.spawn(&self.0, ready_by, self.1).await
    }

    async fn without_helper(
        self,
        backend: &DockerBackend,
        container: &str,
    ) -> Result<Process, BackendError> {
        exec::spawn(&backend.docker, &backend.socket, container, self.0).await
    }

    fn failed(&self, message: String) -> BackendError {
        BackendError::SpawnFailed(message)
    }
}

impl Inside for Connect<'_> {
    type Output = TcpStream;

    async fn through(
        &self,
        container: &str,
        socket: &HelperSocket,
        ready_by: Instant,
    ) -> Result<TcpStream, HelperError> {
        let stream = socket.connect_tcp(self.host, self.port, ready_by).await?;
        tracing::debug!(container, target = %format!("{}:{}", self.host, self.port), "TCP connection opened through the helper");
        Ok(stream)
    }

    async fn without_helper(
        self,
        backend: &DockerBackend,
        container: &str,
    ) -> Result<TcpStream, BackendError> {
        let target = format!("{}:{}", self.host, self.port);
        let inside = backend.enter(container).await.map_err(|e| self.failed(e))?;
        let addrs = inside
            .resolve(self.host, self.port)
            .await
            .map_err(|e| self.failed(e))?;
        let stream = inside
            .connect(&addrs, &target)
            .await
            .map_err(|e| self.failed(e))?;
        tracing::debug!(container, target = %target, "TCP connection opened from the agent");
        Ok(stream)
    }

    fn failed(&self, message: String) -> BackendError {
        BackendError::ConnectFailed {
            target: format!("{}:{}", self.host, self.port),
            message,
        }
    }
}

impl Inside for Lookup<'_> {
    type Output = Vec<SocketAddr>;

    async fn through(
        &self,
        _container: &str,
        socket: &HelperSocket,
        ready_by: Instant,
    ) -> Result<Vec<SocketAddr>, HelperError> {
        socket.lookup(self.host, self.port, ready_by).await
    }

    async fn without_helper(
        self,
        backend: &DockerBackend,
        container: &str,
    ) -> Result<Vec<SocketAddr>, BackendError> {
        let inside = backend.enter(container).await.map_err(|e| self.failed(e))?;
        inside
            .resolve(self.host, self.port)
            .await
            .map_err(|e| self.failed(e))
    }

    fn failed(&self, message: String) -> BackendError {
        BackendError::ConnectFailed {
            target: format!("{}:{}", self.host, self.port),
            message,
        }
    }
}

impl Inside for Listen {
    type Output = TcpListener;

    async fn through(
        &self,
        _container: &str,
        socket: &HelperSocket,
        ready_by: Instant,
    ) -> Result<TcpListener, HelperError> {
        socket.listen_tcp(self.0, ready_by).await
    }

    async fn without_helper(
        self,
        backend: &DockerBackend,
        container: &str,
    ) -> Result<TcpListener, BackendError> {
        let inside = backend.enter(container).await.map_err(|e| self.failed(e))?;
        inside.listen(self.0).await.map_err(|e| self.failed(e))
    }

    fn failed(&self, message: String) -> BackendError {
        BackendError::ListenFailed {
            address: self.0.to_string(),
            message,
        }
    }
}

impl Inside for ConnectUnix<'_> {
    type Output = UnixStream;

    async fn through(
        &self,
        container: &str,
        socket: &HelperSocket,
        ready_by: Instant,
    ) -> Result<UnixStream, HelperError> {
        let stream = socket
            .connect_unix(self.path, self.run_as, ready_by)
            .await?;
        tracing::debug!(
            container,
            path = self.path,
            "unix socket connected through the helper"
        );
        Ok(stream)
    }

    async fn without_helper(
        self,
        _backend: &DockerBackend,
        _container: &str,
    ) -> Result<UnixStream, BackendError> {
        Err(self.failed(NO_HELPER_FOR_SOCKETS.to_owned()))
    }

    fn failed(&self, message: String) -> BackendError {
        BackendError::ConnectFailed {
            target: self.path.to_owned(),
            message,
        }
    }
}

impl Inside for ListenUnix<'_> {
    type Output = SocketListener;

    async fn through(
        &self,
        _container: &str,
        socket: &HelperSocket,
        ready_by: Instant,
    ) -> Result<SocketListener, HelperError> {
        socket.listen_unix(self.path, self.run_as, ready_by).await
    }

    async fn without_helper(
        self,
        _backend: &DockerBackend,
        _container: &str,
    ) -> Result<SocketListener, BackendError> {
        Err(self.failed(NO_HELPER_FOR_SOCKETS.to_owned()))
    }

    fn failed(&self, message: String) -> BackendError {
        BackendError::ListenFailed {
            address: self.path.to_owned(),
            message,
        }
    }
}
