//! What the proxy records: connections (and those refused before a login),
//! authentication, setup phases and spliced channels.

use std::time::Duration;

use opentelemetry::KeyValue;

use super::registry::{metrics, seconds, Active};

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
    /// A kept session's agent stream broke to the session resumed on a new one
    /// (the agent restarted).
    Resume,
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
            Phase::Resume => "resume",
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

/// A connection is open and not logged in yet; it counts as unauthenticated
/// until the guard drops (at its login, or when it closes).
pub fn unauthenticated() -> Active {
    let m = metrics();
    m.proxy_unauthenticated.add(1, &[]);
    Active(&m.proxy_unauthenticated)
}

/// The proxy refused or closed a connection before a login, for `reason` (a fixed
/// word such as "max_startups").
pub fn refused(reason: &'static str) {
    metrics()
        .proxy_refused
        .add(1, &[KeyValue::new("reason", reason)]);
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

/// An authenticator of the chain (`users_file`, `ldap`, `webhook`) answered
/// (`accept`, `reject`, `unknown`, `unavailable`) after `elapsed`.
pub fn authenticator_answered(
    authenticator: &'static str,
    answer: &'static str,
    elapsed: Duration,
) {
    metrics().authenticator.record(
        seconds(elapsed),
        &[
            KeyValue::new("authenticator", authenticator),
            KeyValue::new("answer", answer),
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

/// A channel of `kind` ("session", "direct-tcpip", "forwarded-tcpip",
/// "direct-streamlocal", "forwarded-streamlocal", "auth-agent") is
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
