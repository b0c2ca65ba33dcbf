//! The controller's configuration: timing of the agent heartbeat protocol,
//! the placement knob and the environment catalogue.
//!
//! Loaded from TOML. Unknown keys are errors rather than warnings: a typo in
//! a resource limit (`memroy_mb`) would otherwise silently leave a student's
//! container unlimited.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use labssh_proto::pb;
use serde::Deserialize;

/// Where the binary listens for gRPC; a port of its own so it never clashes
/// with SSH (22) or the agents (7001).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7000";
/// One heartbeat a second keeps a dead agent's detection within a few seconds
/// at a cost of a few bytes per agent per second.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u32 = 1_000;
/// Three missed heartbeats tolerate a GC pause or a busy node without calling
/// a healthy agent dead, and still notice a dead one within ~3 s.
pub const DEFAULT_DEAD_AFTER_MISSED_HEARTBEATS: u32 = 3;
/// Lets an agent run 25% above its fair share before spilling over, which
/// keeps most users on their hashed node while bounding imbalance.
pub const DEFAULT_LOAD_EPSILON: f64 = 0.25;
/// The environment `ssh user@host` (no `+env`) lands in.
pub const DEFAULT_ENVIRONMENT: &str = "default";
/// A tiny image that starts fast and exists everywhere labssh is tested.
pub const DEFAULT_IMAGE: &str = "labssh/busybox:latest";
/// Enough for a shell, an editor and a compiler; not enough to starve the node.
pub const DEFAULT_MEMORY_MB: u64 = 512;
/// One CPU per student keeps a runaway loop from taking the whole node.
pub const DEFAULT_CPUS: f64 = 1.0;
/// Stops a fork bomb long before the node's PID table fills.
pub const DEFAULT_PIDS_LIMIT: u32 = 256;
/// The conventional first non-system user id, so files in the home volume get
/// a sensible owner.
pub const DEFAULT_UID: u32 = 1_000;
/// Matches [`DEFAULT_UID`]'s conventional primary group.
pub const DEFAULT_GID: u32 = 1_000;
/// Every image, even busybox, has a POSIX shell here.
pub const DEFAULT_SHELL: &str = "/bin/sh";
/// No home quota unless the operator sizes one: a limit nobody chose would lock
/// students out of their own work.
pub const DEFAULT_HOME_QUOTA_MB: u64 = 0;
/// No writable-layer quota unless the operator sizes one, for the same reason.
pub const DEFAULT_LAYER_QUOTA_MB: u64 = 0;

/// Longest environment name; it ends up in container names and labels,
/// which have length limits of their own.
const MAX_ENVIRONMENT_NAME_LEN: usize = 32;
/// Largest disk quota, in MiB: 1 EiB, so the byte count fits any counter.
const MAX_QUOTA_MB: u64 = 1 << 40;

/// The controller's whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address; used by the binary only, [`crate::run`] is handed
    /// an already bound listener.
    pub listen: SocketAddr,
    /// How often agents must send a heartbeat; told to them in `Welcome`.
    pub heartbeat_interval_ms: u32,
    /// An agent not heard from for this many heartbeat intervals is dead.
    pub dead_after_missed_heartbeats: u32,
    /// Bounded-load epsilon: an agent may hold up to `(1 + ε)` times its
    /// capacity-weighted share of all containers before placement spills over.
    pub load_epsilon: f64,
    /// Environment used when a login names none.
    pub default_environment: String,
    /// The environment catalogue, by name.
    pub environments: BTreeMap<String, EnvironmentConfig>,
    /// Listen address of the HTTP listener serving `/metrics`, `/healthz`
    /// and `/readyz` (used by the binary); empty means none.
    pub http: String,
    /// mTLS: the controller's certificate, and the CA its clients (agents,
    /// proxies) must be signed by. Empty means plain HTTP/2.
    pub tls: labssh_proto::tls::TlsFiles,
}

