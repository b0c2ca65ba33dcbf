//! Work inside a running pod. A pod made for labssh-init (`labssh.spawn: helper`)
//! is served only by its helper, reached exactly as on Docker: through the student
//! container's init process (found on this node by its container id, the agent
//! being in the host's PID namespace), its socket checked to be that process's. Such
//! a pod never falls back to `pods/exec`: its container runs as root with the
//! helper's capabilities under `baseline`, which an exec'd process would get. A pod
//! made for `pods/exec` (`labssh.spawn: exec`, or no `init_image`) runs processes
//! through [`PodExec`], and the agent enters its network namespace for connections,
//! names and listeners.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;

use super::exec::PodExec;
use super::locate;
use super::objects::CONTAINER;
use crate::backend::helper::{HelperError, HelperSocket, Pipes, SocketListener};
use crate::backend::netns;
use crate::backend::{BackendError, Duplex, Process, RunAs, SpawnSpec};
use labssh_helper_proto::wire;

/// How long work waits for a helper that may still be binding its socket (a pod
/// whose student container just (re)started).
const HELPER_GRACE: Duration = Duration::from_secs(10);

/// A running pod as the reflector last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// The student container's id from the pod's status (`containerd://…`).
    pub container_id: String,
    /// The pod's IP, once it has one.
    pub ip: Option<IpAddr>,
    /// Made for labssh-init (`labssh.spawn: helper`).
    pub helper: bool,
}

/// Reaches inside pods.
pub struct Inside {
    /// Processes in pods made for `pods/exec`.
    exec: Arc<dyn PodExec>,
    /// Helpers found, by pod name: the container id they were found for, and the
    /// socket.
    helpers: Mutex<HashMap<String, (String, HelperSocket)>>,
    /// Whether helpers hand the pipes of processes without a terminal to the agent.
    pipes: Pipes,
}

