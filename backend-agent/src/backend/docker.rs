//! Docker implementation of [`Backend`], through bollard.
//!
//! A student's container is made sure of in [`ensure`]; work inside it (processes,
//! connections, names, listeners) goes through its helper or, in a container made for
//! Docker exec, the other way, in one place: [`inside`]. A helper that is gone is
//! restored ([`restore`]), never bypassed. What a container looks like is
//! [`container_spec`]; how processes start in each known one is [`routes`].

mod archive;
mod cgroup;
mod container_spec;
mod disk;
mod ensure;
mod errors;
mod etc_files;
mod events;
mod exec;
mod helper_container;
mod hijack;
mod host_home;
mod ids;
mod inside;
mod inventory;
mod known;
mod lifecycle;
mod network;
mod passwd;
mod prepare;
mod restore;
mod routes;
mod timing;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerInspectResponse;
use bollard::{Docker, API_DEFAULT_VERSION};
use labssh_proto::pb;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;
use tokio::time::Instant;

pub use container_spec::{
    container_name, legacy_container_name, LABEL_AGENT, LABEL_ENV, LABEL_GENERATION, LABEL_PREFIX,
    LABEL_SPAWN, LABEL_USER, RUN_DIR, SFTP_SERVER_PATH,
};
// What the Kubernetes backend's pods share with Docker's containers.
pub use container_spec::{
    hostname, parse_ids, same_capability, HELPER_CAPS, INIT_PATH, LABEL_IDS, LABEL_SETTINGS,
};
pub use network::{BRIDGE_PREFIX, LABEL_EGRESS};
pub use routes::SpawnPath;

use super::helper::Pipes;
use super::init_binary::{self, HelperSetup};
use super::netns;
use super::{
    Backend, BackendError, ContainerInfo, DiskUsage, Duplex, EnsureOptions, Ensured, KeepaliveFile,
    KeyedLock, NetworkGuard, Process, RunAs, SocketListener, SpawnSpec,
};
use crate::config::Config;
use errors::docker_message;
use inside::{Connect, ConnectUnix, Listen, ListenUnix, Lookup, Spawn};
use known::Known;
use routes::{Route, Routes};

/// bollard's request timeout; container creation on a busy node can take a while.
const DOCKER_TIMEOUT_SECS: u64 = 120;

/// Containers on the local Docker engine.
pub struct DockerBackend {
    /// API client, version negotiated with the daemon.
    docker: Docker,
    /// Unix socket path, for the exec connections the agent hijacks itself.
    socket: String,
    /// This agent's name, written into labels.
    agent: String,
    /// Object name prefix.
    prefix: String,
    /// Container command when the environment gives none.
    keepalive_cmd: Vec<String>,
    /// Serializes ensure per container name.
    locks: KeyedLock,
    /// labssh-init as installed for containers to mount; `None` creates containers for
    /// exec.
    helper: Option<HelperSetup>,
    /// labssh-sftp as installed for containers to mount; `None` mounts none.
    sftp: Option<std::path::PathBuf>,
    /// How processes start in each known container.
    routes: Routes,
    /// Whether labssh-init hands the pipes of processes without a terminal to the
    /// agent (`helper_pipes`).
    pipes: Pipes,
    /// What Docker said of each container and image, while its events say nothing
    /// changed: a login into a running container asks Docker nothing.
    known: Arc<Known>,
    /// Watches Docker's events into `known` for as long as the backend lives.
    _events: tokio_util::task::AbortOnDropHandle<()>,
    /// The firewall guarding containers' networks, once handed over.
    guard: OnceLock<Arc<dyn NetworkGuard>>,
    /// Bridges whose rules were put in force in this run.
    guarded: Mutex<HashSet<String>>,
    /// This node's GPUs (device ids).
    gpus: Vec<String>,
    /// Serializes creating GPU containers, from choosing their devices until the
    /// container carrying them in its label exists.
    gpu_lock: tokio::sync::Mutex<()>,
    /// Containers' networks known to exist with their rules in force, so a creation
    /// neither inspects them nor waits on their lock; forgotten when Docker says one
    /// is gone.
    networks: Mutex<HashSet<String>>,
    /// Each image's passwd and group files, read once per image id.
    image_etc: etc_files::ImageEtc,
    /// Whether the engine's containers use this host's user ids (no remapping); asked
    /// once, for setting homes up from this host.
    host_ids: tokio::sync::OnceCell<bool>,
}

