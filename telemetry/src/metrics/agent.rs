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
    let count = |state: pb::ContainerState| {
        status
            .inventory
            .iter()
            .filter(|c| c.state() == state)
            .count() as u64
    };
    // Prestarted containers are running ones nobody used yet: shown apart, so the
    // states stay disjoint and their sum is the number of containers.
    let prestarted = u64::from(status.prestarted).min(count(pb::ContainerState::Running));
    for (n, label) in [
        (count(pb::ContainerState::Running) - prestarted, "running"),
        (prestarted, "prestarted"),
        (count(pb::ContainerState::Stopped), "stopped"),
        (count(pb::ContainerState::Creating), "creating"),
        (count(pb::ContainerState::Paused), "paused"),
    ] {
        m.agent_containers
            .record(n, &[name.clone(), KeyValue::new("state", label)]);
    }
}

/// The start queue of `agent` now: students and prestarts waiting, starts in flight.
pub fn start_queue(agent: &str, students: u64, prestarts: u64, in_flight: u64) {
    let m = metrics();
    let name = KeyValue::new("agent", agent.to_string());
    for (n, class) in [(students, "student"), (prestarts, "prestart")] {
        m.start_queue
            .record(n, &[name.clone(), KeyValue::new("class", class)]);
    }
    m.starts_in_flight
        .record(in_flight, std::slice::from_ref(&name));
}

/// A waiter of `class` ("student", "prestart") on `agent` was admitted to start its
/// container after `waited` in the queue.
pub fn start_wait(agent: &str, class: &'static str, waited: Duration) {
    metrics().start_wait.record(
        seconds(waited),
        &[
            KeyValue::new("agent", agent.to_string()),
            KeyValue::new("class", class),
        ],
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the `labssh_agent_containers` sample of `agent` in `state`.
    fn containers(page: &str, agent: &str, state: &str) -> Option<String> {
        page.lines()
            .filter(|l| l.starts_with("labssh_agent_containers{"))
            .filter(|l| l.contains(&format!("agent=\"{agent}\"")))
            .find(|l| l.contains(&format!("state=\"{state}\"")))
            .and_then(|l| l.rsplit(' ').next().map(str::to_owned))
    }

    #[test]
    fn prestarted_containers_are_shown_apart_from_running_ones() {
        let info = |state: pb::ContainerState| pb::ContainerInfo {
            state: state as i32,
            ..Default::default()
        };
        let status = pb::AgentStatus {
            inventory: vec![
                info(pb::ContainerState::Running),
                info(pb::ContainerState::Running),
                info(pb::ContainerState::Running),
                info(pb::ContainerState::Paused),
            ],
            prestarted: 2,
            ..Default::default()
        };
        agent_status("t-prestarted", &status);
        let page = crate::metrics::render();
        let seen = |state| containers(&page, "t-prestarted", state);
        assert_eq!(seen("running").as_deref(), Some("1"), "{page}");
        assert_eq!(seen("prestarted").as_deref(), Some("2"));
        assert_eq!(seen("paused").as_deref(), Some("1"));
    }
}
