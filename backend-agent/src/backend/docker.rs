//! Docker implementation of [`Backend`], through bollard.

mod archive;
mod container_spec;
mod disk;
mod exec;
mod helper_container;
mod hijack;
mod passwd;
mod restore;
mod routes;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::ImageInspect;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummaryStateEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::{body_full, Docker, API_DEFAULT_VERSION};
use labssh_proto::pb;
use std::net::{IpAddr, SocketAddr};
use tokio::time::Instant;

pub use container_spec::{
    container_name, legacy_container_name, LABEL_AGENT, LABEL_ENV, LABEL_GENERATION, LABEL_PREFIX,
    LABEL_SPAWN, LABEL_USER, RUN_DIR, SFTP_SERVER_PATH,
};
pub use routes::SpawnPath;

use super::init_binary::{self, HelperSetup};
use super::netns;
use super::{
    Backend, BackendError, ContainerInfo, ContainerState, Duplex, Ensured, KeyedLock, Process,
    SpawnSpec,
};
use crate::config::Config;
use crate::names;
use container_spec::{volume_labels, volume_name, ContainerPlan, HelperPlan};
use restore::{Answer, Ask};
use routes::{Owner, Route, Routes};

/// bollard's request timeout; container creation on a busy node can take a while.
const DOCKER_TIMEOUT_SECS: u64 = 120;
/// Where home directories live; see [`crate::backend::home_dir`].
const HOME_PARENT: &str = "/home";
/// Homes are private: other students never share a container, but operators' tools might.
const HOME_MODE: u32 = 0o700;

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
                    .spawn(&spec, route.ready_by)
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

    /// Docker's description of a container (id or name).
    async fn inspect(&self, container: &str) -> Result<ContainerInspectResponse, BackendError> {
        self.docker
            .inspect_container(container, None)
            .await
            .map_err(|e| BackendError::Runtime {
                action: "looking up the container",
                message: docker_message(&e),
            })
    }

    /// A running container entered from the agent itself (its network namespace and
    /// root, through its first process): for containers without a helper, and for
    /// looking at any container's files. The error is student-readable.
    async fn enter(&self, container: &str) -> Result<netns::Container, String> {
        let inspect = self
            .docker
            .inspect_container(container, None)
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

    async fn create(
        &self,
        name: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<Ensured, BackendError> {
        let image = match self.docker.inspect_image(&env.image).await {
            Ok(image) => image,
            Err(e) if status_of(&e) == Some(404) => return Err(self.image_missing(env)),
            Err(e) => {
                return Err(BackendError::Runtime {
                    action: "looking up the image",
                    message: docker_message(&e),
                })
            }
        };
        // Creating an existing volume returns it unchanged.
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(volume_name(&self.prefix, user)),
                labels: Some(volume_labels(&self.agent, &self.prefix, user)),
                ..Default::default()
            })
            .await
            .map_err(|e| BackendError::CreateFailed(docker_message(&e)))?;
        let helper = match (&self.helper, env.spawn == SpawnPath::Exec.name()) {
            (Some(setup), false) => Some(helper_plan(setup, &image)),
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
        }
        .create_body();
        let body = self.with_layer_quota(body, env).await;
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let created = match self.docker.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(e) if status_of(&e) == Some(404) => return Err(self.image_missing(env)),
            Err(e) => return Err(BackendError::CreateFailed(docker_message(&e))),
        };
        tracing::info!(container = name, image = %env.image, spawn = path.name(), "created container");
        if !env.run_as_root {
            self.fix_home(&created.id, user, env).await;
            let home = super::home_dir(user);
            passwd::ensure_entries(
                &self.docker,
                &created.id,
                user,
                (env.uid, env.gid),
                &home,
                super::shell(env),
            )
            .await;
        }
        let owner = Owner {
            user: user.to_owned(),
            env: std::sync::Arc::new(env.clone()),
        };
        let started = match self.docker.start_container(&created.id, None).await {
            Ok(()) => self.after_start(&created.id, Some(owner)).await,
            Err(e) => Err(BackendError::StartFailed(docker_message(&e))),
        };
        if let Err(e) = started {
            // A container that never ran is removed, so the next login recreates it from
            // the catalogue as it is then instead of failing the same way forever.
            if let Err(rm) = self.remove(&created.id).await {
                tracing::warn!(container = name, error = %rm, "cannot remove container that failed to start");
            }
            return Err(e);
        }
        Ok(Ensured {
            container_id: created.id,
            name: name.to_owned(),
            created: true,
            started: true,
        })
    }

    /// Removes a container (its home volume stays) and forgets its route.
    async fn remove(&self, id: &str) -> Result<(), BackendError> {
        let force = RemoveContainerOptionsBuilder::new().force(true).build();
        self.routes.remove(id);
        self.docker
            .remove_container(id, Some(force))
            .await
            .map_err(|e| BackendError::Runtime {
                action: "removing the container",
                message: docker_message(&e),
            })
    }

    /// Makes the home volume the student's: owned by uid:gid, mode 0700, even when the
    /// image's /etc/passwd has no such user.
    async fn fix_home(&self, container: &str, user: &str, env: &pb::Environment) {
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

    /// Records how processes start in a container Docker just started, and waits for its
    /// helper; fails if the container stopped at once (its command could not start).
    async fn after_start(&self, id: &str, owner: Option<Owner>) -> Result<Route, BackendError> {
        let inspect = self.inspect(id).await?;
        let mut route = helper_container::route_of(&inspect, Instant::now(), owner);
        if route.path == SpawnPath::Helper {
            match &route.helper {
                Some(socket) => {
                    helper_container::wait_ready(&self.docker, id, socket)
                        .await
                        .map_err(BackendError::StartFailed)?;
                }
                None => {
                    return Err(BackendError::StartFailed(
                        helper_container::stopped(&self.docker, id)
                            .await
                            .unwrap_or_else(|| "its labssh-init cannot be reached".to_owned()),
                    ))
                }
            }
        }
        // Ready (or given up on): from now on a missing socket means a helper to restore.
        route.ready_by = Instant::now();
        self.routes.set(id, route.clone());
        Ok(route)
    }

    /// The container of `user` and `env`: by its name, else by the name containers had
    /// before; `None` if there is neither. A container by the old name that belongs to
    /// someone else (the old names could collide) is not theirs.
    async fn find(
        &self,
        name: &str,
        user: &str,
        env: &pb::Environment,
    ) -> Result<Option<ContainerInspectResponse>, BackendError> {
        let legacy = legacy_container_name(&self.prefix, user, &env.name);
        for candidate in [name, legacy.as_str()] {
            let existing = match self.docker.inspect_container(candidate, None).await {
                Ok(existing) => existing,
                Err(e) if status_of(&e) == Some(404) => continue,
                Err(e) => {
                    return Err(BackendError::Runtime {
                        action: "looking up the container",
                        message: docker_message(&e),
                    })
                }
            };
            let labels = existing.config.as_ref().and_then(|c| c.labels.as_ref());
            let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
            if label(LABEL_USER) == Some(user) && label(LABEL_ENV) == Some(env.name.as_str()) {
                return Ok(Some(existing));
            }
            if candidate == name {
                return Err(BackendError::NameTaken(name.to_owned()));
            }
        }
        Ok(None)
    }

    fn image_missing(&self, env: &pb::Environment) -> BackendError {
        BackendError::ImageNotAvailable {
            image: env.image.clone(),
            agent: self.agent.clone(),
        }
    }
}