impl DockerBackend {
    /// Connects to the Docker socket from `config` and negotiates the API version.
    pub async fn connect(config: &Config) -> Result<DockerBackend, BackendError> {
        let socket = config.docker_socket_path();
        let unreachable = |e: DockerError| BackendError::Runtime {
            action: "connecting to Docker",
            message: format!("{socket}: {}", docker_message(&e)),
        };
        let docker = Docker::connect_with_unix(&socket, DOCKER_TIMEOUT_SECS, API_DEFAULT_VERSION)
            .map_err(unreachable)?
            .negotiate_version()
            .await
            .map_err(unreachable)?;
        tracing::info!(socket = %socket, api = %docker.client_version(), "connected to Docker");
        let (helper, sftp) = init_binary::prepare(config);
        let known = Arc::new(Known::default());
        let events = tokio::spawn(events::watch(docker.clone(), known.clone()));
        Ok(DockerBackend {
            docker,
            socket,
            agent: config.name.clone(),
            prefix: config.container_prefix.clone(),
            keepalive_cmd: config.keepalive_cmd.clone(),
            locks: KeyedLock::default(),
            helper,
            sftp,
            routes: Routes::default(),
            pipes: Pipes::configured(config),
            known,
            _events: tokio_util::task::AbortOnDropHandle::new(events),
            guard: OnceLock::new(),
            guarded: Mutex::default(),
            gpus: crate::gpus::node_gpus(config),
            gpu_lock: tokio::sync::Mutex::new(()),
            networks: Mutex::default(),
            image_etc: etc_files::ImageEtc::default(),
            host_ids: tokio::sync::OnceCell::new(),
        })
    }

    /// How processes start in `container` (an id or name).
    pub async fn spawn_path(&self, container: &str) -> Result<SpawnPath, BackendError> {
        Ok(self.route(container).await?.path)
    }

    /// [`Backend::spawn`] through the given path, for comparing the two (the benchmark)
    /// and the tests. Never used for students: Docker exec in a helper container would
    /// hand out the capabilities only its labssh-init may hold. Asking for the helper of
    /// a container without one fails.
    pub async fn spawn_via(
        &self,
        container: &str,
        spec: SpawnSpec,
        path: SpawnPath,
    ) -> Result<Process, BackendError> {
        match path {
            SpawnPath::Exec => exec::spawn(&self.docker, &self.socket, container, spec).await,
            SpawnPath::Helper => {
                let route = self.route(container).await?;
                let socket = route.helper.ok_or_else(|| {
                    BackendError::SpawnFailed(format!("container {container} has no helper"))
                })?;
                socket
                    .spawn(&spec, route.ready_by, self.pipes)
                    .await
                    .map_err(|e| BackendError::SpawnFailed(e.to_string()))
            }
        }
    }

    /// The known route of a container, else the one Docker's description gives.
    async fn route(&self, container: &str) -> Result<Route, BackendError> {
        if let Some(route) = self.routes.get(container) {
            return Ok(route);
        }
        let inspect = self.inspect(container).await?;
        let route = helper_container::route_of(&inspect, Instant::now(), None);
        self.routes.set(container, route.clone());
        Ok(route)
    }

    /// Docker's description of a container (id or name): as known, else asked.
    async fn inspect(
        &self,
        container: &str,
    ) -> Result<Arc<ContainerInspectResponse>, BackendError> {
        self.look_up(container).await.map_err(lookup_failed)
    }

    /// [`DockerBackend::inspect`] with Docker's own error (its status tells a
    /// container that does not exist).
    async fn look_up(&self, container: &str) -> Result<Arc<ContainerInspectResponse>, DockerError> {
        match self.known_container(container) {
            Some(known) => Ok(known),
            None => self.ask(container).await,
        }
    }

