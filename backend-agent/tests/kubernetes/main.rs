//! The agent's Kubernetes backend against real parts where they can be had here:
//! Docker standing in for the kubelet (no cluster can run here), the API server
//! faked (`labssh_testkit::kube_api`).
//!
//! - `pod_helper`: labssh-init as a pod runs it — installed by an init container,
//!   PID 1 of the student container under each Pod Security level, found by its
//!   container id;
//! - `kubelet`: `KubeBackend` end to end: the pods it asks the fake API server for,
//!   run by Docker from their spec as a kubelet would, then sessions, listeners,
//!   homes, listening ports and tenants through their helpers.

mod kubelet;
mod pod_helper;
