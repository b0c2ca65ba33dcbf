//! The container runtime behind the agent.
//!
//! Everything that creates containers or starts processes in them goes through
//! [`Backend`], so a Kubernetes implementation can sit beside Docker. Processes start
//! through labssh-init, the helper running as PID 1 in containers (see [`helper`]),
//! with the runtime's exec as the fallback; sessions see the same [`Process`] either
//! way.

pub mod docker;
pub mod helper;
mod init_binary;
mod keyed_lock;
mod netns;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use labssh_proto::pb;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub use docker::DockerBackend;
pub(crate) use keyed_lock::KeyedLock;

/// A container runtime on one node.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Makes sure `user`'s container for `env` exists and runs: finds it by name, creates
    /// it if missing, starts it if stopped. Concurrent calls for the same (user, env) are
    /// serialized, so two simultaneous logins never both create it.
    async fn ensure(&self, user: &str, env: &pb::Environment) -> Result<Ensured, BackendError>;

    /// Starts a process in a running container (`container` is an id or name).
    async fn spawn(&self, container: &str, spec: SpawnSpec) -> Result<Process, BackendError>;

    /// This agent's containers, running or stopped.
    async fn inventory(&self) -> Result<Vec<ContainerInfo>, BackendError>;

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
}

/// How to start one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    /// Program and arguments; never empty.
    pub argv: Vec<String>,
    /// The process's environment variables, without duplicates.
    pub env: Vec<(String, String)>,
    /// A terminal, when the client asked for one.
    pub pty: Option<PtySpec>,
    /// The identity the process runs as.
    pub run_as: RunAs,
    /// Working directory; `None` keeps the image's.
    pub workdir: Option<String>,
}

/// Terminal type and initial size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtySpec {
    /// `TERM`, e.g. "xterm-256color".
    pub term: String,
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// Who a process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// uid 0, gid 0 (with only the capabilities the container has).
    Root,
    /// Numeric ids; they need not exist in the image's /etc/passwd.
    Ids {
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
    },
}

/// Used when an environment names no shell; every image the agent can use has one.
const FALLBACK_SHELL: &str = "/bin/sh";

/// The environment's shell, or `/bin/sh` when it names none.
pub fn shell(env: &pb::Environment) -> &str {
    if env.shell.is_empty() {
        FALLBACK_SHELL
    } else {
        &env.shell
    }
}

/// Where a student's files live inside every one of their containers.
pub fn home_dir(user: &str) -> String {
    format!("/home/{user}")
}

impl SpawnSpec {
    /// The spec for a process of `user` in environment `env`: runs as the environment's
    /// user in the home directory, with HOME, USER, LOGNAME, SHELL (and TERM with a pty),
    /// then the environment's variables, then `extra_env`; later values win.
    pub fn for_user(
        user: &str,
        env: &pb::Environment,
        argv: Vec<String>,
        extra_env: impl IntoIterator<Item = (String, String)>,
        pty: Option<PtySpec>,
    ) -> SpawnSpec {
        let home = home_dir(user);
        let mut vars = EnvVars::default();
        vars.set("HOME", &home);
        vars.set("USER", user);
        vars.set("LOGNAME", user);
        vars.set("SHELL", shell(env));
        if let Some(pty) = &pty {
            vars.set("TERM", &pty.term);
        }
        let mut from_env: Vec<_> = env.env.iter().collect();
        from_env.sort(); // protobuf maps have no order; make the result reproducible
        for (k, v) in from_env {
            vars.set(k, v);
        }
        for (k, v) in extra_env {
            vars.set(&k, &v);
        }
        SpawnSpec {
            argv,
            env: vars.0,
            pty,
            run_as: if env.run_as_root {
                RunAs::Root
            } else {
                RunAs::Ids {
                    uid: env.uid,
                    gid: env.gid,
                }
            },
            workdir: Some(home),
        }
    }
}