    /// What is known of a container, if it may be believed ([`known::believable`]: it
    /// runs, its first process still there); else it is forgotten, the container having
    /// perhaps been stopped or removed from outside before Docker's event came.
    fn known_container(&self, container: &str) -> Option<Arc<ContainerInspectResponse>> {
        let known = self.known.container(container)?;
        if known::believable(&known) {
            return Some(known);
        }
        tracing::debug!(container, "its first process is gone: asking Docker");
        self.known.forget(container);
        None
    }

    /// Docker's description of a container (id or name), asked of Docker and kept.
    async fn inspect_fresh(
        &self,
        container: &str,
    ) -> Result<Arc<ContainerInspectResponse>, BackendError> {
        self.ask(container).await.map_err(lookup_failed)
    }

    /// Docker's answer to an inspect, kept unless something changed the container
    /// meanwhile.
    async fn ask(&self, container: &str) -> Result<Arc<ContainerInspectResponse>, DockerError> {
        let ticket = self.known.ticket();
        let inspect = Arc::new(self.docker.inspect_container(container, None).await?);
        self.known.store(ticket, &inspect);
        Ok(inspect)
    }

    /// Whether the agent knows `container` (an id or name) without asking Docker: it
    /// does from its own inspects until Docker's events say the container changed, and
    /// never while the events stream is down. For the tests.
    pub fn knows(&self, container: &str) -> bool {
        self.known.container(container).is_some()
    }

    /// A running container entered from the agent itself (its network namespace and
    /// root, through its first process): for containers without a helper, and for
    /// looking at any container's files. The error is student-readable.
    async fn enter(&self, container: &str) -> Result<netns::Container, String> {
        let inspect = self
            .look_up(container)
            .await
            .map_err(|e| format!("cannot look the container up: {}", docker_message(&e)))?;
        let pid = inspect
            .state
            .as_ref()
            .filter(|s| s.running == Some(true))
            .and_then(|s| s.pid)
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|&pid| pid > 0)
            .ok_or("the container is not running")?;
        netns::Container::open(pid, inspect.id.as_deref().unwrap_or_default())
    }

    /// The bollard client, for callers that need more than the trait offers.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }
}

/// The address of Docker's embedded DNS server inside containers on user-defined
/// networks.
const DOCKER_DNS: [u8; 4] = [127, 0, 0, 11];

/// A failed inspect, as the agent reports it.
pub(super) fn lookup_failed(e: DockerError) -> BackendError {
    BackendError::Runtime {
        action: "looking up the container",
        message: docker_message(&e),
    }
}

#[async_trait]
impl Backend for DockerBackend {
    async fn ensure_with(
        &self,
        user: &str,
        env: &pb::Environment,
        options: &EnsureOptions,
    ) -> Result<Ensured, BackendError> {
        self.ensure_container(user, env, options).await
    }

    async fn pause(&self, container: &str) -> Result<(), BackendError> {
        self.pause_container(container).await
    }

    async fn unpause(&self, container: &str) -> Result<(), BackendError> {
        self.unpause_container(container).await
    }

    async fn stop(&self, container: &str) -> Result<(), BackendError> {
        self.stop_container(container).await
    }

    async fn remove(&self, container: &str) -> Result<(), BackendError> {
        self.remove_named(container).await
    }

    async fn remove_home(&self, user: &str) -> Result<(), BackendError> {
        self.remove_home_volume(user).await
    }

    async fn cpu_time(&self, container: &str) -> Result<Option<std::time::Duration>, BackendError> {
        self.container_cpu_time(container).await
    }

