//! What an agent records: its status, container ensures and spawns.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use labssh_proto::pb;
use opentelemetry::KeyValue;

use super::registry::{metrics, seconds};

/// What an agent reports about itself, recorded with every heartbeat.
pub fn agent_status(agent: &str, status: &pb::AgentStatus) {
    let m = metrics();
    let name = KeyValue::new("agent", agent.to_string());
    m.agent_capacity
        .record(u64::from(status.capacity), std::slice::from_ref(&name));
    m.agent_sessions
        .record(u64::from(status.sessions), std::slice::from_ref(&name));
    for (state, label) in [
        (pb::ContainerState::Running, "running"),
        (pb::ContainerState::Stopped, "stopped"),
        (pb::ContainerState::Creating, "creating"),
    ] {
        let n = status
            .inventory
            .iter()
            .filter(|c| c.state() == state)
            .count() as u64;
        m.agent_containers
            .record(n, &[name.clone(), KeyValue::new("state", label)]);
    }
}

/// An ensure on `agent` ended with `outcome` ("found", "started",
/// "created") after `elapsed`.
pub fn container_ensure(agent: &str, outcome: &'static str, elapsed: Duration) {
    metrics().container_ensure.record(
        seconds(elapsed),
        &[
            KeyValue::new("agent", agent.to_string()),
            KeyValue::new("outcome", outcome),
        ],
    );
}

/// A process was started on `agent` through `path` in `elapsed`.
pub fn spawn(agent: &str, path: &'static str, elapsed: Duration) {
    metrics().spawn.record(
        seconds(elapsed),
        &[
            KeyValue::new("agent", agent.to_string()),
            KeyValue::new("path", path),
        ],
    );
}

/// The spawn path when the backend does not say: Docker exec.
pub const DEFAULT_SPAWN_PATH: &str = "exec";

tokio::task_local! {
    static SPAWN_PATH: Cell<&'static str>;
}

/// Runs a backend's spawn and returns the path it reported with
/// [`note_spawn_path`] (or [`DEFAULT_SPAWN_PATH`]).
pub async fn with_spawn_path<F: Future>(spawn: F) -> (F::Output, &'static str) {
    SPAWN_PATH
        .scope(Cell::new(DEFAULT_SPAWN_PATH), async move {
            let out = spawn.await;
            (out, SPAWN_PATH.with(Cell::get))
        })
        .await
}

/// Called by a backend inside its spawn to say which path it took
/// ("helper", "exec"); also recorded on the current span's `path` field.
pub fn note_spawn_path(path: &'static str) {
    let _ = SPAWN_PATH.try_with(|p| p.set(path));
    tracing::Span::current().record("path", path);
}
