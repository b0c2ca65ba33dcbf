//! The container runtime behind the agent.
//!
//! Everything that creates containers or starts processes in them goes through
//! [`Backend`], so a Kubernetes implementation can sit beside Docker. Processes start
//! through labssh-init, the helper running as PID 1 in containers (see [`helper`]),
//! with the runtime's exec as the fallback; sessions see the same [`Process`] either
//! way.

pub mod docker;
mod error;
mod guard;
pub mod helper;
mod init_binary;
mod keyed_lock;
pub mod kubernetes;
mod lifecycle_ops;
mod netns;
mod process;
mod spawn_spec;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use labssh_proto::pb;
use tokio::io::{AsyncRead, AsyncWrite};

pub use error::BackendError;
pub use guard::{BridgeEgress, NetworkGuard};
pub use helper::SocketListener;
pub(crate) use keyed_lock::KeyedLock;
pub use lifecycle_ops::{
    settings_hash, Admission, EnsureOptions, EnsureStep, KeepaliveFile, Renewal, StepSink,
    KEEPALIVE_FILE, KEEPALIVE_MAX_BYTES,
};
pub use process::{ExitStatus, Output, Process, ProcessControl, SpawnPath, Stdin, StdinSink};
pub use spawn_spec::{home_dir, shell, PtySpec, RunAs, SpawnSpec};

