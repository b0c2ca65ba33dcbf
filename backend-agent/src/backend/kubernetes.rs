//! Kubernetes implementation of [`Backend`], through kube-rs.
//!
//! The agent runs as a DaemonSet, one per node. A student's container is a Pod per
//! user and environment, pinned to this agent's node (`nodeName`), with a
//! PersistentVolumeClaim per student as the home (kept when the pod goes) and a
//! NetworkPolicy of its own. What those objects look like is [`objects`]; making sure
//! of them, the one list+watch over this agent's pods and the cluster's failures in
//! students' words are [`api`] and [`events`]; work inside a running pod (processes,
//! connections, names, listeners) goes through labssh-init, PID 1 of the pod, reached
//! through its init process like Docker's containers, or `pods/exec` when the helper
//! cannot be reached: [`inside`] and [`exec`].

mod api;
pub mod events;
pub mod exec;
pub mod inside;
pub mod locate;
pub mod objects;
pub mod seccomp;

pub use api::KubeBackend;
pub use exec::{KubeExec, PodExec};
pub use inside::{Inside, PodRef};
pub use objects::{claim_name, pod_name, PodPlan, CONTAINER};