#[async_trait]
impl Backend for DockerBackend {
    async fn ensure(&self, user: &str, env: &pb::Environment) -> Result<Ensured, BackendError> {
        if !names::is_valid_user(user) {
            return Err(BackendError::InvalidName {
                what: "user",
                name: user.to_owned(),
            });
        }
        if !names::is_valid_env(&env.name) {
            return Err(BackendError::InvalidName {
                what: "environment",
                name: env.name.clone(),
            });
        }
        let name = container_name(&self.prefix, user, &env.name);
        let _guard = self.locks.lock(&name).await;
        let Some(existing) = self.find(&name, user, env).await? else {
            return self.create(&name, user, env).await;
        };
        let id = existing.id.clone().unwrap_or_else(|| name.clone());
        if helper_container::is_outdated(&existing) {
            tracing::warn!(container = %id, "recreating a container of an older layout (its helper's socket directory was writable from inside); the home volume is kept");
            self.remove(&id).await?;
            return self.create(&name, user, env).await;
        }
        let found_name = existing
            .name
            .as_deref()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_else(|| name.clone());
        let owner = Owner {
            user: user.to_owned(),
            env: std::sync::Arc::new(env.clone()),
        };
        let state = existing.state.as_ref();
        let running = state.and_then(|s| s.running) == Some(true);
        let paused = state.and_then(|s| s.paused) == Some(true);
        let started = if running {
            if paused {
                self.docker
                    .unpause_container(&id)
                    .await
                    .map_err(|e| BackendError::StartFailed(docker_message(&e)))?;
            }
            self.refresh_route(&id, &existing, owner);
            paused
        } else {
            let status = state.and_then(|s| s.status);
            if status == Some(ContainerStateStatusEnum::REMOVING) {
                return Err(BackendError::StartFailed(
                    "the container is being removed; try again".to_owned(),
                ));
            }
            self.docker
                .start_container(&id, None)
                .await
                .map_err(|e| BackendError::StartFailed(docker_message(&e)))?;
            tracing::info!(container = %found_name, "started container");
            self.after_start(&id, Some(owner)).await?;
            true
        };
        Ok(Ensured {
            container_id: id,
            name: found_name,
            created: false,
            started,
        })
    }