    async fn keepalive(
        &self,
        container: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<Option<KeepaliveFile>, BackendError> {
        self.read_keepalive(container, user, env).await
    }

    async fn spawn(&self, container: &str, spec: SpawnSpec) -> Result<Process, BackendError> {
        if spec.argv.is_empty() {
            return Err(BackendError::SpawnFailed("empty command".to_owned()));
        }
        let process = self.inside(container, Spawn(spec, self.pipes)).await?;
        tracing::info!(container, spawn = process.path.name(), "process started");
        Ok(process)
    }

    async fn reattach(
        &self,
        container: &str,
        id: &str,
        output_offset: u64,
    ) -> Result<(Process, labssh_helper_proto::wire::Attached), BackendError> {
        // No restoring here: a restored helper holds no sessions.
        let route = self.route(container).await?;
        let socket = route.helper.ok_or_else(|| {
            BackendError::SpawnFailed(
                "this container was made for docker exec, whose sessions end with the agent"
                    .to_owned(),
            )
        })?;
        let (process, attached) = socket
            .reattach(id, output_offset, route.ready_by)
            .await
            .map_err(|e| BackendError::SpawnFailed(e.to_string()))?;
        tracing::info!(
            container,
            pid = attached.pid,
            lost = attached.lost,
            "session re-attached"
        );
        Ok((process, attached))
    }

    async fn connect_tcp(
        &self,
        container: &str,
        host: &str,
        port: u16,
    ) -> Result<Box<dyn Duplex>, BackendError> {
        let stream = self.inside(container, Connect { host, port }).await?;
        Ok(Box::new(stream))
    }

    async fn resolve(
        &self,
        container: &str,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, BackendError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        self.inside(container, Lookup { host, port }).await
    }

    async fn listeners(&self, container: &str) -> Result<Vec<SocketAddr>, BackendError> {
        let route = self.route(container).await?;
        let helper = route.helper.filter(|_| route.path == SpawnPath::Helper);
        let mut found = super::read_listeners(helper, self.enter(container)).await?;
        // Docker's embedded DNS server on a user-defined network listens (TCP, a random
        // port) on 127.0.0.11 in every container: the engine's, not a service.
        found.retain(|a| a.ip() != IpAddr::from(DOCKER_DNS));
        Ok(found)
    }

    async fn container_addresses(&self, container: &str) -> Result<Vec<IpAddr>, BackendError> {
        let inspect = self.inspect(container).await?;
        let networks = inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref());
        Ok(netns::usable_addresses(
            networks
                .into_iter()
                .flat_map(|m| m.values())
                .flat_map(|net| {
                    [&net.ip_address, &net.global_ipv6_address]
                        .into_iter()
                        .flatten()
                        .map(String::as_str)
                }),
        ))
    }

    async fn listen_tcp(
        &self,
        container: &str,
        addr: SocketAddr,
    ) -> Result<tokio::net::TcpListener, BackendError> {
        self.inside(container, Listen(addr)).await
    }

    async fn connect_unix(
        &self,
        container: &str,
        path: &str,
        run_as: RunAs,
    ) -> Result<Box<dyn Duplex>, BackendError> {
        let stream = self.inside(container, ConnectUnix { path, run_as }).await?;
        Ok(Box::new(stream))
    }

    async fn listen_unix(
        &self,
        container: &str,
        path: &str,
        run_as: RunAs,
    ) -> Result<SocketListener, BackendError> {
        self.inside(container, ListenUnix { path, run_as }).await
    }

    async fn find_executable(
        &self,
        container: &str,
        candidates: &[&str],
    ) -> Result<Option<String>, BackendError> {
        // The agent looks itself on both paths: through /proc, with symlinks resolved
        // inside the container's root.
        let inside = self
            .enter(container)
            .await
            .map_err(|message| BackendError::Runtime {
                action: "looking for a program in the container",
                message,
            })?;
        let candidates = candidates.iter().map(|c| (*c).to_owned()).collect();
        Ok(inside.find_executable(candidates).await)
    }

    async fn inventory(&self) -> Result<Vec<ContainerInfo>, BackendError> {
        self.list().await
    }

    async fn recorded_ids(&self, container: &str) -> Result<Option<(u32, u32)>, BackendError> {
        self.ids_of(container).await
    }

    async fn disk_usage(
        &self,
        user: &str,
        env: &pb::Environment,
    ) -> Result<DiskUsage, BackendError> {
        self.measure_disk(user, env).await
    }

    async fn started_at(&self, container: &str) -> Result<Option<SystemTime>, BackendError> {
        let inspect = self.inspect(container).await?;
        let running = inspect
            .state
            .as_ref()
            .filter(|s| s.running == Some(true) && s.paused != Some(true));
        Ok(running
            .and_then(|s| s.started_at.as_deref())
            .and_then(|at| humantime::parse_rfc3339(at).ok()))
    }

    async fn guard_networks(&self, guard: Arc<dyn NetworkGuard>) {
        if self.guard.set(guard).is_ok() {
            self.guard_existing().await;
        }
    }
}