#[derive(Default)]
struct EnvVars(Vec<(String, String)>);

impl EnvVars {
    fn set(&mut self, key: &str, value: &str) {
        // Such names cannot be passed as KEY=VALUE; skip rather than corrupt others.
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            tracing::debug!(key, "skipping unusable environment variable");
            return;
        }
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.0.push((key.to_owned(), value.to_owned())),
        }
    }
}

/// How a process is started in a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnPath {
    /// Through labssh-init's socket.
    Helper,
    /// With Docker exec.
    Exec,
}

impl SpawnPath {
    /// The name used in logs, metrics and the `labssh.spawn` label.
    pub fn name(self) -> &'static str {
        match self {
            SpawnPath::Helper => "helper",
            SpawnPath::Exec => "exec",
        }
    }
}

/// A started process: its stdin, its output and a handle to control it.
pub struct Process {
    /// The process's stdin; `shutdown()` delivers EOF, as does dropping it.
    pub stdin: Stdin,
    /// Output in the order it was produced; ends when the process closes its output
    /// (normally when it exits). With a pty everything arrives as stdout.
    pub output: BoxStream<'static, Output>,
    /// Resize, signal and wait; shareable between tasks.
    pub control: Arc<dyn ProcessControl>,
    /// How it was started: the backend says, so metrics never guess.
    pub path: SpawnPath,
}

/// A process's stdin. Writes take [`Bytes`], so a backend can pass what the proxy sent
/// on to the process without copying it (the helper writes it to its socket as is).
pub struct Stdin(Box<dyn StdinSink>);

/// Where a [`Stdin`] writes. Dropping a sink without `shutdown` must still deliver EOF.
#[async_trait]
pub trait StdinSink: Send {
    /// Writes all of `data`, waiting while the process does not read.
    async fn write(&mut self, data: Bytes) -> std::io::Result<()>;
    /// Delivers EOF.
    async fn shutdown(&mut self) -> std::io::Result<()>;
}

impl Stdin {
    /// A stdin writing to `sink`.
    pub fn new(sink: impl StdinSink + 'static) -> Stdin {
        Stdin(Box::new(sink))
    }

    /// A stdin writing to a byte stream (Docker exec's attached connection, say).
    pub fn from_writer(writer: impl AsyncWrite + Send + 'static) -> Stdin {
        Stdin::new(WriterSink(Box::pin(writer)))
    }

    /// Writes all of `data`, handing it on without a copy where the backend can.
    pub async fn send(&mut self, data: Bytes) -> std::io::Result<()> {
        self.0.write(data).await
    }

    /// Writes a copy of all of `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write(Bytes::copy_from_slice(data)).await
    }

    /// Delivers EOF.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.0.shutdown().await
    }
}

/// A [`StdinSink`] over a byte stream.
struct WriterSink(Pin<Box<dyn AsyncWrite + Send>>);

#[async_trait]
impl StdinSink for WriterSink {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.0.write_all(&data).await
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.0.shutdown().await
    }
}

/// One chunk of process output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes written to stdout (or to the terminal).
    Stdout(Bytes),
    /// Bytes written to stderr.
    Stderr(Bytes),
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal (SSH name, without "SIG").
    Signal(String),
}

impl From<ExitStatus> for pb::ExitStatus {
    fn from(status: ExitStatus) -> Self {
        let status = match status {
            ExitStatus::Code(code) => pb::exit_status::Status::Code(code),
            ExitStatus::Signal(name) => pb::exit_status::Status::Signal(name),
        };
        pb::ExitStatus {
            status: Some(status),
            core_dumped: false,
        }
    }
}

/// Controls a running process.
#[async_trait]
pub trait ProcessControl: Send + Sync {
    /// Changes the terminal size; a no-op without a pty.
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), BackendError>;
    /// Sends a signal by SSH name ("INT", "HUP", ...); does nothing once it has exited.
    async fn signal(&self, name: &str) -> Result<(), BackendError>;
    /// Waits for the process to exit. Call it after the output has ended.
    async fn wait(&self) -> Result<ExitStatus, BackendError>;
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
}

