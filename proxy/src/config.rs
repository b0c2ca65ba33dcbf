//! Proxy configuration: TOML with serde defaults; unknown keys are errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use labssh_proto::config::ConfigRole;
use serde::{Deserialize, Serialize};

pub mod auth;
pub mod web;

/// Default SSH listen address: a non-privileged port for a first run.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2222";
/// Long enough that a class logging in twice a minute mostly hits the cache,
/// short enough that a revoked password stops working within minutes.
pub const DEFAULT_AUTH_CACHE_TTL_SECS: u64 = 300;
/// Placements rarely change; a few seconds spares the controller a round trip
/// per channel while a dead agent is noticed quickly.
pub const DEFAULT_PLACEMENT_CACHE_SECS: u64 = 10;
/// Constant delay for failed authentication, so timing reveals nothing about
/// which part was wrong, while a mistyped password is not punished for long.
pub const DEFAULT_AUTH_REJECTION_MS: u64 = 300;
/// Bound on how long a student waits for the controller before seeing an error.
pub const DEFAULT_CONTROLLER_TIMEOUT_SECS: u64 = 10;
/// Creating a container from a cold image can take a while on a busy node.
pub const DEFAULT_SESSION_START_TIMEOUT_SECS: u64 = 60;
/// Idle SSH connections are dropped after this long.
pub const DEFAULT_INACTIVITY_TIMEOUT_SECS: u64 = 3600;
/// Half OpenSSH's LoginGraceTime (120 s): time
/// enough to type a password, short enough that connections which never log in
/// cannot hold the replica's slots for long.
pub const DEFAULT_LOGIN_GRACE_SECS: u64 = 60;
/// A class of 300 with a few sessions each, with room to spare; beyond this
/// new connections are refused so a flood cannot exhaust the replica.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// One address not logged in more than this many times at once is a flood, not
/// a student: a person opens a handful of terminals. OpenSSH's
/// `PerSourceMaxStartups` has no default; this is its `MaxStartups` full of 100,
/// divided among a few addresses. The campus NAT is exempted through
/// `rate_limit.exempt_addresses`.
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 32;
/// OpenSSH's is `10:30:100`, meant for one sshd. Here the whole class may log in
/// at 9:00 from the campus NAT, exempt from the per-address cap: below 300
/// unauthenticated connections (every student of a class of 300 typing their
/// password at once) nobody is refused; from there 30% rising to all at 1000, a
/// quarter of `max_connections`, so a flood from many addresses can never hold
/// more than that while logged-in students keep the rest.
pub const DEFAULT_MAX_STARTUPS: &str = "300:30:1000";
/// OpenSSH's `MaxAuthTries`: failed attempts (password, public key,
/// keyboard-interactive) on one connection before it is disconnected.
pub const DEFAULT_MAX_AUTH_TRIES: u32 = 6;
/// A keepalive after this long without a word from the client. OpenSSH's
/// `ClientAliveInterval` is 0 (off), which leaves a laptop closed mid-session
/// holding its connection and container processes until TCP gives up (hours);
/// 15 s costs a few bytes and finds it within a minute.
pub const DEFAULT_CLIENT_ALIVE_INTERVAL_SECS: u64 = 15;
/// OpenSSH's `ClientAliveCountMax`: keepalives unanswered in a row before the
/// client is disconnected, so a dead one goes after about
/// interval × (count + 1) = 60 s.
pub const DEFAULT_CLIENT_ALIVE_COUNT_MAX: usize = 3;

/// PROXY protocol v2 from load balancers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyProtocolConfig {
    /// Addresses or CIDRs of balancers allowed to send a header; empty
    /// means PROXY protocol is off.
    pub trusted: Vec<String>,
    /// Whether trusted peers must send a header (true behind HAProxy with
    /// `send-proxy-v2`); if false, one without is served with its own address.
    pub required: bool,
}