/// One environment a student can choose with `user+NAME@host`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentConfig {
    /// Container image; required (the default is empty so a missing image is
    /// reported by [`Config::validate`] instead of silently using busybox).
    pub image: String,
    /// Human-readable description shown in listings.
    pub description: String,
    /// Memory limit in MiB; 0 means unlimited.
    pub memory_mb: u64,
    /// CPU limit in CPUs (fractions allowed); 0 means unlimited.
    pub cpus: f64,
    /// Maximum number of processes; 0 means unlimited.
    pub pids_limit: u32,
    /// Capabilities granted back after dropping ALL, e.g. `"CHOWN"`.
    pub cap_add: Vec<String>,
    /// Run student processes as root instead of `uid`/`gid`.
    pub run_as_root: bool,
    /// User id student processes run as (unless `run_as_root`).
    pub uid: u32,
    /// Group id student processes run as (unless `run_as_root`).
    pub gid: u32,
    /// Login shell; also runs `ssh host 'cmd'` as `shell -c cmd`.
    pub shell: String,
    /// Command keeping the container alive; empty means the agent's default.
    pub keepalive_cmd: Vec<String>,
    /// Extra environment variables for every process.
    pub env: BTreeMap<String, String>,
    /// How processes start: "helper" (labssh-init in the container, fast) or "exec"
    /// (Docker exec); empty means "helper". Applies to containers created afterwards.
    pub spawn: String,
    /// Port forwarding (`ssh -L`, `-D`, `-R`): `[environments.NAME.forwarding]`.
    pub forwarding: ForwardingConfig,
    /// Disk quota of the student's home volume in MiB; 0 means none. Over it, new
    /// shell and exec sessions are refused (SFTP stays open to delete files).
    pub home_quota_mb: u64,
    /// Disk quota of the container's writable layer (files outside the home) in
    /// MiB; 0 means none. Enforced by the storage driver where it supports a size
    /// limit, else measured and enforced like the home quota.
    pub layer_quota_mb: u64,
}

/// What port forwarding an environment allows. The default: `ssh -L`, `-D` and `-R`
/// on, to and from the student's own container only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardingConfig {
    /// `ssh -L` and `ssh -D`.
    pub local: bool,
    /// `ssh -R`: listening inside the container.
    pub remote: bool,
    /// Destinations besides the container itself, `"HOST:PORT"` (HOST a name, an
    /// address, a CIDR block or `*`; PORT a number, `A-B` or `*`). The agent's host,
    /// other containers and link-local addresses stay unreachable whatever this says.
    pub allow: Vec<String>,
    /// `ssh -R` may listen on all the container's addresses, not only loopback.
    pub gateway_ports: bool,
}

impl Default for ForwardingConfig {
    fn default() -> Self {
        ForwardingConfig {
            local: true,
            remote: true,
            allow: Vec::new(),
            gateway_ports: false,
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read controller config {}: {source}", path.display())]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The text is not valid TOML, or has an unknown key or a value of the
    /// wrong type; toml's message names the key and shows the line.
    #[error("invalid controller config {origin}: {source}")]
    Parse {
        /// The file path, or `<string>` for [`Config::from_toml_str`].
        origin: String,
        /// toml's error, naming the offending key/value.
        source: toml::de::Error,
    },
    /// The configuration parsed but breaks one or more rules.
    #[error("{}", Problems(problems))]
    Invalid {
        /// Every problem found, each starting with the key it is about.
        problems: Vec<String>,
    },
}

/// Formats the problem list of [`ConfigError::Invalid`], one per line.
struct Problems<'a>(&'a [String]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid controller config ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        let default_env = EnvironmentConfig {
            image: DEFAULT_IMAGE.to_string(),
            description: "Busybox shell".to_string(),
            ..EnvironmentConfig::default()
        };
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("DEFAULT_LISTEN is a socket address"),
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            dead_after_missed_heartbeats: DEFAULT_DEAD_AFTER_MISSED_HEARTBEATS,
            load_epsilon: DEFAULT_LOAD_EPSILON,
            default_environment: DEFAULT_ENVIRONMENT.to_string(),
            environments: BTreeMap::from([(DEFAULT_ENVIRONMENT.to_string(), default_env)]),
            http: String::new(),
            tls: Default::default(),
        }
    }
}

impl Default for EnvironmentConfig {
    fn default() -> Self {
        Self {
            image: String::new(),
            description: String::new(),
            memory_mb: DEFAULT_MEMORY_MB,
            cpus: DEFAULT_CPUS,
            pids_limit: DEFAULT_PIDS_LIMIT,
            cap_add: Vec::new(),
            run_as_root: false,
            uid: DEFAULT_UID,
            gid: DEFAULT_GID,
            shell: DEFAULT_SHELL.to_string(),
            keepalive_cmd: Vec::new(),
            env: BTreeMap::new(),
            spawn: String::new(),
            forwarding: ForwardingConfig::default(),
            home_quota_mb: DEFAULT_HOME_QUOTA_MB,
            layer_quota_mb: DEFAULT_LAYER_QUOTA_MB,
        }
    }
}

