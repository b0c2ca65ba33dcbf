//! The Pod, PersistentVolumeClaim and NetworkPolicy made for a student's environment.
//! Pure functions of the plan: the API side (`api.rs`) only sends them.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use labssh_proto::pb;

use crate::backend::{BackendError, ContainerInfo};
use crate::config::KubernetesConfig;

/// The name of the student's container in the pod.
pub const CONTAINER: &str = "student";

/// Everything a student's pod is made from.
#[derive(Debug, Clone)]
pub struct PodPlan<'a> {
    /// This agent's name (label `labssh.agent`).
    pub agent: &'a str,
    /// Object name prefix (label `labssh.prefix`), the agent's `container_prefix`.
    pub prefix: &'a str,
    /// The node the pod is pinned to.
    pub node: &'a str,
    /// `[kubernetes]`.
    pub config: &'a KubernetesConfig,
    /// The student.
    pub user: &'a str,
    /// Their environment.
    pub env: &'a pb::Environment,
    /// The uid and gid the login's identity gives, for an environment that takes them.
    pub ids: Option<(u32, u32)>,
    /// `settings_hash` of the environment now (label `labssh.settings`).
    pub settings: &'a str,
    /// The container command when the environment gives none.
    pub keepalive_cmd: &'a [String],
}

/// The pod's name for `user`'s `env`: a DNS-1123 subdomain, unique per (prefix, user,
/// env).
pub fn pod_name(prefix: &str, user: &str, env: &str) -> String {
    let _ = (prefix, user, env);
    todo!("objects helper")
}

/// The home claim's name for `user` (shared by all their environments).
pub fn claim_name(prefix: &str, user: &str) -> String {
    let _ = (prefix, user);
    todo!("objects helper")
}

/// The label selector matching this agent's pods (and nothing of another agent or
/// prefix).
pub fn selector(agent: &str, prefix: &str) -> String {
    let _ = (agent, prefix);
    todo!("objects helper")
}

/// The student's pod. Errors: what the environment asks cannot be had on Kubernetes
/// (e.g. a root environment under `pod_security = "restricted"`).
pub fn pod(plan: &PodPlan) -> Result<Pod, BackendError> {
    let _ = plan;
    todo!("objects helper")
}

/// The student's home claim.
pub fn home_claim(plan: &PodPlan) -> PersistentVolumeClaim {
    let _ = plan;
    todo!("objects helper")
}

/// The pod's own NetworkPolicy.
pub fn network_policy(plan: &PodPlan) -> NetworkPolicy {
    let _ = plan;
    todo!("objects helper")
}

/// What the inventory says of a pod of this agent's; `None` for a pod without
/// labssh's labels.
pub fn info_of(pod: &Pod) -> Option<ContainerInfo> {
    let _ = pod;
    todo!("objects helper")
}