    async fn spawn(&self, container: &str, spec: SpawnSpec) -> Result<Process, BackendError> {
        if spec.argv.is_empty() {
            return Err(BackendError::SpawnFailed("empty command".to_owned()));
        }
        let spawned = self.via_helper(container, Ask::Spawn(&spec)).await;
        let path = match spawned {
            Ok(Some(Answer::Process(process))) => {
                labssh_telemetry::metrics::note_spawn_path(SpawnPath::Helper.name());
                tracing::info!(container, spawn = "helper", "process started");
                return Ok(process);
            }
            Err(e) => return Err(BackendError::SpawnFailed(e.to_string())),
            Ok(Some(_)) => return Err(mismatched()),
            Ok(None) => SpawnPath::Exec,
        };
        let process = exec::spawn(&self.docker, &self.socket, container, spec).await?;
        labssh_telemetry::metrics::note_spawn_path(path.name());
        tracing::info!(container, spawn = "exec", "process started");
        Ok(process)
    }

    async fn connect_tcp(
        &self,
        container: &str,
        host: &str,
        port: u16,
    ) -> Result<Box<dyn Duplex>, BackendError> {
        let target = format!("{host}:{port}");
        let failed = |message: String| BackendError::ConnectFailed {
            target: target.clone(),
            message,
        };
        let connected = self
            .via_helper(container, Ask::Connect(host, port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        if let Some(answer) = connected {
            let Answer::Stream(stream) = answer else {
                return Err(mismatched());
            };
            tracing::debug!(container, target = %target, "TCP connection opened through the helper");
            return Ok(Box::new(stream));
        }
        let inside = self.enter(container).await.map_err(failed)?;
        let addrs = inside.resolve(host, port).await.map_err(failed)?;
        let stream = inside.connect(&addrs, &target).await.map_err(failed)?;
        tracing::debug!(container, target = %target, "TCP connection opened from the agent");
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
        let failed = |message: String| BackendError::ConnectFailed {
            target: format!("{host}:{port}"),
            message,
        };
        let found = self
            .via_helper(container, Ask::Lookup(host, port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        match found {
            Some(Answer::Addresses(addrs)) => return Ok(addrs),
            Some(_) => return Err(mismatched()),
            None => {}
        }
        let inside = self.enter(container).await.map_err(failed)?;
        inside.resolve(host, port).await.map_err(failed)
    }

    async fn container_addresses(&self, container: &str) -> Result<Vec<IpAddr>, BackendError> {
        let inspect = self.inspect(container).await?;
        let networks = inspect
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        Ok(netns::usable_addresses(networks.values().flat_map(|net| {
            [&net.ip_address, &net.global_ipv6_address]
                .into_iter()
                .flatten()
                .map(String::as_str)
        })))
    }

    async fn listen_tcp(
        &self,
        container: &str,
        addr: SocketAddr,
    ) -> Result<tokio::net::TcpListener, BackendError> {
        let failed = |message: String| BackendError::ListenFailed {
            address: addr.to_string(),
            message,
        };
        let listening = self
            .via_helper(container, Ask::Listen(addr))
            .await
            .map_err(|e| failed(e.to_string()))?;
        match listening {
            Some(Answer::Listener(listener)) => return Ok(listener),
            Some(_) => return Err(mismatched()),
            None => {}
        }
        let inside = self.enter(container).await.map_err(failed)?;
        inside.listen(addr).await.map_err(failed)
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
        // Both labels: agents of two deployments on one Docker engine (or two test
        // labs on one machine) may share a name, but not a prefix.
        let filters = [(
            "label".to_owned(),
            vec![
                format!("{LABEL_AGENT}={}", self.agent),
                format!("{LABEL_PREFIX}={}", self.prefix),
            ],
        )]
        .into_iter()
        .collect();
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| BackendError::Runtime {
                action: "listing containers",
                message: docker_message(&e),
            })?;
        let ids = list.iter().filter_map(|c| c.id.clone()).collect();
        self.routes.retain(&ids);
        if let Some(setup) = &self.helper {
            let names = list
                .iter()
                .flat_map(|c| c.names.iter().flatten())
                .map(|n| n.trim_start_matches('/').to_owned())
                .collect();
            helper_container::prune_dirs(&self.docker, &setup.dir, &self.prefix, &names).await;
        }
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels?;
                let state = match c.state {
                    Some(ContainerSummaryStateEnum::RUNNING)
                    | Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Running,
                    Some(ContainerSummaryStateEnum::REMOVING) => return None,
                    _ => ContainerState::Stopped,
                };
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default();
                Some(ContainerInfo {
                    name,
                    user: labels.get(LABEL_USER)?.clone(),
                    environment: labels.get(LABEL_ENV)?.clone(),
                    state,
                })
            })
            .collect())
    }

    async fn disk_usage(
        &self,
        user: &str,
        env: &pb::Environment,
    ) -> Result<super::DiskUsage, BackendError> {
        self.measure_disk(user, env).await
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

/// The helper answered a different kind of request than was asked: never happens, as
/// [`Ask`] and [`Answer`] pair up one to one.
fn mismatched() -> BackendError {
    BackendError::Runtime {
        action: "asking the helper",
        message: "its answer does not fit the request".to_owned(),
    }
}

/// Docker's own message for an error response, else bollard's description.
fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        other => other.to_string(),
    }
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}