impl Config {
    /// Parses and validates a TOML configuration. Missing keys take their
    /// defaults; a file without `[environments]` gets the default catalogue.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, "<string>")
    }

    /// Reads, parses and validates the TOML file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|source| ConfigError::Parse {
            origin: origin.to_string(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule and reports every broken one, each naming its key.
    ///
    /// `uid = 0` without `run_as_root = true` is an error rather than a
    /// warning: it would run students as root while the config claims not to.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = self.tls.problems("tls");
        if self.heartbeat_interval_ms == 0 {
            problems.push("heartbeat_interval_ms: must be > 0".to_string());
        }
        if self.dead_after_missed_heartbeats == 0 {
            problems.push("dead_after_missed_heartbeats: must be >= 1".to_string());
        }
        if !(self.load_epsilon.is_finite() && self.load_epsilon > 0.0) {
            problems.push(format!(
                "load_epsilon: must be > 0 (got {})",
                self.load_epsilon
            ));
        }
        if self.environments.is_empty() {
            problems.push("environments: at least one environment is required".to_string());
        } else if !self.environments.contains_key(&self.default_environment) {
            problems.push(format!(
                "default_environment: {:?} is not one of the environments ({})",
                self.default_environment,
                self.environment_names().join(", ")
            ));
        }
        for (name, env) in &self.environments {
            env.check(name, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// How often agents must report.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.into())
    }

    /// Silence after which an agent counts as dead.
    pub fn dead_after(&self) -> Duration {
        self.heartbeat_interval() * self.dead_after_missed_heartbeats
    }

    /// Environment names in sorted order.
    pub fn environment_names(&self) -> Vec<&str> {
        // BTreeMap keys are already sorted.
        self.environments.keys().map(String::as_str).collect()
    }
}

impl EnvironmentConfig {
    /// The wire form agents receive in `Welcome`.
    pub fn to_proto(&self, name: &str) -> pb::Environment {
        pb::Environment {
            name: name.to_string(),
            image: self.image.clone(),
            memory_bytes: self.memory_bytes(),
            // Rounded so 0.5 CPUs is exactly 500_000_000, not 499_999_999.
            nano_cpus: (self.cpus * 1e9).round() as i64,
            pids_limit: self.pids_limit.into(),
            cap_add: self.cap_add.clone(),
            run_as_root: self.run_as_root,
            uid: self.uid,
            gid: self.gid,
            shell: self.shell.clone(),
            keepalive_cmd: self.keepalive_cmd.clone(),
            env: self.env.clone().into_iter().collect(),
            description: self.description.clone(),
            spawn: self.spawn.clone(),
            forwarding: Some(pb::ForwardingPolicy {
                local: self.forwarding.local,
                remote: self.forwarding.remote,
                allow: self.forwarding.allow.clone(),
                gateway_ports: self.forwarding.gateway_ports,
            }),
            home_quota_mb: self.home_quota_mb,
            layer_quota_mb: self.layer_quota_mb,
        }
    }

    fn memory_bytes(&self) -> i64 {
        i64::try_from(self.memory_mb)
            .ok()
            .and_then(|mb| mb.checked_mul(1024 * 1024))
            .unwrap_or(i64::MAX)
    }

    /// Appends this environment's problems, each prefixed with its key.
    fn check(&self, name: &str, problems: &mut Vec<String>) {
        let key = |field: &str| format!("environments.{name}.{field}");
        if !is_valid_environment_name(name) {
            problems.push(format!(
                "environments.{name}: name must match [a-z0-9][a-z0-9_-]{{0,{}}}",
                MAX_ENVIRONMENT_NAME_LEN - 1
            ));
        }
        if self.image.trim().is_empty() {
            problems.push(format!("{}: must not be empty", key("image")));
        } else if self.image.chars().any(char::is_whitespace) {
            problems.push(format!(
                "{}: {:?} must not contain whitespace",
                key("image"),
                self.image
            ));
        }
        if !(self.cpus.is_finite() && self.cpus >= 0.0) {
            problems.push(format!("{}: must be >= 0 (got {})", key("cpus"), self.cpus));
        } else if self.cpus * 1e9 > i64::MAX as f64 {
            problems.push(format!("{}: {} is too large", key("cpus"), self.cpus));
        }
        if i64::try_from(self.memory_mb)
            .ok()
            .and_then(|mb| mb.checked_mul(1024 * 1024))
            .is_none()
        {
            problems.push(format!(
                "{}: {} is too large",
                key("memory_mb"),
                self.memory_mb
            ));
        }
        for cap in &self.cap_add {
            if cap.eq_ignore_ascii_case("ALL") || cap.eq_ignore_ascii_case("CAP_ALL") {
                problems.push(format!(
                    "{}: \"ALL\" would undo dropping capabilities; list the ones needed",
                    key("cap_add")
                ));
            } else if !is_valid_capability(cap) {
                problems.push(format!(
                    "{}: {cap:?} is not a capability name like \"CHOWN\" or \"NET_BIND_SERVICE\"",
                    key("cap_add")
                ));
            }
        }
        if self.uid == 0 && !self.run_as_root {
            problems.push(format!(
                "{}: 0 is root; set run_as_root = true to run students as root",
                key("uid")
            ));
        }
        if !self.shell.starts_with('/') {
            problems.push(format!(
                "{}: {:?} must be an absolute path",
                key("shell"),
                self.shell
            ));
        }
        if self.keepalive_cmd.first().is_some_and(|c| c.is_empty()) {
            problems.push(format!(
                "{}: the program (first element) must not be empty",
                key("keepalive_cmd")
            ));
        }
        if !matches!(self.spawn.as_str(), "" | "helper" | "exec") {
            problems.push(format!(
                "{}: {:?} must be \"helper\" or \"exec\"",
                key("spawn"),
                self.spawn
            ));
        }
        for (field, mb) in [
            ("home_quota_mb", self.home_quota_mb),
            ("layer_quota_mb", self.layer_quota_mb),
        ] {
            if mb > MAX_QUOTA_MB {
                problems.push(format!(
                    "{}: {mb} is too large (at most {MAX_QUOTA_MB}; 0 means no quota)",
                    key(field)
                ));
            }
        }
        let (_, bad_rules) = labssh_proto::forwarding::parse_all(&self.forwarding.allow);
        for problem in bad_rules {
            problems.push(format!("{}: {problem}", key("forwarding.allow")));
        }
        for (var, value) in &self.env {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                problems.push(format!(
                    "{}: {var:?} is not a valid variable name",
                    key("env")
                ));
            } else if value.contains('\0') {
                problems.push(format!(
                    "{}.{var}: value must not contain a NUL byte",
                    key("env")
                ));
            }
        }
    }
}

