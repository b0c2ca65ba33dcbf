//! What an agent records: its status, container ensures, spawns and hooks.

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
        (pb::ContainerState::Paused, "paused"),
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

/// A container on `agent` went from state `from` to `to` for `reason`.
pub fn container_transition(
    agent: &str,
    from: &'static str,
    to: &'static str,
    reason: &'static str,
) {
    metrics().container_transitions.add(
        1,
        &[
            KeyValue::new("agent", agent.to_string()),
            KeyValue::new("from", from),
            KeyValue::new("to", to),
            KeyValue::new("reason", reason),
        ],
    );
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

/// A hook for `event` ("create", ..., "timer") ran on `agent` to `outcome` ("ok",
/// "failed", "timed_out", "refused", "skipped") in `elapsed`.
pub fn hook(agent: &str, event: &'static str, outcome: &'static str, elapsed: Duration) {
    let m = metrics();
    let agent = KeyValue::new("agent", agent.to_string());
    let event = KeyValue::new("event", event);
    m.hooks.add(
        1,
        &[
            agent.clone(),
            event.clone(),
            KeyValue::new("outcome", outcome),
        ],
    );
    m.hook_seconds.record(seconds(elapsed), &[agent, event]);
}
