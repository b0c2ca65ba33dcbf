//! What the controller records: placements, prestarts and its view of the agents.

use labssh_proto::pb;
use opentelemetry::KeyValue;

use super::registry::metrics;

/// The controller answered a placement with `outcome`.
pub fn placement(outcome: &'static str) {
    metrics()
        .placements
        .add(1, &[KeyValue::new("outcome", outcome)]);
}

/// A prestart finished one user with `outcome`.
pub fn prestart(outcome: &'static str) {
    metrics()
        .prestart_results
        .add(1, &[KeyValue::new("outcome", outcome)]);
}

/// The controller's view of its agents, recorded on every sweep.
pub fn controller_agents(agents: &[pb::AgentInfo]) {
    let m = metrics();
    let live = agents.iter().filter(|a| a.live).count() as u64;
    let dead = agents.len() as u64 - live;
    m.controller_agents
        .record(live, &[KeyValue::new("state", "live")]);
    m.controller_agents
        .record(dead, &[KeyValue::new("state", "dead")]);
    for a in agents {
        m.heartbeat_age.record(
            a.last_seen_ms as f64 / 1000.0,
            &[KeyValue::new("agent", a.name.clone())],
        );
    }
}
