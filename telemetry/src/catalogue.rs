//! The metric catalogue: every labssh metric family, defined once.
//!
//! [`FAMILIES`] gives each family's name, help, type and the only labels it
//! may carry. The instruments are built from it (`metrics`), the Prometheus
//! encoder renders from it (dropping any label it does not declare), and the
//! Grafana dashboards are checked against it. No label is ever a student's
//! identity: a class of 300 would make 300 series of every family.

/// Prometheus metric type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; the name ends in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution; the name ends in `_seconds` (all of ours are times).
    Histogram,
}

/// One metric family of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// Prometheus name, also the OpenTelemetry instrument name.
    pub name: &'static str,
    /// One line for `# HELP`.
    pub help: &'static str,
    /// Prometheus type.
    pub kind: Kind,
    /// The labels it may carry; anything else is dropped when rendering.
    pub labels: &'static [&'static str],
}

/// Session setup phases timed by the proxy, one histogram per phase in
/// `labssh_session_setup_seconds`.
pub const SETUP_SECONDS: &str = "labssh_session_setup_seconds";
/// TCP accept to process started, what a student waits for.
pub const LOGIN_SECONDS: &str = "labssh_login_seconds";

/// The catalogue. Order is the order on `/metrics`.
pub const FAMILIES: &[Family] = &[
    // Proxy.
    Family {
        name: "labssh_proxy_connections_total",
        help: "SSH connections accepted by the proxy.",
        kind: Kind::Counter,
        labels: &[],
    },
    Family {
        name: "labssh_proxy_connections_active",
        help: "SSH connections open on the proxy.",
        kind: Kind::Gauge,
        labels: &[],
    },
    Family {
        name: "labssh_proxy_unauthenticated_connections",
        help: "SSH connections open on the proxy that have not logged in yet.",
        kind: Kind::Gauge,
        labels: &[],
    },
    Family {
        name: "labssh_proxy_refused_total",
        help: "Connections the proxy refused or closed before a login, by reason (max_connections, max_unauthenticated_per_address, max_startups, login_grace, max_auth_tries).",
        kind: Kind::Counter,
        labels: &["reason"],
    },
    Family {
        name: "labssh_proxy_sessions_active",
        help: "Channels whose process (or forwarded connection) is running, on the proxy.",
        kind: Kind::Gauge,
        labels: &[],
    },
    Family {
        name: "labssh_auth_attempts_total",
        help: "Authentication attempts by method and result (accepted, rejected).",
        kind: Kind::Counter,
        labels: &["method", "result"],
    },
    Family {
        name: "labssh_auth_authenticator_seconds",
        help: "Time each authenticator of the chain took to answer (users_file, ldap, webhook), by answer (accept, reject, unknown, unavailable). Cache hits are not counted.",
        kind: Kind::Histogram,
        labels: &["authenticator", "answer"],
    },
    Family {
        name: "labssh_auth_cache_lookups_total",
        help: "Validated-credential cache lookups by result (hit, miss, unavailable).",
        kind: Kind::Counter,
        labels: &["result"],
    },
    Family {
        name: SETUP_SECONDS,
        help: "Session setup time per phase as the proxy sees it: accept (TCP accept to first auth request), auth, place, start (agent stream to process started), first_byte; and resume (a session's agent stream broke to the session re-attached after the agent restarted).",
        kind: Kind::Histogram,
        labels: &["phase"],
    },
    Family {
        name: LOGIN_SECONDS,
        help: "TCP accept to the student's process started.",
        kind: Kind::Histogram,
        labels: &[],
    },
    Family {
        name: "labssh_forwarded_connections_total",
        help: "Channels spliced to a container, by kind (session, direct-tcpip, forwarded-tcpip, direct-streamlocal, forwarded-streamlocal, auth-agent).",
        kind: Kind::Counter,
        labels: &["kind"],
    },
    Family {
        name: "labssh_forwarded_bytes_total",
        help: "Bytes spliced by the proxy, by direction (to_container, to_client).",
        kind: Kind::Counter,
        labels: &["direction"],
    },
    Family {
        name: "labssh_errors_total",
        help: "Failures by component and kind.",
        kind: Kind::Counter,
        labels: &["component", "kind"],
    },
    // Web front door (`labssh web`).
    Family {
        name: "labssh_web_requests_total",
        help: "Requests the web front door answered, by route (service, portal, login, logout, action, other) and status class (2xx, 3xx, 4xx, 5xx).",
        kind: Kind::Counter,
        labels: &["route", "status"],
    },
    Family {
        name: "labssh_web_request_seconds",
        help: "Time from a request to its response head on the web front door, by route (a service's includes placing and reaching the container).",
        kind: Kind::Histogram,
        labels: &["route"],
    },
    Family {
        name: "labssh_web_connections_active",
        help: "Browser connections (TLS) open on the web front door.",
        kind: Kind::Gauge,
        labels: &[],
    },
    Family {
        name: "labssh_web_refused_total",
        help: "Browser connections the web front door closed at once, by the limit that was full (max_connections, max_connections_per_address).",
        kind: Kind::Counter,
        labels: &["reason"],
    },
    Family {
        name: "labssh_web_websockets_active",
        help: "WebSockets (and other upgrades) the web front door is relaying to containers.",
        kind: Kind::Gauge,
        labels: &[],
    },
    Family {
        name: "labssh_web_relayed_bytes_total",
        help: "Bytes the web front door relayed through agents' Forward streams, by direction (to_service, to_browser).",
        kind: Kind::Counter,
        labels: &["direction"],
    },
    Family {
        name: "labssh_web_service_lookups_total",
        help: "Services the web front door looked up by name, by result (hit: from its short cache; miss: asked the controller).",
        kind: Kind::Counter,
        labels: &["result"],
    },
    // Controller.
    Family {
        name: "labssh_placements_total",
        help: "Placement requests answered by the controller, by outcome (existing, new, unknown_environment, no_live_agents, all_full).",
        kind: Kind::Counter,
        labels: &["outcome"],
    },
    Family {
        name: "labssh_prestart_results_total",
        help: "Users a prestart (labssh prestart or the schedule) went through, by outcome (created, started, already, failed, cancelled: the caller went away before their turn).",
        kind: Kind::Counter,
        labels: &["outcome"],
    },
    Family {
        name: "labssh_controller_agents",
        help: "Agents known to the controller, by state (live, dead).",
        kind: Kind::Gauge,
        labels: &["state"],
    },
    Family {
        name: "labssh_controller_heartbeat_age_seconds",
        help: "Time since the controller last heard from each agent.",
        kind: Kind::Gauge,
        labels: &["agent"],
    },
    // Agents.
    Family {
        name: "labssh_agent_containers",
        help: "Containers held by each agent, by state (running, prestarted, paused, stopped, creating); prestarted ones are running and not yet used, and not counted as running.",
        kind: Kind::Gauge,
        labels: &["agent", "state"],
    },
    Family {
        name: "labssh_agent_container_transitions_total",
        help: "Container lifecycle transitions on each agent, by from and to state (absent, running, paused, stopped) and reason (idle, login, forward, max_age, outdated).",
        kind: Kind::Counter,
        labels: &["agent", "from", "to", "reason"],
    },
    Family {
        name: "labssh_agent_capacity",
        help: "Most containers each agent will hold.",
        kind: Kind::Gauge,
        labels: &["agent"],
    },
    Family {
        name: "labssh_agent_sessions",
        help: "Open sessions on each agent (its load).",
        kind: Kind::Gauge,
        labels: &["agent"],
    },
    Family {
        name: "labssh_container_ensure_seconds",
        help: "Time to ensure a student's container, by agent and outcome (found, started, created).",
        kind: Kind::Histogram,
        labels: &["agent", "outcome"],
    },
    Family {
        name: "labssh_spawn_seconds",
        help: "Time to start a process in a container, by agent and path (helper, exec).",
        kind: Kind::Histogram,
        labels: &["agent", "path"],
    },
    Family {
        name: "labssh_agent_hooks_total",
        help: "Lifecycle hooks run by each agent, by event (create, start, login, logout, idle, stop, timer) and outcome (ok, failed, timed_out, refused, skipped).",
        kind: Kind::Counter,
        labels: &["agent", "event", "outcome"],
    },
    Family {
        name: "labssh_agent_hook_seconds",
        help: "Time a lifecycle hook took, by agent and event.",
        kind: Kind::Histogram,
        labels: &["agent", "event"],
    },
    Family {
        name: "labssh_agent_start_queue",
        help: "Containers waiting in each agent's start queue, by class (student, prestart).",
        kind: Kind::Gauge,
        labels: &["agent", "class"],
    },
    Family {
        name: "labssh_agent_starts_in_flight",
        help: "Containers each agent is creating or starting now (at most start_concurrency).",
        kind: Kind::Gauge,
        labels: &["agent"],
    },
    Family {
        name: "labssh_agent_start_wait_seconds",
        help: "Time spent waiting in the start queue before a container's creation or start, by agent and class (student, prestart).",
        kind: Kind::Histogram,
        labels: &["agent", "class"],
    },
];

/// The catalogue entry of `name`.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(seen.insert(f.name), "{} defined twice", f.name);
            assert!(f.name.starts_with("labssh_"), "{}", f.name);
            assert!(
                f.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                f.name
            );
            match f.kind {
                Kind::Counter => assert!(f.name.ends_with("_total"), "{}", f.name),
                Kind::Histogram => assert!(f.name.ends_with("_seconds"), "{}", f.name),
                Kind::Gauge => assert!(!f.name.ends_with("_total"), "{}", f.name),
            }
            for label in f.labels {
                assert!(
                    !["user", "login", "student", "peer", "container"].contains(label),
                    "{} has identity label {label}",
                    f.name
                );
            }
        }
    }
}