/// `[a-z0-9][a-z0-9_-]{0,31}`: safe in container names, labels and the
/// `user+env` login syntax.
fn is_valid_environment_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= MAX_ENVIRONMENT_NAME_LEN
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.iter().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-'
                })
        }
        None => false,
    }
}

/// Capability names as Docker and Kubernetes take them, with or without the
/// `CAP_` prefix: upper-case letters, digits and underscores.
fn is_valid_capability(cap: &str) -> bool {
    let mut chars = cap.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &Config) -> Vec<String> {
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(ConfigError::Invalid { problems }) => problems,
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn default_is_valid() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.environment_names(), ["default"]);
        assert_eq!(config.environments["default"].image, DEFAULT_IMAGE);
        assert_eq!(config.dead_after(), Duration::from_secs(3));
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn full_example_parses() {
        let config = Config::from_toml_str(
            r#"
            listen = "0.0.0.0:7000"
            heartbeat_interval_ms = 500
            dead_after_missed_heartbeats = 4
            load_epsilon = 0.5
            default_environment = "default"

            [environments.default]
            image = "labssh/busybox:latest"
            description = "Busybox shell"

            [environments.gpu]
            image = "labssh/cuda:12"
            memory_mb = 0
            cpus = 2.5
            pids_limit = 0
            cap_add = ["SYS_PTRACE"]
            shell = "/bin/bash"
            keepalive_cmd = ["sleep", "infinity"]
            env = { CUDA_VISIBLE_DEVICES = "0" }
            spawn = "exec"
            home_quota_mb = 2048
            layer_quota_mb = 512
            "#,
        )
        .unwrap();
        assert_eq!(config.environment_names(), ["default", "gpu"]);
        let gpu = config.environments["gpu"].to_proto("gpu");
        assert_eq!(gpu.name, "gpu");
        assert_eq!(gpu.nano_cpus, 2_500_000_000);
        assert_eq!(gpu.memory_bytes, 0);
        assert_eq!(gpu.uid, DEFAULT_UID);
        assert_eq!(gpu.env["CUDA_VISIBLE_DEVICES"], "0");
        assert_eq!(gpu.spawn, "exec");
        assert_eq!((gpu.home_quota_mb, gpu.layer_quota_mb), (2048, 512));
        let default = config.environments["default"].to_proto("default");
        assert_eq!(default.memory_bytes, 512 * 1024 * 1024);
        assert_eq!(default.pids_limit, 256);
        assert_eq!((default.home_quota_mb, default.layer_quota_mb), (0, 0));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml_str("heartbeat_ms = 5").unwrap_err();
        assert!(err.to_string().contains("heartbeat_ms"), "{err}");
        let err = Config::from_toml_str("[environments.default]\nimage = \"x\"\nmemroy_mb = 1\n")
            .unwrap_err();
        assert!(err.to_string().contains("memroy_mb"), "{err}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.toml");
        std::fs::write(&path, "load_epsilon = \"high\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("controller.toml"), "{err}");
        assert!(err.contains("load_epsilon"), "{err}");
        let err = Config::load(dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.toml"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem() {
        let mut config = Config {
            heartbeat_interval_ms: 0,
            dead_after_missed_heartbeats: 0,
            load_epsilon: 0.0,
            default_environment: "foo".to_string(),
            ..Config::default()
        };
        config.environments.insert(
            "gpu".to_string(),
            EnvironmentConfig {
                cpus: -1.0,
                uid: 0,
                shell: "bash".to_string(),
                cap_add: vec!["ALL".to_string(), "net admin".to_string()],
                home_quota_mb: u64::MAX,
                ..EnvironmentConfig::default()
            },
        );
        config.environments.insert(
            "Bad.Name".to_string(),
            config.environments["default"].clone(),
        );
        let problems = problems(&config);
        let expected = [
            "heartbeat_interval_ms: must be > 0",
            "dead_after_missed_heartbeats: must be >= 1",
            "load_epsilon: must be > 0",
            r#"default_environment: "foo" is not one of the environments (Bad.Name, default, gpu)"#,
            "environments.Bad.Name: name must match",
            "environments.gpu.image: must not be empty",
            "environments.gpu.cpus: must be >= 0",
            "environments.gpu.uid: 0 is root",
            "environments.gpu.shell: \"bash\" must be an absolute path",
            "environments.gpu.cap_add: \"ALL\"",
            "environments.gpu.cap_add: \"net admin\"",
            "environments.gpu.home_quota_mb: 18446744073709551615 is too large",
        ];
        for want in expected {
            assert!(
                problems.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        let text = config.validate().unwrap_err().to_string();
        assert!(text.contains("12 problems"), "{text}");
    }

    #[test]
    fn spawn_is_helper_or_exec() {
        let mut config = Config::default();
        config.environments.get_mut("default").unwrap().spawn = "docker".to_string();
        assert_eq!(
            problems(&config),
            [r#"environments.default.spawn: "docker" must be "helper" or "exec""#]
        );
    }

    #[test]
    fn root_is_allowed_when_asked_for() {
        let mut config = Config::default();
        let env = config.environments.get_mut("default").unwrap();
        env.uid = 0;
        env.gid = 0;
        env.run_as_root = true;
        config.validate().unwrap();
    }

    #[test]
    fn no_environments_is_an_error() {
        let config = Config {
            environments: BTreeMap::new(),
            ..Config::default()
        };
        assert_eq!(
            problems(&config),
            ["environments: at least one environment is required"]
        );
    }

    #[test]
    fn environment_names() {
        for good in ["default", "gpu", "0", "a-b_c", &"a".repeat(32)] {
            assert!(is_valid_environment_name(good), "{good}");
        }
        for bad in ["", "Gpu", "-a", "_a", "a.b", "a b", "a+b", &"a".repeat(33)] {
            assert!(!is_valid_environment_name(bad), "{bad}");
        }
    }
}
