//! Work inside a running pod: through its labssh-init (reached through the pod
//! container's init process, as for Docker), else `pods/exec` for processes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;

use super::exec::PodExec;
use crate::backend::{BackendError, Duplex, Process, SpawnSpec};

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
}

/// Reaches inside pods.
pub struct Inside {
    exec: Arc<dyn PodExec>,
}

impl Inside {
    /// Through helpers, with `exec` as the fallback for processes.
    pub fn new(exec: Arc<dyn PodExec>) -> Inside {
        Inside { exec }
    }

    /// Starts a process in the pod's student container.
    pub async fn spawn(&self, pod: &PodRef, spec: SpawnSpec) -> Result<Process, BackendError> {
        let _ = (pod, spec, &self.exec);
        todo!("inside helper")
    }

    /// A TCP connection to `host:port` from inside the pod.
    pub async fn connect_tcp(
        &self,
        pod: &PodRef,
        host: &str,
        port: u16,
    ) -> Result<Box<dyn Duplex>, BackendError> {
        let _ = (pod, host, port);
        todo!("inside helper")
    }

    /// `host` resolved as the pod does.
    pub async fn resolve(
        &self,
        pod: &PodRef,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, BackendError> {
        let _ = (pod, host, port);
        todo!("inside helper")
    }

    /// A listener on `addr` in the pod's network namespace.
    pub async fn listen_tcp(
        &self,
        pod: &PodRef,
        addr: SocketAddr,
    ) -> Result<TcpListener, BackendError> {
        let _ = (pod, addr);
        todo!("inside helper")
    }

    /// The first of `candidates` that is an executable file in the pod.
    pub async fn find_executable(
        &self,
        pod: &PodRef,
        candidates: &[&str],
    ) -> Result<Option<String>, BackendError> {
        let _ = (pod, candidates);
        todo!("inside helper")
    }

    /// Forgets what is cached of pod `name` (it was deleted or recreated).
    pub fn forget(&self, name: &str) {
        let _ = name;
    }
}