/// The lifecycle states the controller cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Running (or restarting).
    Running,
    /// Created but not started, exited, paused or dead.
    Stopped,
    /// Being created.
    Creating,
}

impl From<&ContainerInfo> for pb::ContainerInfo {
    fn from(c: &ContainerInfo) -> Self {
        let state = match c.state {
            ContainerState::Running => pb::ContainerState::Running,
            ContainerState::Stopped => pb::ContainerState::Stopped,
            ContainerState::Creating => pb::ContainerState::Creating,
        };
        pb::ContainerInfo {
            user: c.user.clone(),
            environment: c.environment.clone(),
            state: state as i32,
        }
    }
}

/// Why a runtime operation failed. The text is shown to students, so it says what went
/// wrong in their terms and carries the runtime's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The user or environment name cannot be used in a container name.
    #[error("invalid {what} name '{name}'")]
    InvalidName {
        /// "user" or "environment".
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// The environment's image is not on this node, and nodes do not pull.
    #[error("image '{image}' is not available on agent '{agent}'")]
    ImageNotAvailable {
        /// The image reference.
        image: String,
        /// This agent's name.
        agent: String,
    },
    /// A container with the expected name belongs to someone else.
    #[error("container '{0}' exists but does not belong to this user and environment")]
    NameTaken(String),
    /// Creating the container failed.
    #[error("container could not be created: {0}")]
    CreateFailed(String),
    /// Starting the container failed; carries the runtime's message.
    #[error("container failed to start: {0}")]
    StartFailed(String),
    /// Starting the process failed.
    #[error("could not start the process: {0}")]
    SpawnFailed(String),
    /// The signal name is not one SSH defines.
    #[error("unknown signal '{0}'")]
    UnknownSignal(String),
    /// A TCP connection inside the container could not be opened.
    #[error("cannot connect to {target} in the container: {message}")]
    ConnectFailed {
        /// `host:port` as asked.
        target: String,
        /// Why.
        message: String,
    },
    /// Listening inside the container failed.
    #[error("cannot listen on {address} in the container: {message}")]
    ListenFailed {
        /// The address asked for.
        address: String,
        /// Why.
        message: String,
    },
    /// Any other runtime failure.
    #[error("container runtime error while {action}: {message}")]
    Runtime {
        /// What the agent was doing.
        action: &'static str,
        /// The runtime's message.
        message: String,
    },
}

/// A backend shared between the gRPC service and background tasks.
pub type SharedBackend = Arc<dyn Backend>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_spec_for_user() {
        let env = pb::Environment {
            name: "default".into(),
            shell: "/bin/sh".into(),
            uid: 1000,
            gid: 100,
            env: [("LANG".to_owned(), "C.UTF-8".to_owned())].into(),
            ..Default::default()
        };
        let pty = PtySpec {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
        };
        let spec = SpawnSpec::for_user(
            "alice",
            &env,
            vec!["/bin/sh".into(), "-l".into()],
            [("LANG".to_owned(), "de_DE.UTF-8".to_owned())],
            Some(pty),
        );
        assert_eq!(
            spec.run_as,
            RunAs::Ids {
                uid: 1000,
                gid: 100
            }
        );
        assert_eq!(spec.workdir.as_deref(), Some("/home/alice"));
        let get = |k: &str| {
            spec.env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("HOME"), Some("/home/alice"));
        assert_eq!(get("LOGNAME"), Some("alice"));
        assert_eq!(get("TERM"), Some("xterm"));
        assert_eq!(get("LANG"), Some("de_DE.UTF-8"));
        assert_eq!(spec.env.iter().filter(|(k, _)| k == "LANG").count(), 1);
    }
}