impl Inside {
    /// Through helpers, with `exec` for pods made without one.
    pub fn new(exec: Arc<dyn PodExec>, pipes: Pipes) -> Inside {
        Inside {
            exec,
            pipes,
            helpers: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a process in the pod's student container.
    pub async fn spawn(&self, pod: &PodRef, spec: SpawnSpec) -> Result<Process, BackendError> {
        if !pod.helper {
            return self
                .exec
                .exec(&pod.namespace, &pod.name, CONTAINER, spec)
                .await;
        }
        let pipes = self.pipes;
        self.through_helper(pod, |socket, ready_by| {
            let spec = spec.clone();
            async move { socket.spawn(&spec, ready_by, pipes).await }
        })
        .await
        .map_err(BackendError::SpawnFailed)
    }

    /// Takes over the kept session `id` of the pod's helper.
    pub async fn reattach(
        &self,
        pod: &PodRef,
        id: &str,
        output_offset: u64,
    ) -> Result<(Process, wire::Attached), BackendError> {
        if !pod.helper {
            return Err(BackendError::SpawnFailed(
                "this pod runs without labssh-init, whose sessions end with the agent".to_owned(),
            ));
        }
        self.through_helper(pod, |socket, ready_by| async move {
            socket.reattach(id, output_offset, ready_by).await
        })
        .await
        .map_err(BackendError::SpawnFailed)
    }

    /// A TCP connection to `host:port` from inside the pod.
    pub async fn connect_tcp(
        &self,
        pod: &PodRef,
        host: &str,
        port: u16,
    ) -> Result<Box<dyn Duplex>, BackendError> {
        let target = format!("{host}:{port}");
        let failed = |message: String| BackendError::ConnectFailed {
            target: target.clone(),
            message,
        };
        if pod.helper {
            let stream = self
                .through_helper(pod, |socket, ready_by| async move {
                    socket.connect_tcp(host, port, ready_by).await
                })
                .await
                .map_err(failed)?;
            return Ok(Box::new(stream));
        }
        let inside = enter(pod).map_err(failed)?;
        let addrs = inside.resolve(host, port).await.map_err(failed)?;
        let stream = inside.connect(&addrs, &target).await.map_err(failed)?;
        Ok(Box::new(stream))
    }

    /// `host` resolved as the pod does.
    pub async fn resolve(
        &self,
        pod: &PodRef,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, BackendError> {
        let failed = |message: String| BackendError::ConnectFailed {
            target: format!("{host}:{port}"),
            message,
        };
        if pod.helper {
            return self
                .through_helper(pod, |socket, ready_by| async move {
                    socket.lookup(host, port, ready_by).await
                })
                .await
                .map_err(failed);
        }
        enter(pod)
            .map_err(failed)?
            .resolve(host, port)
            .await
            .map_err(failed)
    }

    /// The TCP sockets listening in the pod's student container.
    pub async fn listeners(&self, pod: &PodRef) -> Result<Vec<SocketAddr>, BackendError> {
        let helper = if pod.helper {
            self.helper(pod).ok()
        } else {
            None
        };
        crate::backend::read_listeners(helper, async { enter(pod) }).await
    }

    /// A listener on `addr` in the pod's network namespace.
    pub async fn listen_tcp(
        &self,
        pod: &PodRef,
        addr: SocketAddr,
    ) -> Result<TcpListener, BackendError> {
        let failed = |message: String| BackendError::ListenFailed {
            address: addr.to_string(),
            message,
        };
        if pod.helper {
            return self
                .through_helper(pod, |socket, ready_by| async move {
                    socket.listen_tcp(addr, ready_by).await
                })
                .await
                .map_err(failed);
        }
        enter(pod)
            .map_err(failed)?
            .listen(addr)
            .await
            .map_err(failed)
    }

    /// A connection to the unix socket at `path` in the pod, made by its helper as
    /// `run_as`. A pod without the helper cannot: see the Docker backend's reason.
    pub async fn connect_unix(
        &self,
        pod: &PodRef,
        path: &str,
        run_as: RunAs,
    ) -> Result<Box<dyn Duplex>, BackendError> {
        let failed = |message: String| BackendError::ConnectFailed {
            target: path.to_owned(),
            message,
        };
        if !pod.helper {
            return Err(failed(NO_HELPER_FOR_SOCKETS.to_owned()));
        }
        let stream = self
            .through_helper(pod, |socket, ready_by| async move {
                socket.connect_unix(path, run_as, ready_by).await
            })
            .await
            .map_err(failed)?;
        Ok(Box::new(stream))
    }

    /// A unix socket listening at `path` in the pod, made by its helper as `run_as`.
    pub async fn listen_unix(
        &self,
        pod: &PodRef,
        path: &str,
        run_as: RunAs,
    ) -> Result<SocketListener, BackendError> {
        let failed = |message: String| BackendError::ListenFailed {
            address: path.to_owned(),
            message,
        };
        if !pod.helper {
            return Err(failed(NO_HELPER_FOR_SOCKETS.to_owned()));
        }
        self.through_helper(pod, |socket, ready_by| async move {
            socket.listen_unix(path, run_as, ready_by).await
        })
        .await
        .map_err(failed)
    }

    /// The first of `candidates` that is an executable file in the pod, looked up
    /// through its init's root (symlinks resolved inside it).
    pub async fn find_executable(
        &self,
        pod: &PodRef,
        candidates: &[&str],
    ) -> Result<Option<String>, BackendError> {
        let inside = enter(pod).map_err(|message| BackendError::Runtime {
            action: "looking for a program in the pod",
            message,
        })?;
        Ok(inside
            .find_executable(candidates.iter().map(|c| (*c).to_owned()).collect())
            .await)
    }

    /// Forgets what is cached of pod `name` (it was deleted or recreated).
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The helpers cache.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, HelperSocket)>> {
        self.helpers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pod's helper: cached for its container id, else found anew.
    fn helper(&self, pod: &PodRef) -> Result<HelperSocket, String> {
        if let Some((id, socket)) = self.lock().get(&pod.name) {
            if *id == pod.container_id {
                return Ok(socket.clone());
            }
        }
        let socket = helper_of(pod)?;
        self.lock()
            .insert(pod.name.clone(), (pod.container_id.clone(), socket.clone()));
        Ok(socket)
    }

    /// Does `work` through the pod's helper; when what answers is not the helper or
    /// nothing answers, finds the helper again once (the container may have
    /// restarted under the same id) and retries. Errors are student-readable.
    async fn through_helper<'a, T, F, Fut>(&self, pod: &PodRef, work: F) -> Result<T, String>
    where
        F: Fn(HelperSocket, Instant) -> Fut,
        Fut: std::future::Future<Output = Result<T, HelperError>> + 'a,
    {
        let socket = self.helper(pod)?;
        match work(socket, Instant::now() + HELPER_GRACE).await {
            Err(HelperError::Tampered(why)) | Err(HelperError::Unavailable(why)) => {
                tracing::warn!(pod = %pod.name, reason = %why, "the pod's helper does not answer as itself; finding it again");
                self.forget(&pod.name);
            }
            done => return done.map_err(|e| e.to_string()),
        }
        let socket = self.helper(pod)?;
        work(socket, Instant::now() + HELPER_GRACE)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Why a pod without labssh-init cannot do unix sockets: only the helper acts as the
/// student inside the pod's mount namespace without a process per connection.
const NO_HELPER_FOR_SOCKETS: &str =
    "unix-socket forwarding needs labssh-init in the pod, and this one runs without it";

/// The helper of `pod`'s student container, through its init process.
fn helper_of(pod: &PodRef) -> Result<HelperSocket, String> {
    let pid = locate::init_pid(&pod.container_id)?;
    HelperSocket::of_init(pid, locate::bare_id(&pod.container_id))
}

/// The student container of `pod` as the host sees it (network namespace and root).
pub(super) fn enter(pod: &PodRef) -> Result<netns::Container, String> {
    if pod.container_id.is_empty() {
        return Err(format!("pod {} has no running container yet", pod.name));
    }
    let pid = locate::init_pid(&pod.container_id)?;
    netns::Container::open(pid, locate::bare_id(&pod.container_id))
}