/// A container runtime on one node.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Makes sure `user`'s container for `env` exists and runs: finds it by name, creates
    /// it if missing, starts it if stopped. Concurrent calls for the same (user, env) are
    /// serialized, so two simultaneous logins never both create it.
    async fn ensure(&self, user: &str, env: &pb::Environment) -> Result<Ensured, BackendError> {
        self.ensure_with(user, env, &EnsureOptions::default()).await
    }

    /// [`Backend::ensure`], reporting its steps and, when `options.renew`, recreating
    /// (home kept) a container older than the environment's `max_age` or made from
    /// another image or settings than the environment's now.
    async fn ensure_with(
        &self,
        user: &str,
        env: &pb::Environment,
        options: &EnsureOptions,
    ) -> Result<Ensured, BackendError>;

    /// Whether this runtime can freeze containers ([`Backend::pause`]); where it
    /// cannot, idle containers are only stopped.
    fn can_pause(&self) -> bool {
        true
    }

    /// Freezes a running container (memory kept, no CPU); the next ensure thaws it.
    async fn pause(&self, container: &str) -> Result<(), BackendError> {
        Err(unsupported(container, "pause"))
    }

    /// Thaws a paused container without anything else an ensure does: for running
    /// its stop hooks before it is stopped.
    async fn unpause(&self, container: &str) -> Result<(), BackendError> {
        Err(unsupported(container, "unpause"))
    }

    /// Stops a container (the home kept); the next ensure starts it.
    async fn stop(&self, container: &str) -> Result<(), BackendError> {
        Err(unsupported(container, "stop"))
    }

    /// Removes a container (`container` is its name), its home kept: the next ensure
    /// makes it anew from its environment's image. Its sessions must be ended first.
    async fn remove(&self, container: &str) -> Result<(), BackendError> {
        Err(unsupported(container, "remove"))
    }

    /// Deletes `user`'s home on this node (shared by all their environments); the
    /// caller has removed every container of theirs here first.
    async fn remove_home(&self, user: &str) -> Result<(), BackendError> {
        Err(unsupported(user, "remove homes"))
    }

    /// The id (`sha256:…`) of the image `image` names on this node now, if it is here.
    async fn image_id(&self, image: &str) -> Result<Option<String>, BackendError> {
        let _ = image;
        Ok(None)
    }

    /// CPU time the running container used since it started, if this runtime can
    /// tell.
    async fn cpu_time(&self, container: &str) -> Result<Option<Duration>, BackendError> {
        let _ = container;
        Ok(None)
    }

    /// The keep-alive file ([`KEEPALIVE_FILE`]) in `user`'s home in the running
    /// container, read without following any symlink and at most
    /// [`KEEPALIVE_MAX_BYTES`]; `None` when there is none (or it is not a regular file
    /// of the student's).
    async fn keepalive(
        &self,
        container: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<Option<KeepaliveFile>, BackendError> {
        let _ = (container, user, env);
        Ok(None)
    }

    /// Starts a process in a running container (`container` is an id or name).
    async fn spawn(&self, container: &str, spec: SpawnSpec) -> Result<Process, BackendError>;

    /// Takes over the session `id` that labssh-init in `container` kept when an
    /// earlier agent's connection to it broke ([`SpawnSpec::keep`]): the process,
    /// its output from `output_offset` on first, and what the helper said of it.
    /// Errors are student-readable.
    async fn reattach(
        &self,
        container: &str,
        id: &str,
        output_offset: u64,
    ) -> Result<(Process, labssh_helper_proto::wire::Attached), BackendError> {
        let _ = (container, id, output_offset);
        Err(BackendError::SpawnFailed(
            "this container runtime cannot resume sessions".to_owned(),
        ))
    }

    /// The uid and gid a container of an environment that takes them from the
    /// login's identity was made with (its record, e.g. Docker's `labssh.ids`
    /// label); `None` when none was recorded.
    async fn recorded_ids(&self, container: &str) -> Result<Option<(u32, u32)>, BackendError> {
        let _ = container;
        Ok(None)
    }

    /// This agent's containers, running or stopped.
    async fn inventory(&self) -> Result<Vec<ContainerInfo>, BackendError>;

    /// Resolves when the runtime saw this agent's containers change (a watch event),
    /// so the inventory is read again at once rather than at the next refresh tick.
    /// Runtimes that cannot tell never resolve.
    async fn inventory_changed(&self) {
        std::future::pending::<()>().await
    }

    /// Opens a TCP connection to `host:port` as seen from inside the running container
    /// (its network namespace and name resolution), for port forwarding.
    async fn connect_tcp(
        &self,
        container: &str,
        host: &str,
        port: u16,
    ) -> Result<Box<dyn Duplex>, BackendError> {
        let _ = container;
        Err(BackendError::ConnectFailed {
            target: format!("{host}:{port}"),
            message: "this container runtime cannot forward ports".to_owned(),
        })
    }

    /// Resolves `host` as the running container would (its /etc/hosts, its resolver),
    /// so forwarding policy can judge addresses before anything connects. IP literals
    /// come back as they are.
    async fn resolve(
        &self,
        container: &str,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, BackendError> {
        let _ = container;
        Err(BackendError::ConnectFailed {
            target: format!("{host}:{port}"),
            message: "this container runtime cannot resolve names in containers".to_owned(),
        })
    }

    /// The container's own addresses on its networks (not loopback): forwarding to
    /// them reaches the container itself.
    async fn container_addresses(&self, container: &str) -> Result<Vec<IpAddr>, BackendError> {
        let _ = container;
        Ok(Vec::new())
    }

    /// The TCP sockets listening inside the running container (its services), read
    /// from the container's own socket tables, never from anything a process in it
    /// reports. Cheap: polled for every running container every few seconds. Never
    /// restores or restarts anything.
    async fn listeners(&self, container: &str) -> Result<Vec<SocketAddr>, BackendError> {
        let _ = container;
        Ok(Vec::new())
    }

    /// Listens on `addr` inside the running container's network namespace, for
    /// `ssh -R`. Port 0 picks a free port; the listener's `local_addr` tells which.
    async fn listen_tcp(
        &self,
        container: &str,
        addr: SocketAddr,
    ) -> Result<tokio::net::TcpListener, BackendError> {
        let _ = container;
        Err(BackendError::ListenFailed {
            address: addr.to_string(),
            message: "this container runtime cannot listen in containers".to_owned(),
        })
    }

    /// Connects to the unix socket at `path` (absolute) inside the running container
    /// as `run_as`, whose permissions on the file then apply, for `ssh -L PORT:/PATH`.
    async fn connect_unix(
        &self,
        container: &str,
        path: &str,
        run_as: RunAs,
    ) -> Result<Box<dyn Duplex>, BackendError> {
        let _ = (container, run_as);
        Err(BackendError::ConnectFailed {
            target: path.to_owned(),
            message: "this container runtime cannot forward unix sockets".to_owned(),
        })
    }

    /// Listens on a unix socket made at `path` (absolute) inside the running
    /// container by `run_as` (theirs, mode 0600), for `ssh -R /PATH:...`; the socket
    /// file goes away with the listener.
    async fn listen_unix(
        &self,
        container: &str,
        path: &str,
        run_as: RunAs,
    ) -> Result<SocketListener, BackendError> {
        let _ = (container, run_as);
        Err(BackendError::ListenFailed {
            address: path.to_owned(),
            message: "this container runtime cannot listen on unix sockets".to_owned(),
        })
    }

    /// The first of `candidates` (absolute paths inside the container) that is an
    /// executable file in the running container, symlinks resolved inside it.
    async fn find_executable(
        &self,
        container: &str,
        candidates: &[&str],
    ) -> Result<Option<String>, BackendError> {
        let _ = (container, candidates);
        Ok(None)
    }

    /// What `user`'s home and their container for `env` use on disk, for the quotas
    /// `env` sets (`home_quota_mb`, `layer_quota_mb`); `None` for a quota that is off,
    /// that the runtime enforces itself, or that this runtime cannot measure. Slow (it
    /// may walk the files): for a background task, never a login's path.
    async fn disk_usage(
        &self,
        user: &str,
        env: &pb::Environment,
    ) -> Result<DiskUsage, BackendError> {
        let _ = (user, env);
        Ok(DiskUsage::default())
    }

    /// When the container last started, while it runs (and is not paused); `None`
    /// otherwise, or when the runtime cannot tell. Timer hooks count from it.
    async fn started_at(&self, container: &str) -> Result<Option<SystemTime>, BackendError> {
        let _ = container;
        Ok(None)
    }

    /// Hands the runtime the firewall guarding its containers' networks: the rules of
    /// the networks it already has go in now, those of each new one before any
    /// container joins it.
    async fn guard_networks(&self, guard: Arc<dyn NetworkGuard>) {
        let _ = guard;
    }
}

/// How long a container's labssh-init gets to list its listening sockets.
const LISTENERS_TIMEOUT: Duration = Duration::from_secs(2);

/// A container's listening sockets ([`Backend::listeners`]): asked of its labssh-init
/// when it has one, else read by the agent from inside the container's network
/// (`enter`), as also when that labssh-init predates the question or fails to answer.
/// Either way from the kernel's tables, never from a student's process.
async fn read_listeners(
    helper: Option<helper::HelperSocket>,
    enter: impl std::future::Future<Output = Result<netns::Container, String>>,
) -> Result<Vec<SocketAddr>, BackendError> {
    if let Some(socket) = helper {
        match socket.listeners(LISTENERS_TIMEOUT).await {
            Ok(Some(found)) => return Ok(found),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(pid = socket.pid(), error = %e, "labssh-init did not list its sockets; reading them from outside")
            }
        }
    }
    let failed = |message| BackendError::Runtime {
        action: "reading its listening sockets",
        message,
    };
    enter
        .await
        .map_err(failed)?
        .listening()
        .await
        .map_err(failed)
}

