//! The OpenTelemetry instruments, one per family of the catalogue.

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

use crate::catalogue::{family, LOGIN_SECONDS, SETUP_SECONDS};

/// Histogram buckets in seconds: from a cached auth (about a millisecond) to a
/// cold container start on a loaded node (tens of seconds).
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The instruments, one per family of [`crate::catalogue::FAMILIES`]; recorded
/// through the helpers of each role's module.
#[derive(Debug)]
pub struct Metrics {
    pub(crate) proxy_connections: Counter<u64>,
    pub(crate) proxy_connections_active: UpDownCounter<i64>,
    pub(crate) proxy_sessions_active: UpDownCounter<i64>,
    pub(crate) proxy_unauthenticated: UpDownCounter<i64>,
    pub(crate) proxy_refused: Counter<u64>,
    pub(crate) auth_attempts: Counter<u64>,
    pub(crate) auth_cache_lookups: Counter<u64>,
    pub(crate) authenticator: Histogram<f64>,
    pub(crate) session_setup: Histogram<f64>,
    pub(crate) login: Histogram<f64>,
    pub(crate) forwarded_connections: Counter<u64>,
    pub(crate) forwarded_bytes: Counter<u64>,
    pub(crate) errors: Counter<u64>,
    pub(crate) web_requests: Counter<u64>,
    pub(crate) web_request_seconds: Histogram<f64>,
    pub(crate) web_connections_active: UpDownCounter<i64>,
    pub(crate) web_refused: Counter<u64>,
    pub(crate) web_websockets_active: UpDownCounter<i64>,
    pub(crate) web_relayed_bytes: Counter<u64>,
    pub(crate) web_service_lookups: Counter<u64>,
    pub(crate) placements: Counter<u64>,
    pub(crate) prestart_results: Counter<u64>,
    pub(crate) controller_agents: Gauge<u64>,
    pub(crate) heartbeat_age: Gauge<f64>,
    pub(crate) agent_containers: Gauge<u64>,
    pub(crate) container_transitions: Counter<u64>,
    pub(crate) agent_capacity: Gauge<u64>,
    pub(crate) agent_sessions: Gauge<u64>,
    pub(crate) container_ensure: Histogram<f64>,
    pub(crate) spawn: Histogram<f64>,
    pub(crate) hooks: Counter<u64>,
    pub(crate) hook_seconds: Histogram<f64>,
    pub(crate) start_queue: Gauge<u64>,
    pub(crate) starts_in_flight: Gauge<u64>,
    pub(crate) start_wait: Histogram<f64>,
}

fn help(name: &'static str) -> &'static str {
    family(name).map(|f| f.help).unwrap_or("")
}

impl Metrics {
    pub(crate) fn new(meter: &Meter) -> Metrics {
        let counter =
            |name: &'static str| meter.u64_counter(name).with_description(help(name)).build();
        let up_down = |name: &'static str| {
            meter
                .i64_up_down_counter(name)
                .with_description(help(name))
                .build()
        };
        let gauge = |name: &'static str| meter.u64_gauge(name).with_description(help(name)).build();
        let seconds = |name: &'static str| {
            meter
                .f64_histogram(name)
                .with_description(help(name))
                .with_unit("s")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build()
        };
        Metrics {
            proxy_connections: counter("labssh_proxy_connections_total"),
            proxy_connections_active: up_down("labssh_proxy_connections_active"),
            proxy_sessions_active: up_down("labssh_proxy_sessions_active"),
            proxy_unauthenticated: up_down("labssh_proxy_unauthenticated_connections"),
            proxy_refused: counter("labssh_proxy_refused_total"),
            auth_attempts: counter("labssh_auth_attempts_total"),
            auth_cache_lookups: counter("labssh_auth_cache_lookups_total"),
            authenticator: seconds("labssh_auth_authenticator_seconds"),
            session_setup: seconds(SETUP_SECONDS),
            login: seconds(LOGIN_SECONDS),
            forwarded_connections: counter("labssh_forwarded_connections_total"),
            forwarded_bytes: meter
                .u64_counter("labssh_forwarded_bytes_total")
                .with_description(help("labssh_forwarded_bytes_total"))
                .with_unit("By")
                .build(),
            errors: counter("labssh_errors_total"),
            web_requests: counter("labssh_web_requests_total"),
            web_request_seconds: seconds("labssh_web_request_seconds"),
            web_connections_active: up_down("labssh_web_connections_active"),
            web_refused: counter("labssh_web_refused_total"),
            web_websockets_active: up_down("labssh_web_websockets_active"),
            web_relayed_bytes: meter
                .u64_counter("labssh_web_relayed_bytes_total")
                .with_description(help("labssh_web_relayed_bytes_total"))
                .with_unit("By")
                .build(),
            web_service_lookups: counter("labssh_web_service_lookups_total"),
            placements: counter("labssh_placements_total"),
            prestart_results: counter("labssh_prestart_results_total"),
            controller_agents: gauge("labssh_controller_agents"),
            heartbeat_age: meter
                .f64_gauge("labssh_controller_heartbeat_age_seconds")
                .with_description(help("labssh_controller_heartbeat_age_seconds"))
                .with_unit("s")
                .build(),
            agent_containers: gauge("labssh_agent_containers"),
            container_transitions: counter("labssh_agent_container_transitions_total"),
            agent_capacity: gauge("labssh_agent_capacity"),
            agent_sessions: gauge("labssh_agent_sessions"),
            container_ensure: seconds("labssh_container_ensure_seconds"),
            spawn: seconds("labssh_spawn_seconds"),
            hooks: counter("labssh_agent_hooks_total"),
            hook_seconds: seconds("labssh_agent_hook_seconds"),
            start_queue: gauge("labssh_agent_start_queue"),
            starts_in_flight: gauge("labssh_agent_starts_in_flight"),
            start_wait: seconds("labssh_agent_start_wait_seconds"),
        }
    }
}
