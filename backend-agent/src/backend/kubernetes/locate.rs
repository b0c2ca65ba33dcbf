//! Finding a pod container's init process on this node from the container id in the
//! pod's status (`containerd://…`, `cri-o://…`, `docker://…`), with the agent in the
//! host's PID namespace (`hostPID: true` in the DaemonSet).

/// The host pid of PID 1 of the container whose status id is `container_id`.
pub fn init_pid(container_id: &str) -> Result<u32, String> {
    let _ = container_id;
    todo!("inside helper")
}

/// The bare id in a status container id (`containerd://abc` → `abc`).
pub fn bare_id(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}