/// This runtime cannot do `what` to containers.
fn unsupported(container: &str, what: &'static str) -> BackendError {
    BackendError::Runtime {
        action: what,
        message: format!("this container runtime cannot {what} {container}"),
    }
}

/// Disk space measured by [`Backend::disk_usage`], in bytes allocated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// The student's home volume (shared by all their environments).
    pub home_bytes: Option<u64>,
    /// The container's writable layer: what it wrote outside the home.
    pub layer_bytes: Option<u64>,
}

/// A byte stream both ways, such as a forwarded TCP connection.
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Duplex for T {}

/// What [`Backend::ensure`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    /// The runtime's id for the container.
    pub container_id: String,
    /// The container's name, `{prefix}-{user}.{env}` (`{prefix}-{user}-{env}` for
    /// containers made before that).
    pub name: String,
    /// The container did not exist and was created.
    pub created: bool,
    /// The container was not running and was started.
    pub started: bool,
    /// A line for the student (e.g. that the container moved to another network);
    /// empty when there is nothing to say.
    pub notice: String,
}

/// One container of this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Container name.
    pub name: String,
    /// Student it belongs to.
    pub user: String,
    /// Environment it was created for.
    pub environment: String,
    /// Whether it runs.
    pub state: ContainerState,
    /// The GPUs (device ids) it holds.
    pub gpus: Vec<String>,
    /// What it was made of, for telling outdated containers.
    pub version: ContainerVersion,
    /// When it was created, if the runtime says.
    pub created: Option<std::time::SystemTime>,
    /// The uid and gid it was made with, recorded for an environment that takes
    /// them from the login's identity.
    pub ids: Option<(u32, u32)>,
}

/// What a container was made of: the image's id and a hash of the settings that
/// need a new container to change. Empty for containers made before labssh recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerVersion {
    /// The image id (`sha256:…`) it was created from.
    pub image: String,
    /// [`settings_hash`] of its environment then.
    pub settings: String,
}

/// The lifecycle states the controller cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Running (or restarting).
    Running,
    /// Created but not started, exited or dead.
    Stopped,
    /// Being created.
    Creating,
    /// Frozen after idling: memory kept, no CPU.
    Paused,
}

impl From<&ContainerInfo> for pb::ContainerInfo {
    fn from(c: &ContainerInfo) -> Self {
        let state = match c.state {
            ContainerState::Running => pb::ContainerState::Running,
            ContainerState::Stopped => pb::ContainerState::Stopped,
            ContainerState::Creating => pb::ContainerState::Creating,
            ContainerState::Paused => pb::ContainerState::Paused,
        };
        pb::ContainerInfo {
            user: c.user.clone(),
            environment: c.environment.clone(),
            state: state as i32,
            gpus: c.gpus.clone(),
            outdated: false,
            // Discovery's, filled in by the inventory.
            listening: Vec::new(),
        }
    }
}

/// A backend shared between the gRPC service and background tasks.
pub type SharedBackend = Arc<dyn Backend>;
