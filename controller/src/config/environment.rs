//! One environment of the catalogue: its image, limits, identity, forwarding
//! policy, quotas and network, as configured, checked and sent to agents.

mod gpus;
mod hooks;
mod ids;
mod isolation;
mod lifecycle;
mod network;

use std::collections::BTreeMap;

use labssh_proto::duration::ConfigDuration;
use labssh_proto::pb;
use serde::Deserialize;

pub use gpus::GpusConfig;
pub use hooks::HookConfig;
pub use ids::IdSetting;
pub use isolation::{RlimitConfig, Rlimits, Seccomp};
pub use lifecycle::{LifecycleKeys, DEFAULT_IDLE_CPU_PERCENT};
pub use network::{EgressConfig, NetworkConfig};

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

/// One environment a student can choose with `user+NAME@host`.
/// What an environment's `record` may say.
const RECORD_MODES: [&str; 3] = ["off", "output", "input-and-output"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentConfig {
    /// Container image; required (the default is empty so a missing image is
    /// reported by [`super::Config::validate`] instead of silently using busybox).
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
    /// User id student processes run as (unless `run_as_root`), or `"ldap"`: the
    /// login's identity's (see `ids.rs`).
    pub uid: IdSetting,
    /// Group id student processes run as (unless `run_as_root`), or `"ldap"`;
    /// absent: [`DEFAULT_GID`], or the identity's when `uid = "ldap"`.
    pub gid: Option<IdSetting>,
    /// Only students in one of these groups may use it; empty: everyone.
    pub allowed_groups: Vec<String>,
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
    /// Agent forwarding (`ssh -A`): a socket in the container, owned by the student,
    /// whose connections reach the client's agent. On unless turned off.
    pub forward_agent: bool,
    /// X11 forwarding (`ssh -X`, `ssh -Y`): a display on the container's loopback
    /// whose connections reach the client's X server. On unless turned off.
    pub forward_x11: bool,
    /// Session recording of pty sessions by the proxy: "off", "output" or
    /// "input-and-output".
    pub record: String,
    /// Disk quota of the student's home volume in MiB; 0 means none. Over it, new
    /// shell and exec sessions are refused (SFTP stays open to delete files).
    pub home_quota_mb: u64,
    /// Disk quota of the container's writable layer (files outside the home) in
    /// MiB; 0 means none. Enforced by the storage driver where it supports a size
    /// limit, else measured and enforced like the home quota.
    pub layer_quota_mb: u64,
    /// Where its containers' traffic may go: `[environments.NAME.network]`.
    pub network: NetworkConfig,
    /// Commands and webhooks run on lifecycle events and timers:
    /// `[[environments.NAME.hooks]]`, in the order given.
    pub hooks: Vec<HookConfig>,
    // Isolation and GPUs (issue 12): checked and converted in `isolation.rs`, `gpus.rs`.
    /// `"default"`, `"unconfined"` or a seccomp profile file, read when parsed.
    pub seccomp: Seccomp,
    /// setrlimit for every process, by name: `nofile`, `nproc`, `core`, `fsize`, `cpu`.
    pub rlimits: Rlimits,
    /// The root filesystem is read-only; the home and `tmpfs` stay writable.
    pub read_only_root: bool,
    /// tmpfs mounts, `"PATH"` or `"PATH:OPTIONS"` (e.g. `"/tmp:size=512m"`).
    pub tmpfs: Vec<String>,
    /// Size of /dev/shm as Docker writes it (`"256m"`); empty is the runtime's default.
    pub shm_size: String,
    /// Shared course data, `"VOLUME:/path"`: Docker volumes mounted read-only.
    pub mounts: Vec<String>,
    /// Host devices: `"/dev/fuse"` or `"HOST:CONTAINER[:rwm]"`.
    pub devices: Vec<String>,
    /// GPUs each container takes: a count, `"all"` or device ids; none when absent.
    pub gpus: Option<GpusConfig>,
    // Lifecycle (see `lifecycle.rs`): off unless set.
    /// Paused (frozen, memory kept) after this long with no session, forward or
    /// `ssh -R` listener and CPU under `idle_cpu_percent`.
    pub idle_pause_after: Option<ConfigDuration>,
    /// CPU use (percent of one CPU) under which a container counts as idle.
    pub idle_cpu_percent: u32,
    /// Stopped (home kept) after this long idle.
    pub idle_stop_after: Option<ConfigDuration>,
    /// Recreated (home kept) at the next login with no open session once this old.
    pub max_age: Option<ConfigDuration>,
    /// The longest a student may postpone idling from inside (`~/.labssh-keepalive`).
    pub max_keepalive: Option<ConfigDuration>,
    /// Friendly names of ports its containers serve, `jupyter = 8888`: listed with
    /// the services (`labssh services`), and `jupyter-alice` names alice's port 8888.
    pub services: BTreeMap<String, u32>,
    /// Groups whose members (a course's TAs, staff) may read this environment's
    /// students' services in the browser: GET and HEAD, no WebSocket.
    pub service_readers: Vec<String>,
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
            uid: IdSetting::Number(DEFAULT_UID),
            gid: None,
            allowed_groups: Vec::new(),
            shell: DEFAULT_SHELL.to_string(),
            keepalive_cmd: Vec::new(),
            env: BTreeMap::new(),
            spawn: String::new(),
            forwarding: ForwardingConfig::default(),
            forward_agent: true,
            forward_x11: true,
            record: "off".to_string(),
            home_quota_mb: DEFAULT_HOME_QUOTA_MB,
            layer_quota_mb: DEFAULT_LAYER_QUOTA_MB,
            network: NetworkConfig::default(),
            hooks: Vec::new(),
            seccomp: Seccomp::Default,
            rlimits: Rlimits::new(),
            read_only_root: false,
            tmpfs: Vec::new(),
            shm_size: String::new(),
            mounts: Vec::new(),
            devices: Vec::new(),
            gpus: None,
            idle_pause_after: None,
            idle_cpu_percent: DEFAULT_IDLE_CPU_PERCENT,
            idle_stop_after: None,
            max_age: None,
            max_keepalive: None,
            services: BTreeMap::new(),
            service_readers: Vec::new(),
        }
    }
}

