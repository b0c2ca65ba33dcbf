//! `[web]`: the HTTPS front door (`labssh web --config FILE`), which serves the
//! services in students' containers to browsers by name, with the same
//! authenticators, rate limits and controller as the SSH proxy of the same file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How long a browser login lasts by default.
pub const DEFAULT_SESSION_HOURS: u64 = 12;
/// Browser connections one front door holds by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// From one client address by default: a TA's browser opening thirty students'
/// services by host holds a few connections to each.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 256;

/// The front door's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Where it listens for HTTPS, e.g. `0.0.0.0:443`.
    pub listen: String,
    /// The site's name: the portal is `https://DOMAIN/`, a service
    /// `https://8888-alice.DOMAIN/` (a wildcard DNS name and certificate) or
    /// `https://DOMAIN/s/8888-alice/`.
    pub domain: String,
    /// The certificate chain (PEM) for `DOMAIN` and `*.DOMAIN`.
    pub tls_cert: PathBuf,
    /// Its private key (PEM).
    pub tls_key: PathBuf,
    /// The key signing browser sessions (hex, made on first use): the same file on
    /// every replica, so one login holds on all of them.
    pub cookie_key_file: PathBuf,
    /// How long a browser login lasts.
    pub session_hours: u64,
    /// Where `labssh web` serves `/metrics`, `/healthz` and `/readyz`; empty means
    /// nowhere. Its own key, not the proxy's `http`: both roles run from one file,
    /// often on one host.
    pub http: String,
    /// Browser connections it holds at most; one more is closed at once.
    pub max_connections: usize,
    /// From one client address at most (`rate_limit.exempt_addresses`, a campus
    /// NAT for one, and a trusted balancer's own connections are not capped).
    pub max_connections_per_address: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: "127.0.0.1:8443".into(),
            domain: "lab.localhost".into(),
            tls_cert: PathBuf::from("web.crt"),
            tls_key: PathBuf::from("web.key"),
            cookie_key_file: PathBuf::from("web-cookie.key"),
            session_hours: DEFAULT_SESSION_HOURS,
            http: String::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        }
    }
}

impl WebConfig {
    /// Every invalid value, each with its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "web.listen: {:?} is not an address like 0.0.0.0:443",
                self.listen
            ));
        }
        let labels_ok = self.domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        if self.domain.is_empty() || !labels_ok {
            problems.push(format!(
                "web.domain: {:?} is not a lowercase DNS name like lab.example.edu",
                self.domain
            ));
        }
        for (key, path) in [
            ("web.tls_cert", &self.tls_cert),
            ("web.tls_key", &self.tls_key),
            ("web.cookie_key_file", &self.cookie_key_file),
        ] {
            if path.as_os_str().is_empty() {
                problems.push(format!("{key}: must not be empty"));
            }
        }
        if !self.http.is_empty() && self.http.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "web.http: {:?} is not an address like 127.0.0.1:9102",
                self.http
            ));
        }
        for (key, value) in [
            ("web.max_connections", self.max_connections),
            (
                "web.max_connections_per_address",
                self.max_connections_per_address,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be greater than 0"));
            }
        }
        if self.session_hours == 0 {
            problems.push("web.session_hours: must be greater than 0".into());
        }
        problems
    }
}
