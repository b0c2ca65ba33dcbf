//! Every labssh metric, defined once.
//!
//! [`FAMILIES`] is the catalogue: name, help, type and the only labels a
//! family may carry. The instruments in [`Metrics`] are built from it, the
//! Prometheus encoder renders from it (dropping any label it does not
//! declare), and the Grafana dashboards are checked against it. No label is
//! ever a student's identity: a class of 300 would make 300 series of every
//! family. Identities belong in traces.
//!
//! The OpenTelemetry SDK holds each figure; the OTLP exporter and `/metrics`
//! both read that one copy. The recording helpers below take `&'static str`
//! label values wherever the value set is fixed, so a user name cannot slip
//! into a label by accident; only agent names (a handful of configured
//! nodes) are dynamic.

use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use labssh_proto::pb;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider, UpDownCounter};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::Resource;

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
        name: "labssh_auth_cache_lookups_total",
        help: "Validated-credential cache lookups by result (hit, miss, unavailable).",
        kind: Kind::Counter,
        labels: &["result"],
    },
    Family {
        name: SETUP_SECONDS,
        help: "Session setup time per phase as the proxy sees it: accept (TCP accept to first auth request), auth, place, start (agent stream to process started), first_byte.",
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
        help: "Channels spliced to a container, by kind (session, direct-tcpip, forwarded-tcpip).",
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
    // Controller.
    Family {
        name: "labssh_placements_total",
        help: "Placement requests answered by the controller, by outcome (existing, new, unknown_environment, no_live_agents, all_full).",
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
        help: "Containers held by each agent, by state (running, stopped, creating).",
        kind: Kind::Gauge,
        labels: &["agent", "state"],
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
];

/// Histogram buckets in seconds: from a cached auth (about a millisecond) to a
/// cold container start on a loaded node (tens of seconds).
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The catalogue entry of `name`.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// The instruments, one per family of [`FAMILIES`].
#[derive(Debug)]
pub struct Metrics {
    proxy_connections: Counter<u64>,
    proxy_connections_active: UpDownCounter<i64>,
    proxy_sessions_active: UpDownCounter<i64>,
    auth_attempts: Counter<u64>,
    auth_cache_lookups: Counter<u64>,
    session_setup: Histogram<f64>,
    login: Histogram<f64>,
    forwarded_connections: Counter<u64>,
    forwarded_bytes: Counter<u64>,
    errors: Counter<u64>,
    placements: Counter<u64>,
    controller_agents: Gauge<u64>,
    heartbeat_age: Gauge<f64>,
    agent_containers: Gauge<u64>,
    agent_capacity: Gauge<u64>,
    agent_sessions: Gauge<u64>,
    container_ensure: Histogram<f64>,
    spawn: Histogram<f64>,
}

fn help(name: &'static str) -> &'static str {
    family(name).map(|f| f.help).unwrap_or("")
}

impl Metrics {
    fn new(meter: &Meter) -> Metrics {
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
            auth_attempts: counter("labssh_auth_attempts_total"),
            auth_cache_lookups: counter("labssh_auth_cache_lookups_total"),
            session_setup: seconds(SETUP_SECONDS),
            login: seconds(LOGIN_SECONDS),
            forwarded_connections: counter("labssh_forwarded_connections_total"),
            forwarded_bytes: meter
                .u64_counter("labssh_forwarded_bytes_total")
                .with_description(help("labssh_forwarded_bytes_total"))
                .with_unit("By")
                .build(),
            errors: counter("labssh_errors_total"),
            placements: counter("labssh_placements_total"),
            controller_agents: gauge("labssh_controller_agents"),
            heartbeat_age: meter
                .f64_gauge("labssh_controller_heartbeat_age_seconds")
                .with_description(help("labssh_controller_heartbeat_age_seconds"))
                .with_unit("s")
                .build(),
            agent_containers: gauge("labssh_agent_containers"),
            agent_capacity: gauge("labssh_agent_capacity"),
            agent_sessions: gauge("labssh_agent_sessions"),
            container_ensure: seconds("labssh_container_ensure_seconds"),
            spawn: seconds("labssh_spawn_seconds"),
        }
    }
}

/// The process-wide meter provider and the reader `/metrics` collects from.
struct Registry {
    /// Kept so the periodic OTLP reader can be flushed at exit.
    provider: SdkMeterProvider,
    /// Collected on every scrape.
    reader: Arc<ManualReader>,
    /// The instruments.
    metrics: Metrics,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Lets the SDK own a reader that `/metrics` also holds.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

fn build(resource: Resource, otlp: Option<opentelemetry_otlp::MetricExporter>) -> Registry {
    // Prometheus wants running totals.
    let reader = Arc::new(
        ManualReader::builder()
            .with_temporality(Temporality::Cumulative)
            .build(),
    );
    let mut builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(SharedReader(reader.clone()));
    if let Some(exporter) = otlp {
        builder = builder.with_periodic_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_meter_provider(provider.clone());
    let metrics = Metrics::new(&provider.meter("labssh"));
    Registry {
        provider,
        reader,
        metrics,
    }
}

/// Installs the meter provider, with OTLP export when `otlp` is given.
/// Returns false when metrics were already in use (then OTLP export of
/// metrics is off, and `/metrics` still works).
pub(crate) fn install(
    resource: Resource,
    otlp: Option<opentelemetry_otlp::MetricExporter>,
) -> bool {
    let mut installed = false;
    REGISTRY.get_or_init(|| {
        installed = true;
        build(resource, otlp)
    });
    installed
}

fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| build(Resource::builder().build(), None))
}

/// The instruments (a Prometheus-only provider is installed on first use if
/// [`crate::init`] has not run).
pub fn metrics() -> &'static Metrics {
    &registry().metrics
}

