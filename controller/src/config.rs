//! The controller's configuration: timing of the agent heartbeat protocol,
//! the placement knob and the environment catalogue.
//!
//! Loaded from TOML. Unknown keys are errors rather than warnings: a typo in
//! a resource limit (`memroy_mb`) would otherwise silently leave a student's
//! container unlimited.

mod environment;
mod schedule;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use labssh_proto::config::ConfigRole;
use serde::Deserialize;

pub use environment::{
    EgressConfig, EnvironmentConfig, ForwardingConfig, GpusConfig, IdSetting, NetworkConfig,
    RlimitConfig, Seccomp, DEFAULT_CPUS, DEFAULT_GID, DEFAULT_HOME_QUOTA_MB,
    DEFAULT_LAYER_QUOTA_MB, DEFAULT_MEMORY_MB, DEFAULT_PIDS_LIMIT, DEFAULT_SHELL, DEFAULT_UID,
};
pub use labssh_proto::config::ConfigError;
pub use schedule::{
    OneOrMany, ScheduleEntry, DEFAULT_PRESTART_CONCURRENCY, MAX_PRESTART_CONCURRENCY,
};

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
/// Chance's spread allowed above a share: 2.5 standard deviations, which ε
/// covers from a share of 100 containers an agent up.
pub const DEFAULT_LOAD_SIGMAS: f64 = 2.5;
/// The environment `ssh user@host` (no `+env`) lands in.
pub const DEFAULT_ENVIRONMENT: &str = "default";
/// A tiny image that starts fast and exists everywhere labssh is tested.
pub const DEFAULT_IMAGE: &str = "labssh/busybox:latest";
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
    /// Bounded loads also let an agent go this many standard deviations
    /// (`√share`) above its share of the containers, where that is more than ε
    /// allows: small shares are then not bound tighter than chance spreads
    /// them, which keeps placement the same whatever the login order and when
    /// an agent joins or leaves. 0 is the strict `(1 + ε)` bound (tightest
    /// balance, most users moved); see BENCHMARKS.md, "Placement".
    pub load_sigmas: f64,
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
    /// The proxies' users file, read for the members of a group
    /// (`labssh prestart --group`, `[[schedule]] group`); empty means none.
    pub users_file: std::path::PathBuf,
    /// Ensures in flight at once per agent for a prestart that names none.
    pub prestart_concurrency: u32,
    /// The timetable: classes whose containers are prestarted before they begin.
    pub schedule: Vec<ScheduleEntry>,
    /// The audit log (`[audit]`): operators' actions (drain, prestart, kick,
    /// watch, container actions) as JSON lines, as the proxies write theirs.
    pub audit: labssh_telemetry::audit::AuditConfig,
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
            load_sigmas: DEFAULT_LOAD_SIGMAS,
            default_environment: DEFAULT_ENVIRONMENT.to_string(),
            environments: BTreeMap::from([(DEFAULT_ENVIRONMENT.to_string(), default_env)]),
            http: String::new(),
            tls: Default::default(),
            users_file: Default::default(),
            prestart_concurrency: DEFAULT_PRESTART_CONCURRENCY,
            schedule: Vec::new(),
            audit: Default::default(),
        }
    }
}

impl Config {
    /// Parses and validates a TOML configuration. Missing keys take their
    /// defaults; a file without `[environments]` gets the default catalogue.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            role: ConfigRole::Controller,
            path: None,
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the TOML file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        ConfigError::load(ConfigRole::Controller, path.as_ref(), Self::from_toml_str)
    }

    /// Checks every rule and reports every broken one, each naming its key.
    ///
    /// `uid = 0` without `run_as_root = true` is an error rather than a
    /// warning: it would run students as root while the config claims not to.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = self.tls.problems("tls");
        problems.extend(self.audit.problems());
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
        if !(self.load_sigmas.is_finite() && self.load_sigmas >= 0.0) {
            problems.push(format!(
                "load_sigmas: must be >= 0 (got {})",
                self.load_sigmas
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
        schedule::check_concurrency(self.prestart_concurrency, &mut problems);
        schedule::check(
            &self.schedule,
            &self.environment_names(),
            self.users_file(),
            &mut problems,
        );
        ConfigError::check(ConfigRole::Controller, problems)
    }

    /// How often agents must report.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.into())
    }

    /// Silence after which an agent counts as dead.
    pub fn dead_after(&self) -> Duration {
        self.heartbeat_interval() * self.dead_after_missed_heartbeats
    }

    /// The users file groups are read from, if one is configured.
    pub fn users_file(&self) -> Option<&std::path::PathBuf> {
        Some(&self.users_file).filter(|p| !p.as_os_str().is_empty())
    }

    /// Environment names in sorted order.
    pub fn environment_names(&self) -> Vec<&str> {
        // BTreeMap keys are already sorted.
        self.environments.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &Config) -> Vec<String> {
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => problems,
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
            load_sigmas = 0
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
        assert_eq!((config.load_epsilon, config.load_sigmas), (0.5, 0.0));
        assert_eq!(config.environment_names(), ["default", "gpu"]);
        let gpu = config.environments["gpu"].to_proto("gpu");
        assert_eq!(gpu.name, "gpu");
        assert_eq!(gpu.nano_cpus, 2_500_000_000);
        assert_eq!(gpu.memory_bytes, 0);
        assert_eq!(gpu.uid, DEFAULT_UID);
        assert!(!gpu.uid_from_identity && gpu.allowed_groups.is_empty());
        assert_eq!(gpu.env["CUDA_VISIBLE_DEVICES"], "0");
        assert_eq!(gpu.spawn, "exec");
        assert_eq!((gpu.home_quota_mb, gpu.layer_quota_mb), (2048, 512));
        let default = config.environments["default"].to_proto("default");
        assert_eq!(default.memory_bytes, 512 * 1024 * 1024);
        assert_eq!(default.pids_limit, 256);
        assert_eq!((default.home_quota_mb, default.layer_quota_mb), (0, 0));
    }

    #[test]
    fn groups_and_ids_from_the_identity_reach_the_wire() {
        let config = Config::from_toml_str(
            r#"
            [environments.default]
            image = "labssh/busybox"
            [environments.nfs]
            image = "labssh/busybox"
            uid = "ldap"
            allowed_groups = ["cs101", "staff"]
            [environments.mixed]
            image = "labssh/busybox"
            uid = 1000
            gid = "ldap"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        let nfs = config.environments["nfs"].to_proto("nfs");
        assert_eq!((nfs.uid, nfs.gid), (0, 0));
        assert!(nfs.uid_from_identity && nfs.gid_from_identity);
        assert_eq!(nfs.allowed_groups, ["cs101", "staff"]);
        let mixed = config.environments["mixed"].to_proto("mixed");
        assert_eq!((mixed.uid, mixed.uid_from_identity), (1000, false));
        assert!(mixed.gid_from_identity);
        let err = Config::from_toml_str(
            "[environments.default]
image = \"x\"\nuid = \"nobody\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("uid") && err.contains("\"ldap\""), "{err}");
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
            load_sigmas: -1.0,
            default_environment: "foo".to_string(),
            ..Config::default()
        };
        config.environments.insert(
            "gpu".to_string(),
            EnvironmentConfig {
                cpus: -1.0,
                uid: 0.into(),
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
            "load_sigmas: must be >= 0",
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
        assert!(text.contains("13 problems"), "{text}");
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
        env.uid = 0.into();
        env.gid = Some(0.into());
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
}