impl EnvironmentConfig {
    /// The wire form agents receive in `Welcome`.
    pub fn to_proto(&self, name: &str) -> pb::Environment {
        let (uid, gid) = self.ids();
        pb::Environment {
            name: name.to_string(),
            image: self.image.clone(),
            memory_bytes: self.memory_bytes(),
            // Rounded so 0.5 CPUs is exactly 500_000_000, not 499_999_999.
            nano_cpus: (self.cpus * 1e9).round() as i64,
            pids_limit: self.pids_limit.into(),
            cap_add: self.cap_add.clone(),
            run_as_root: self.run_as_root,
            uid: uid.wire(),
            gid: gid.wire(),
            uid_from_identity: uid.from_identity(),
            record: self.record.clone(),
            gid_from_identity: gid.from_identity(),
            allowed_groups: self.allowed_groups.clone(),
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
                forward_agent: self.forward_agent,
                forward_x11: self.forward_x11,
            }),
            home_quota_mb: self.home_quota_mb,
            layer_quota_mb: self.layer_quota_mb,
            network: Some(self.network.to_proto()),
            lifecycle: self.lifecycle().to_proto(),
            hooks: self.hooks.iter().map(HookConfig::to_proto).collect(),
            isolation: self.isolation_to_proto(),
            gpus: self.gpus.as_ref().map(GpusConfig::to_proto),
            service_names: self.services.clone().into_iter().collect(),
            service_readers: self.service_readers.clone(),
        }
    }

    /// The uid and gid settings, the gid's default filled in.
    pub fn ids(&self) -> (IdSetting, IdSetting) {
        ids::resolve(self.uid, self.gid, DEFAULT_GID)
    }

    /// The lifecycle keys, for checking and the wire.
    fn lifecycle(&self) -> LifecycleKeys {
        LifecycleKeys {
            idle_pause_after: self.idle_pause_after,
            idle_cpu_percent: self.idle_cpu_percent,
            idle_stop_after: self.idle_stop_after,
            max_age: self.max_age,
            max_keepalive: self.max_keepalive,
        }
    }

    /// The memory limit in bytes; a limit too large to count in bytes is none.
    fn memory_bytes(&self) -> i64 {
        self.checked_memory_bytes().unwrap_or(i64::MAX)
    }

    /// The memory limit in bytes, if it fits.
    fn checked_memory_bytes(&self) -> Option<i64> {
        i64::try_from(self.memory_mb)
            .ok()
            .and_then(|mb| mb.checked_mul(1024 * 1024))
    }

    /// Appends this environment's problems, each prefixed with its key.
    pub(crate) fn check(&self, name: &str, problems: &mut Vec<String>) {
        if !is_valid_environment_name(name) {
            problems.push(format!(
                "environments.{name}: name must match [a-z0-9][a-z0-9_-]{{0,{}}}",
                MAX_ENVIRONMENT_NAME_LEN - 1
            ));
        }
        let key = |field: &str| format!("environments.{name}.{field}");
        self.check_resources(&key, problems);
        self.check_processes(&key, problems);
        self.check_data(&key, problems);
        for (i, hook) in self.hooks.iter().enumerate() {
            hook.check(&key(&format!("hooks[{i}]")), problems);
        }
        self.check_isolation(&key, problems);
        if !RECORD_MODES.contains(&self.record.as_str()) {
            problems.push(format!(
                "{}: {:?} is not one of {}",
                key("record"),
                self.record,
                RECORD_MODES.join(", ")
            ));
        }
        if let Some(gpus) = &self.gpus {
            gpus.check(&key("gpus"), problems);
        }
        self.lifecycle().check(&key, problems);
        self.check_services(&key, problems);
    }

    /// The friendly names of ports: each a valid label for one real port; the
    /// readers' groups, valid group names.
    fn check_services(&self, key: &dyn Fn(&str) -> String, problems: &mut Vec<String>) {
        use labssh_proto::services::{valid_label, LABEL_RULE};
        for group in &self.service_readers {
            if !labssh_proto::names::valid_group(group) {
                problems.push(format!(
                    "{}: {group:?} is not a group name ({})",
                    key("service_readers"),
                    labssh_proto::names::GROUP_RULE
                ));
            }
        }
        for (label, port) in &self.services {
            if !valid_label(label) {
                problems.push(format!(
                    "{}: {label:?} is not a service name ({LABEL_RULE})",
                    key("services")
                ));
            }
            if !(1..=65535).contains(port) {
                problems.push(format!(
                    "{}.{label}: {port} is not a TCP port (1-65535)",
                    key("services")
                ));
            }
        }
    }

    /// The image, CPU and memory limits.
    fn check_resources(&self, key: &dyn Fn(&str) -> String, problems: &mut Vec<String>) {
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
        if self.checked_memory_bytes().is_none() {
            problems.push(format!(
                "{}: {} is too large",
                key("memory_mb"),
                self.memory_mb
            ));
        }
    }

    /// What student processes run as and how they start.
    fn check_processes(&self, key: &dyn Fn(&str) -> String, problems: &mut Vec<String>) {
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
        ids::check(
            key,
            self.ids(),
            self.run_as_root,
            &self.allowed_groups,
            problems,
        );
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
    }

    /// Disk quotas, forwarding rules and environment variables.
    fn check_data(&self, key: &dyn Fn(&str) -> String, problems: &mut Vec<String>) {
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
        self.network.check(&key("network.egress"), problems);
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

    #[test]
    fn environment_names() {
        for good in ["default", "gpu", "0", "a-b_c", &"a".repeat(32)] {
            assert!(is_valid_environment_name(good), "{good}");
        }
        for bad in ["", "Gpu", "-a", "_a", "a.b", "a b", "a+b", &"a".repeat(33)] {
            assert!(!is_valid_environment_name(bad), "{bad}");
        }
    }

    #[test]
    fn agent_forwarding_is_on_unless_turned_off() {
        let on: EnvironmentConfig = toml::from_str(r#"image = "busybox""#).unwrap();
        let policy = on.to_proto("default").forwarding.unwrap();
        assert!(policy.forward_agent);
        let off: EnvironmentConfig =
            toml::from_str("image = \"busybox\"\nforward_agent = false").unwrap();
        let policy = off.to_proto("default").forwarding.unwrap();
        assert!(!policy.forward_agent);
        // Only agent forwarding is off.
        assert!(policy.local && policy.remote && policy.forward_x11);
    }

    #[test]
    fn record_is_off_unless_set_and_only_its_three_words_are_taken() {
        let off: EnvironmentConfig = toml::from_str(r#"image = "busybox""#).unwrap();
        assert_eq!(off.to_proto("default").record, "off");
        for mode in RECORD_MODES {
            let env: EnvironmentConfig =
                toml::from_str(&format!("image = \"busybox\"\nrecord = \"{mode}\"")).unwrap();
            let mut problems = Vec::new();
            env.check("exam", &mut problems);
            assert!(problems.is_empty(), "{mode}: {problems:?}");
            assert_eq!(env.to_proto("exam").record, mode);
        }
        let bad: EnvironmentConfig =
            toml::from_str("image = \"busybox\"\nrecord = \"everything\"").unwrap();
        let mut problems = Vec::new();
        bad.check("exam", &mut problems);
        assert_eq!(
            problems,
            vec!["environments.exam.record: \"everything\" is not one of off, output, input-and-output"]
        );
    }

    #[test]
    fn services_get_friendly_names_that_are_checked() {
        let env: EnvironmentConfig =
            toml::from_str("image = \"busybox\"\nservices = { jupyter = 8888, web = 3000 }")
                .unwrap();
        let mut problems = Vec::new();
        env.check("jupyter", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let names = env.to_proto("jupyter").service_names;
        assert_eq!(names.get("jupyter"), Some(&8888));
        assert_eq!(names.get("web"), Some(&3000));
        let bad: EnvironmentConfig =
            toml::from_str("image = \"busybox\"\n[services]\nmy-app = 8080\nweb = 70000").unwrap();
        let mut problems = Vec::new();
        bad.check("exam", &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("environments.exam.services: \"my-app\" is not a service name"),
            "{problems:?}"
        );
        assert_eq!(
            problems[1],
            "environments.exam.services.web: 70000 is not a TCP port (1-65535)"
        );
    }

    #[test]
    fn x11_forwarding_is_on_unless_turned_off() {
        let on: EnvironmentConfig = toml::from_str(r#"image = "busybox""#).unwrap();
        assert!(on.to_proto("default").forwarding.unwrap().forward_x11);
        let off: EnvironmentConfig =
            toml::from_str("image = \"busybox\"\nforward_x11 = false").unwrap();
        let policy = off.to_proto("default").forwarding.unwrap();
        assert!(!policy.forward_x11);
        assert!(policy.local && policy.remote && policy.forward_agent);
    }
}