/// Flushes the OTLP metric export, if any.
pub(crate) fn force_flush() {
    if let Some(r) = REGISTRY.get() {
        let _ = r.provider.force_flush();
    }
}

/// Everything recorded so far, collected now.
pub fn collect() -> ResourceMetrics {
    let mut rm = ResourceMetrics::default();
    if let Err(e) = registry().reader.collect(&mut rm) {
        tracing::debug!("metrics collection failed: {e}");
    }
    rm
}

/// Everything recorded so far as Prometheus text.
pub fn render() -> String {
    crate::prometheus::encode(&collect())
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Keeps a gauge incremented while it lives.
#[must_use = "the gauge goes back down when this is dropped"]
#[derive(Debug)]
pub struct Active(&'static UpDownCounter<i64>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.add(-1, &[]);
    }
}

// ---- proxy ----

/// The proxy phases of a session's setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP accept to the first authentication request (SSH version
    /// exchange and key exchange).
    Accept,
    /// The successful authentication attempt (cache lookup, verification).
    Auth,
    /// Asking the controller where the container lives (or the cache).
    Place,
    /// Agent stream opened to process started (ensure plus spawn plus the
    /// network).
    Start,
    /// Process started to its first byte of output.
    FirstByte,
}

impl Phase {
    /// The `phase` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Accept => "accept",
            Phase::Auth => "auth",
            Phase::Place => "place",
            Phase::Start => "start",
            Phase::FirstByte => "first_byte",
        }
    }
}

/// An SSH connection was accepted; it counts as open until the guard drops.
pub fn connection_opened() -> Active {
    let m = metrics();
    m.proxy_connections.add(1, &[]);
    m.proxy_connections_active.add(1, &[]);
    Active(&m.proxy_connections_active)
}

/// One authentication attempt with `method` ("password", "publickey",
/// "keyboard-interactive").
pub fn auth_attempt(method: &'static str, accepted: bool) {
    let result = if accepted { "accepted" } else { "rejected" };
    metrics().auth_attempts.add(
        1,
        &[
            KeyValue::new("method", method),
            KeyValue::new("result", result),
        ],
    );
}

/// One credential cache lookup ("hit", "miss", "unavailable").
pub fn auth_cache_lookup(result: &'static str) {
    metrics()
        .auth_cache_lookups
        .add(1, &[KeyValue::new("result", result)]);
}

/// A setup phase took `elapsed`.
pub fn setup_phase(phase: Phase, elapsed: Duration) {
    metrics()
        .session_setup
        .record(seconds(elapsed), &[KeyValue::new("phase", phase.as_str())]);
}

/// A login reached a running process `elapsed` after TCP accept.
pub fn login(elapsed: Duration) {
    metrics().login.record(seconds(elapsed), &[]);
}

/// A channel of `kind` ("session", "direct-tcpip", "forwarded-tcpip") is
/// spliced to a container; it counts as active until the guard drops.
pub fn forwarding_started(kind: &'static str) -> Active {
    let m = metrics();
    m.forwarded_connections
        .add(1, &[KeyValue::new("kind", kind)]);
    m.proxy_sessions_active.add(1, &[]);
    Active(&m.proxy_sessions_active)
}

/// Direction of spliced bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to container (stdin, forwarded requests).
    ToContainer,
    /// Container to client (stdout, stderr, forwarded replies).
    ToClient,
}

/// `bytes` were spliced in `direction`.
pub fn forwarded_bytes(direction: Direction, bytes: usize) {
    let direction = match direction {
        Direction::ToContainer => "to_container",
        Direction::ToClient => "to_client",
    };
    metrics()
        .forwarded_bytes
        .add(bytes as u64, &[KeyValue::new("direction", direction)]);
}

/// Which role failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The SSH proxy.
    Proxy,
    /// The controller.
    Controller,
    /// A backend agent.
    Agent,
}

/// A failure of `kind` (a fixed word such as "session_start_timeout").
pub fn error(component: Component, kind: &'static str) {
    let component = match component {
        Component::Proxy => "proxy",
        Component::Controller => "controller",
        Component::Agent => "agent",
    };
    metrics().errors.add(
        1,
        &[
            KeyValue::new("component", component),
            KeyValue::new("kind", kind),
        ],
    );
}

// ---- controller ----

/// The controller answered a placement with `outcome`.
pub fn placement(outcome: &'static str) {
    metrics()
        .placements
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

// ---- agent ----

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