/// Configuration of one proxy replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// SSH listen address (used by the binary; `run` takes a bound listener).
    pub listen: String,
    /// Host key files (OpenSSH format). The first is generated if missing, so
    /// every replica pointed at the same files shares one identity.
    pub host_keys: Vec<PathBuf>,
    /// TOML users file with argon2 password hashes and authorized keys;
    /// re-read when it changes.
    pub users_file: PathBuf,
    /// The authenticators and their order; user certificates.
    pub auth: auth::AuthConfig,
    /// Controller gRPC endpoint, e.g. `http://127.0.0.1:7000`.
    pub controller: String,
    /// Redis URL for the shared credential cache; empty means an in-process cache.
    pub redis_url: String,
    /// File holding the HMAC key for cached credentials; generated if missing.
    /// Replicas sharing a Redis must share this key.
    pub cache_key_file: PathBuf,
    /// Lifetime of a cached validated credential.
    pub auth_cache_ttl_secs: u64,
    /// Lifetime of a cached placement answer.
    pub placement_cache_secs: u64,
    /// Delay applied to every failed authentication.
    pub auth_rejection_ms: u64,
    /// Timeout for controller calls.
    pub controller_timeout_secs: u64,
    /// Timeout for an agent to ensure the container and start the process.
    pub session_start_timeout_secs: u64,
    /// Idle connection timeout.
    pub inactivity_timeout_secs: u64,
    /// From accepting a connection to a successful login; a client that has
    /// not logged in by then is disconnected.
    pub login_grace_secs: u64,
    /// Client `env` requests accepted (exact names, or prefixes ending in `*`).
    pub accept_env: Vec<String>,
    /// Most simultaneous SSH connections this replica accepts.
    pub max_connections: usize,
    /// Most connections not logged in yet from one client address (behind
    /// PROXY protocol, the header's); `rate_limit.exempt_addresses` are not
    /// capped. Past it a new connection is closed before the SSH banner.
    pub max_unauthenticated_per_address: usize,
    /// Random early drop over all connections not logged in yet,
    /// `start:rate:full` as OpenSSH's `MaxStartups` (see
    /// [`crate::preauth::MaxStartups`]).
    pub max_startups: String,
    /// Failed authentication attempts on one connection before it is
    /// disconnected ("Too many authentication failures").
    pub max_auth_tries: u32,
    /// Seconds without a word from the client before a keepalive is sent; 0 is
    /// off.
    pub client_alive_interval_secs: u64,
    /// Keepalives unanswered in a row before the client is disconnected; 0
    /// never disconnects. `ssh` answers none while at its password prompt, so
    /// keep interval × (count + 1) at least `login_grace_secs`.
    pub client_alive_count_max: usize,
    /// PROXY protocol from load balancers.
    pub proxy_protocol: ProxyProtocolConfig,
    /// Brute-force limits (shared through Redis when configured).
    pub rate_limit: crate::rate_limit::RateLimitConfig,
    /// mTLS towards the controller and agents: this proxy's certificate and
    /// the cluster CA. Empty means plain HTTP/2.
    pub tls: labssh_proto::tls::TlsFiles,
    /// Listen address of the HTTP listener serving `/metrics`, `/healthz`
    /// and `/readyz` (used by the binary); empty means none.
    pub http: String,
    /// The audit log (`[audit]`): logins, sessions and forwards as JSON lines.
    pub audit: crate::audit::AuditConfig,
    /// Session recording (`[recording]`), for environments with `record` set.
    pub recording: crate::recording::RecordingConfig,
    /// The HTTPS front door (`[web]`), run by `labssh web` with this file.
    pub web: web::WebConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.to_string(),
            host_keys: vec![PathBuf::from("host_ed25519_key")],
            users_file: PathBuf::from("users.toml"),
            auth: Default::default(),
            controller: "http://127.0.0.1:7000".to_string(),
            redis_url: String::new(),
            cache_key_file: PathBuf::from("cache.key"),
            auth_cache_ttl_secs: DEFAULT_AUTH_CACHE_TTL_SECS,
            placement_cache_secs: DEFAULT_PLACEMENT_CACHE_SECS,
            auth_rejection_ms: DEFAULT_AUTH_REJECTION_MS,
            controller_timeout_secs: DEFAULT_CONTROLLER_TIMEOUT_SECS,
            session_start_timeout_secs: DEFAULT_SESSION_START_TIMEOUT_SECS,
            inactivity_timeout_secs: DEFAULT_INACTIVITY_TIMEOUT_SECS,
            login_grace_secs: DEFAULT_LOGIN_GRACE_SECS,
            accept_env: vec![
                "LANG".into(),
                "LC_*".into(),
                "TZ".into(),
                "COLORTERM".into(),
            ],
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_unauthenticated_per_address: DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
            max_startups: DEFAULT_MAX_STARTUPS.into(),
            max_auth_tries: DEFAULT_MAX_AUTH_TRIES,
            client_alive_interval_secs: DEFAULT_CLIENT_ALIVE_INTERVAL_SECS,
            client_alive_count_max: DEFAULT_CLIENT_ALIVE_COUNT_MAX,
            proxy_protocol: ProxyProtocolConfig::default(),
            rate_limit: Default::default(),
            tls: Default::default(),
            http: String::new(),
            audit: Default::default(),
            recording: Default::default(),
            web: Default::default(),
        }
    }
}

