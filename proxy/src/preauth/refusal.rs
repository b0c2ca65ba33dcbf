//! Why a connection was refused before a login; each refusal is counted in
//! `labssh_proxy_refused_total{reason}` and logged at most once per client
//! address and reason per [`LOG_WINDOW`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use labssh_telemetry::metrics as telemetry;

use super::throttle::{LogThrottle, Note};

/// A client address's refusals of one reason are logged once per window; the
/// count of the rest follows when it ends.
pub const LOG_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose refusals are logged each on their own; past this, those of
/// other addresses are logged together.
const LOG_MAX_ADDRESSES: usize = 10_000;

/// Why the proxy refused or closed a connection before a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Reason {
    /// `max_connections` connections are open: closed at accept.
    MaxConnections,
    /// The client address has `max_unauthenticated_per_address` connections not
    /// logged in yet: closed before the SSH banner.
    PerAddress,
    /// Random early drop of `max_startups`: closed before the SSH banner.
    MaxStartups,
    /// Not logged in within `login_grace_secs`.
    LoginGrace,
    /// `max_auth_tries` failed attempts on the connection.
    MaxAuthTries,
}

impl Reason {
    /// The `reason` label, named after the configuration key.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::MaxConnections => "max_connections",
            Reason::PerAddress => "max_unauthenticated_per_address",
            Reason::MaxStartups => "max_startups",
            Reason::LoginGrace => "login_grace",
            Reason::MaxAuthTries => "max_auth_tries",
        }
    }

    /// What the log says.
    fn describe(self) -> &'static str {
        match self {
            Reason::MaxConnections => "connection refused: too many connections",
            Reason::PerAddress => {
                "connection refused: too many unauthenticated connections from this address"
            }
            Reason::MaxStartups => "connection refused: too many unauthenticated connections",
            Reason::LoginGrace => "connection closed: not logged in within the login grace",
            Reason::MaxAuthTries => "connection closed: too many authentication failures",
        }
    }
}

/// Counts and logs refusals.
#[derive(Default)]
pub(crate) struct Refusals {
    /// Per reason, one line per client address per window; `None` stands for
    /// the addresses past [`LOG_MAX_ADDRESSES`].
    throttles: Mutex<HashMap<Reason, LogThrottle<Option<IpAddr>>>>,
}

impl Refusals {
    /// Counts one refusal of a connection from `ip`, and logs it if it is the
    /// first of its address and reason in this window. `limit` is the
    /// configured value that was reached.
    pub(crate) fn refuse(&self, reason: Reason, ip: IpAddr, limit: impl std::fmt::Display) {
        telemetry::refused(reason.as_str());
        let ip = ip.to_canonical();
        let (client, note) = {
            let mut throttles = self.throttles.lock().expect("refusal log lock");
            throttles
                .entry(reason)
                .or_insert_with(|| LogThrottle::new(LOG_WINDOW, LOG_MAX_ADDRESSES, None))
                .note(Some(ip), Instant::now())
        };
        let Note::Log { suppressed } = note else {
            return;
        };
        let window = LOG_WINDOW.as_secs();
        let reason_key = reason.as_str();
        match client {
            Some(client) => tracing::warn!(
                %client,
                reason = reason_key,
                %limit,
                suppressed,
                "{} (limit {limit}); more from {client} for {reason_key} are counted, not logged, for {window} s",
                reason.describe()
            ),
            None => tracing::warn!(
                reason = reason_key,
                %limit,
                suppressed,
                "{} (limit {limit}) from more than {LOG_MAX_ADDRESSES} addresses; the rest are counted, not logged, for {window} s",
                reason.describe()
            ),
        }
    }

    /// Logs the refusals counted but not logged in windows that have ended.
    /// Called every [`LOG_WINDOW`].
    pub(crate) fn report(&self) {
        self.report_ended_by(Instant::now());
    }

    /// Logs every refusal counted but not logged yet (at shutdown).
    pub(crate) fn report_all(&self) {
        self.report_ended_by(Instant::now() + LOG_WINDOW);
    }

    fn report_ended_by(&self, now: Instant) {
        let mut ended = Vec::new();
        {
            let mut throttles = self.throttles.lock().expect("refusal log lock");
            for (reason, throttle) in throttles.iter_mut() {
                ended.extend(
                    throttle
                        .expire(now)
                        .into_iter()
                        .map(|(c, n)| (*reason, c, n)),
                );
            }
        }
        for (reason, client, count) in ended {
            let reason = reason.as_str();
            match client {
                Some(client) => tracing::warn!(
                    %client,
                    reason,
                    count,
                    "{count} more connections from {client} refused for {reason} in the last window"
                ),
                None => tracing::warn!(
                    reason,
                    count,
                    "{count} more connections from further addresses refused for {reason} in the last window"
                ),
            }
        }
    }
}