/// A configuration that could not be read or is invalid. The message names
/// the file and every offending key.
pub use labssh_proto::config::ConfigError;

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        ConfigError::load(ConfigRole::Proxy, path, Self::from_toml_str)
    }

    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            role: ConfigRole::Proxy,
            path: None,
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reports every invalid value, each with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = self.audit.problems();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "listen: {:?} is not an address like 127.0.0.1:2222",
                self.listen
            ));
        }
        if self.host_keys.is_empty() {
            problems.push("host_keys: at least one host key file is required".into());
        }
        if self.users_file.as_os_str().is_empty() {
            problems.push("users_file: must not be empty".into());
        }
        if !(self.controller.starts_with("http://") || self.controller.starts_with("https://")) {
            problems.push(format!(
                "controller: {:?} must be an http:// or https:// URL",
                self.controller
            ));
        }
        if !self.redis_url.is_empty() {
            if let Err(e) = redis::Client::open(self.redis_url.as_str()) {
                problems.push(format!("redis_url: {e}"));
            }
        }
        for (key, value) in [
            ("controller_timeout_secs", self.controller_timeout_secs),
            (
                "session_start_timeout_secs",
                self.session_start_timeout_secs,
            ),
            ("inactivity_timeout_secs", self.inactivity_timeout_secs),
            ("login_grace_secs", self.login_grace_secs),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be greater than 0"));
            }
        }
        for (i, name) in self.accept_env.iter().enumerate() {
            let stem = name.strip_suffix('*').unwrap_or(name);
            if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                problems.push(format!(
                    "accept_env[{i}]: {name:?} is not a variable name or NAME_* prefix"
                ));
            }
        }
        problems.extend(self.auth.problems());
        problems.extend(self.web.problems());
        problems.extend(self.rate_limit.problems());
        problems.extend(self.tls.problems("tls"));
        if self.max_connections == 0 {
            problems.push("max_connections: must be greater than 0".into());
        }
        problems.extend(crate::preauth::problems(self));
        if let Err(p) = crate::proxy_protocol::parse_trusted(&self.proxy_protocol.trusted) {
            problems.extend(p);
        }
        if self.proxy_protocol.required && self.proxy_protocol.trusted.is_empty() {
            problems.push(
                "proxy_protocol.required: needs proxy_protocol.trusted to name the balancers"
                    .into(),
            );
        }
        ConfigError::check(ConfigRole::Proxy, problems)
    }

    /// Whether a client `env` request for `name` is accepted.
    pub fn env_allowed(&self, name: &str) -> bool {
        self.accept_env
            .iter()
            .any(|pat| match pat.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pat,
            })
    }

    pub(crate) fn auth_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.auth_cache_ttl_secs)
    }
    pub(crate) fn placement_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.placement_cache_secs)
    }
    pub(crate) fn controller_timeout(&self) -> Duration {
        Duration::from_secs(self.controller_timeout_secs)
    }
    pub(crate) fn session_start_timeout(&self) -> Duration {
        Duration::from_secs(self.session_start_timeout_secs)
    }
    pub(crate) fn login_grace(&self) -> Duration {
        Duration::from_secs(self.login_grace_secs)
    }
    /// `max_startups`, parsed (the default if invalid: `validate` reports it).
    pub(crate) fn max_startups(&self) -> crate::preauth::MaxStartups {
        self.max_startups
            .parse()
            .or_else(|_| DEFAULT_MAX_STARTUPS.parse())
            .expect("the default max_startups parses")
    }
    /// How often to send the client a keepalive, if at all.
    pub(crate) fn client_alive_interval(&self) -> Option<Duration> {
        (self.client_alive_interval_secs > 0)
            .then(|| Duration::from_secs(self.client_alive_interval_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml_str("listen = \"127.0.0.1:2222\"\nbogus_key = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus_key"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = Config::from_toml_str(
            "listen = \"nowhere\"\ncontroller = \"tcp://x\"\ncontroller_timeout_secs = 0\naccept_env = [\"BAD-NAME\"]\nlogin_grace_secs = 0\nmax_unauthenticated_per_address = 0\nmax_startups = \"10:30\"\nmax_auth_tries = 0\n",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "listen:",
            "controller:",
            "controller_timeout_secs:",
            "accept_env[0]:",
            "login_grace_secs:",
            "max_unauthenticated_per_address:",
            "max_startups:",
            "max_auth_tries:",
        ] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
    }

    #[test]
    fn limits_before_login_have_safe_defaults_and_read_from_toml() {
        let c = Config::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.max_startups().to_string(), DEFAULT_MAX_STARTUPS);
        assert_eq!(c.client_alive_interval(), Some(Duration::from_secs(15)));
        let c = Config::from_toml_str(
            "max_startups = \"1:100:2\"\nmax_auth_tries = 2\nclient_alive_interval_secs = 0\nclient_alive_count_max = 0\nmax_unauthenticated_per_address = 5\n",
        )
        .unwrap();
        assert_eq!(c.max_startups().to_string(), "1:100:2");
        assert_eq!(c.client_alive_interval(), None);
        assert_eq!(
            (c.max_auth_tries, c.max_unauthenticated_per_address),
            (2, 5)
        );
    }

    #[test]
    fn env_allow_list_matches_names_and_prefixes() {
        let c = Config::default();
        assert!(c.env_allowed("LANG"));
        assert!(c.env_allowed("LC_ALL"));
        assert!(!c.env_allowed("LD_PRELOAD"));
        assert!(!c.env_allowed("LANGUAGE_X"));
    }
}
