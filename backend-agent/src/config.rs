//! The agent's TOML configuration.

use std::path::Path;

use labssh_proto::config::ConfigRole;
use serde::Deserialize;

use crate::start_queue::{DEFAULT_START_CONCURRENCY, DEFAULT_START_QUEUE_LIMIT};

mod kubernetes;
mod start_queue;

pub use kubernetes::{BackendKind, KubernetesConfig};

/// How long labssh-init keeps a session whose agent went away, by default (s).
const DEFAULT_REATTACH_GRACE: u32 = 60;
/// How often the listening ports of containers are read (ms), by default.
pub const DEFAULT_SERVICES_INTERVAL_MS: u64 = 2_000;
/// The shortest `services_interval_ms` other than 0 (off).
const MIN_SERVICES_INTERVAL_MS: u64 = 100;
/// The longest `reattach_grace` (s).
const MAX_REATTACH_GRACE: u32 = 3600;
/// Agents are usually named after their node; this default is only good for one-node trials.
const DEFAULT_NAME: &str = "agent-1";
/// Loopback, so a forgotten config never exposes the agent to the network.
const DEFAULT_LISTEN: &str = "127.0.0.1:7001";
/// The controller's default listen address in the same trial setup.
const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:7000";
/// Roughly what a 2-core, 8 GB node holds with idle student shells.
const DEFAULT_CAPACITY: u32 = 100;
/// Short and recognisable in `docker ps`.
const DEFAULT_CONTAINER_PREFIX: &str = "labssh";
/// Sleeps without busy-looping and exits at once on `docker stop`.
const DEFAULT_KEEPALIVE: [&str; 3] = [
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done",
];
/// tmpfs on most hosts: the per-container sockets go away with a reboot, as do the
/// containers' processes.
const DEFAULT_HELPER_DIR: &str = "/run/labssh";
/// Catches containers that students or operators stop or remove behind the agent's back,
/// without polling Docker often.
const DEFAULT_INVENTORY_REFRESH_SECS: u64 = 10;
/// VS Code Remote opens a handful of exec channels per window; 32 leaves room for
/// several windows, terminals and file transfers at once.
const DEFAULT_MAX_SESSIONS_PER_USER: u32 = 32;
/// A browser through `ssh -L` opens six connections per host, VS Code a few per
/// window: 64 covers that, and 300 students' worth stays within 65,536 descriptors
/// (see [`crate::limits::nofile`]).
const DEFAULT_MAX_FORWARDS_PER_USER: u32 = 64;
/// `ssh -R` listeners: a few services published back per student.
const DEFAULT_MAX_LISTENERS_PER_USER: u32 = 8;
/// Accepted `ssh -R` connections are handed to the client at once; a queue longer
/// than this means the client is not taking them.
const DEFAULT_MAX_PENDING_REMOTE_PER_USER: u32 = 16;
/// 0: raise the open-file limit's soft value to the hard one, whatever that is.
const DEFAULT_NOFILE: u64 = 0;
/// A full pass over a class's homes costs seconds of one core; every five minutes
/// keeps that under 1% while a student over quota is noticed within the hour's lab.
const DEFAULT_DISK_CHECK_INTERVAL_SECS: u64 = 300;
/// The open-file limit below which the agent cannot even serve one class.
pub const MIN_NOFILE: u64 = 1024;

/// Agent configuration, read from TOML; every key has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Unique, stable name of this agent (usually the node name); labels its containers.
    /// With mTLS the controller accepts it only from a certificate issued for this name
    /// (`labssh certs --role agent --name NAME`).
    pub name: String,
    /// Address the binary binds the Agent gRPC service to.
    pub listen: String,
    /// Endpoint proxies dial; empty means `http://<listener's local address>`.
    pub advertise: String,
    /// Controller gRPC endpoint (http or https URL).
    pub controller: String,
    /// Maximum number of containers this node holds.
    pub capacity: u32,
    /// Docker socket path (or `unix://` URL); empty means `$DOCKER_HOST` or the default socket.
    pub docker_socket: String,
    /// Prefix of container (`{prefix}-{user}.{env}`) and volume (`{prefix}-home-{user}`) names.
    pub container_prefix: String,
    /// Container command used when the environment gives none; it only keeps the container up.
    pub keepalive_cmd: Vec<String>,
    /// How often the container inventory is re-read from the runtime.
    pub inventory_refresh_secs: u64,
    /// The statically linked labssh-init mounted into containers as their init; empty
    /// means `labssh-init` beside the agent's executable, else the one built with the
    /// agent. Without one, containers are created for Docker exec.
    pub init_binary: String,
    /// The statically linked labssh-sftp mounted read-only into every container at
    /// `/.labssh/sftp-server`, for images without an SFTP server; empty means
    /// `labssh-sftp` beside the agent's executable, else the one built with the agent.
    pub sftp_binary: String,
    /// Host directory holding the copies of labssh-init and labssh-sftp that containers
    /// mount (the helper's socket is on a tmpfs inside each container).
    pub helper_dir: String,
    /// Sessions without a terminal (commands, SFTP, scp, rsync) take their process's
    /// stdin, stdout and stderr pipes from labssh-init (SCM_RIGHTS), so their bytes
    /// skip the relay through it; `false` relays them through labssh-init as older
    /// agents did. A container whose labssh-init predates this is relayed anyway.
    pub helper_pipes: bool,
    /// Seconds labssh-init keeps a session's process (with its terminal, its
    /// children and up to 256 KiB of its output) after this agent's side of it goes
    /// away, so that the agent, restarted, re-attaches it and the student's SSH
    /// session goes on; 0 ends sessions with the agent, as before. Containers made
    /// for Docker exec, and those whose labssh-init predates this, end them anyway.
    pub reattach_grace: u32,
    /// Listen address of the HTTP listener serving `/metrics`, `/healthz`
    /// and `/readyz` (used by the binary); empty means none.
    pub http: String,
    /// mTLS: this agent's certificate and the cluster CA. Clients (proxies)
    /// must present a certificate from that CA, and the controller is
    /// verified against it. Empty means plain HTTP/2.
    pub tls: labssh_proto::tls::TlsFiles,
    /// Reject connections from containers (arriving on `container_bridge`)
    /// to this agent's port, the controller's port and `firewall_ports` on
    /// this host, and all traffic to `cluster_networks` and the controller's
    /// address, with iptables and ip6tables rules installed at start and
    /// removed at shutdown.
    pub firewall: bool,
    /// Docker's default bridge, where containers of older releases are until their
    /// next login moves them to the agent's own networks (each guarded by its own
    /// rules, see `firewall::bridge`).
    pub container_bridge: String,
    /// More host ports containers must not reach (e.g. Redis, the proxies'
    /// metrics), besides the agent's and the controller's.
    pub firewall_ports: Vec<u16>,
    /// Cluster addresses and CIDR blocks (other nodes, the controller, Redis,
    /// the proxies) containers may not reach at all, on this host or routed
    /// beyond it, IPv4 and IPv6; the controller's address (from `controller`)
    /// is added by itself. Needs `firewall`.
    pub cluster_networks: Vec<String>,
    /// Addresses and CIDR blocks port forwarding never reaches, whatever an
    /// environment allows (e.g. the cluster's service network). This host's own
    /// addresses, container networks and link-local addresses are always refused.
    pub forward_deny: Vec<String>,
    /// Sessions (shells, commands, SFTP) one student may have open on this node,
    /// across all their SSH connections and proxy replicas.
    pub max_sessions_per_user: u32,
    /// Forwarded TCP connections (`ssh -L`, `ssh -D` and accepted `ssh -R`
    /// connections) one student may have open on this node.
    pub max_forwards_per_user: u32,
    /// `ssh -R` listeners one student may hold on this node.
    pub max_listeners_per_user: u32,
    /// Accepted `ssh -R` connections of one student waiting for their SSH client
    /// to take them (these count as forwards too).
    pub max_pending_remote_per_user: u32,
    /// Open-file limit (RLIMIT_NOFILE) the agent raises itself to at start; 0 means
    /// the hard limit. Above the hard limit it needs root (CAP_SYS_RESOURCE).
    pub nofile: u64,
    /// How often the disk usage of homes and container layers under a quota
    /// (`home_quota_mb`, `layer_quota_mb` in the catalogue) is measured.
    pub disk_check_interval_secs: u64,
    /// How often, in milliseconds, the TCP ports listening in each running container
    /// (its services: `labssh services`, the web front door) are read from the
    /// container's socket tables and reported; a service that stops listening is gone
    /// from the registry within about this long plus a heartbeat. 0 turns discovery off.
    pub services_interval_ms: u64,
    /// This node's GPUs (device ids, e.g. `["0", "1"]`); absent means those
    /// `nvidia-smi -L` lists, if it is installed, else none. `[]` offers none.
    pub gpus: Option<Vec<String>>,
    /// Containers created or started at once on this node; more wait in the start
    /// queue, first come first served, students before prestarts.
    pub start_concurrency: u32,
    /// Students waiting in the start queue at most; past it they are told to retry.
    pub start_queue_limit: u32,
    /// The container runtime: `docker` (the default) or `kubernetes`.
    pub backend: BackendKind,
    /// How pods are made with `backend = "kubernetes"`.
    pub kubernetes: KubernetesConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: DEFAULT_NAME.to_owned(),
            listen: DEFAULT_LISTEN.to_owned(),
            advertise: String::new(),
            controller: DEFAULT_CONTROLLER.to_owned(),
            capacity: DEFAULT_CAPACITY,
            docker_socket: String::new(),
            container_prefix: DEFAULT_CONTAINER_PREFIX.to_owned(),
            keepalive_cmd: DEFAULT_KEEPALIVE.iter().map(|s| (*s).to_owned()).collect(),
            inventory_refresh_secs: DEFAULT_INVENTORY_REFRESH_SECS,
            init_binary: String::new(),
            sftp_binary: String::new(),
            helper_dir: DEFAULT_HELPER_DIR.to_owned(),
            helper_pipes: true,
            reattach_grace: DEFAULT_REATTACH_GRACE,
            http: String::new(),
            tls: Default::default(),
            firewall: true,
            container_bridge: "docker0".to_owned(),
            firewall_ports: Vec::new(),
            cluster_networks: Vec::new(),
            forward_deny: Vec::new(),
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            max_forwards_per_user: DEFAULT_MAX_FORWARDS_PER_USER,
            max_listeners_per_user: DEFAULT_MAX_LISTENERS_PER_USER,
            max_pending_remote_per_user: DEFAULT_MAX_PENDING_REMOTE_PER_USER,
            nofile: DEFAULT_NOFILE,
            disk_check_interval_secs: DEFAULT_DISK_CHECK_INTERVAL_SECS,
            services_interval_ms: DEFAULT_SERVICES_INTERVAL_MS,
            gpus: None,
            start_concurrency: DEFAULT_START_CONCURRENCY,
            start_queue_limit: DEFAULT_START_QUEUE_LIMIT,
            backend: BackendKind::Docker,
            kubernetes: KubernetesConfig::default(),
        }
    }
}

pub use labssh_proto::config::ConfigError;

impl Config {
    /// Parses TOML text and validates it.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            role: ConfigRole::Agent,
            path: None,
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file; errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        ConfigError::load(ConfigRole::Agent, path.as_ref(), Config::from_toml_str)
    }

    /// Checks every value and reports all problems at once, each with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = self.tls.problems("tls");
        self.check_addresses(&mut problems);
        self.check_runtime(&mut problems);
        self.check_limits(&mut problems);
        self.check_start_queue(&mut problems);
        self.check_kubernetes(&mut problems);
        ConfigError::check(ConfigRole::Agent, problems)
    }

    /// The agent's name and where it and the controller are reached.
    fn check_addresses(&self, problems: &mut Vec<String>) {
        if !is_agent_name(&self.name) {
            problems.push(format!(
                "name: {:?} must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,62}}",
                self.name
            ));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "listen: {:?} is not an address like 127.0.0.1:7001",
                self.listen
            ));
        }
        if !self.advertise.is_empty() && !is_http_url(&self.advertise) {
            problems.push(format!(
                "advertise: {:?} must be empty or an http(s) URL",
                self.advertise
            ));
        }
        if !is_http_url(&self.controller) {
            problems.push(format!(
                "controller: {:?} must be an http:// or https:// URL",
                self.controller
            ));
        }
    }

    /// Capacity, Docker and what goes into containers.
    fn check_runtime(&self, problems: &mut Vec<String>) {
        if self.capacity == 0 {
            problems.push("capacity: must be greater than 0".to_owned());
        }
        if self.reattach_grace > MAX_REATTACH_GRACE {
            problems.push(format!(
                "reattach_grace: {} s is more than {MAX_REATTACH_GRACE} s (an hour); processes nobody can reach would hold the container that long",
                self.reattach_grace
            ));
        }
        if !self.docker_socket.is_empty()
            && !self
                .docker_socket
                .strip_prefix("unix://")
                .unwrap_or(&self.docker_socket)
                .starts_with('/')
        {
            problems.push(format!(
                "docker_socket: {:?} must be empty, an absolute path or a unix:// URL",
                self.docker_socket
            ));
        }
        if !is_prefix(&self.container_prefix) {
            problems.push(format!(
                "container_prefix: {:?} must match [a-z0-9][a-z0-9_.-]*",
                self.container_prefix
            ));
        }
        if self.keepalive_cmd.is_empty() || self.keepalive_cmd[0].is_empty() {
            problems.push("keepalive_cmd: must name a program".to_owned());
        }
        for (key, path) in [
            ("init_binary", &self.init_binary),
            ("sftp_binary", &self.sftp_binary),
        ] {
            if !path.is_empty() && !path.starts_with('/') {
                problems.push(format!("{key}: {path:?} must be empty or an absolute path"));
            }
        }
        for (i, id) in self.gpus.iter().flatten().enumerate() {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                problems.push(format!("gpus: {id:?} is not a device id like \"0\""));
            } else if self.gpus.iter().flatten().take(i).any(|g| g == id) {
                problems.push(format!("gpus: {id:?} is listed twice"));
            }
        }
        if !self.helper_dir.starts_with('/') {
            problems.push(format!(
                "helper_dir: {:?} must be an absolute path",
                self.helper_dir
            ));
        }
    }

    /// Refresh intervals, networks and the per-student limits.
    fn check_limits(&self, problems: &mut Vec<String>) {
        if self.inventory_refresh_secs == 0 {
            problems.push("inventory_refresh_secs: must be greater than 0".to_owned());
        }
        for (key, entries) in [
            ("cluster_networks", &self.cluster_networks),
            ("forward_deny", &self.forward_deny),
        ] {
            for entry in entries {
                if let Err(e) = labssh_proto::net::parse_net(entry) {
                    problems.push(format!("{key}: {e}"));
                }
            }
        }
        for (key, cap) in [
            ("max_sessions_per_user", self.max_sessions_per_user),
            ("max_forwards_per_user", self.max_forwards_per_user),
            ("max_listeners_per_user", self.max_listeners_per_user),
            (
                "max_pending_remote_per_user",
                self.max_pending_remote_per_user,
            ),
        ] {
            if cap == 0 {
                problems.push(format!("{key}: must be greater than 0"));
            }
        }
        if self.nofile != 0 && self.nofile < MIN_NOFILE {
            problems.push(format!(
                "nofile: {} is below the {MIN_NOFILE} the agent needs for itself (0 means the hard limit)",
                self.nofile
            ));
        }
        if (1..MIN_SERVICES_INTERVAL_MS).contains(&self.services_interval_ms) {
            problems.push(format!(
                "services_interval_ms: {} ms is too often; 0 (off) or at least {MIN_SERVICES_INTERVAL_MS}",
                self.services_interval_ms
            ));
        }
        if self.disk_check_interval_secs == 0 {
            problems.push("disk_check_interval_secs: must be greater than 0".to_owned());
        }
    }

    /// The Docker socket path to use: the configured one, `$DOCKER_HOST` when it is a unix
    /// URL, or Docker's default.
    pub fn docker_socket_path(&self) -> String {
        let configured = if self.docker_socket.is_empty() {
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| h.starts_with("unix://"))
                .unwrap_or_else(|| "/var/run/docker.sock".to_owned())
        } else {
            self.docker_socket.clone()
        };
        configured
            .strip_prefix("unix://")
            .map(str::to_owned)
            .unwrap_or(configured)
    }
}

fn is_agent_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn is_prefix(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..].iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn parses_every_key() {
        let c = Config::from_toml_str(
            r#"
            name = "node-7"
            listen = "0.0.0.0:7001"
            advertise = "http://10.0.0.7:7001"
            controller = "https://ctl:7000"
            capacity = 30
            docker_socket = "unix:///run/docker.sock"
            container_prefix = "lab"
            keepalive_cmd = ["/bin/sleep", "infinity"]
            inventory_refresh_secs = 3
            init_binary = "/usr/local/lib/labssh/labssh-init"
            sftp_binary = "/usr/local/lib/labssh/labssh-sftp"
            helper_dir = "/run/lab"
            helper_pipes = false
            reattach_grace = 5
            cluster_networks = ["10.0.0.0/24", "fd00:1::/64", "192.0.2.7"]
            max_sessions_per_user = 10
            max_forwards_per_user = 20
            max_listeners_per_user = 2
            max_pending_remote_per_user = 4
            nofile = 65536
            disk_check_interval_secs = 60
            "#,
        )
        .unwrap();
        assert_eq!(c.cluster_networks.len(), 3);
        assert_eq!(c.name, "node-7");
        assert_eq!(c.capacity, 30);
        assert_eq!(c.docker_socket_path(), "/run/docker.sock");
        assert_eq!(c.keepalive_cmd, ["/bin/sleep", "infinity"]);
        assert_eq!(c.init_binary, "/usr/local/lib/labssh/labssh-init");
        assert_eq!(c.sftp_binary, "/usr/local/lib/labssh/labssh-sftp");
        assert_eq!(c.helper_dir, "/run/lab");
        assert!(!c.helper_pipes && Config::default().helper_pipes);
        assert_eq!(
            (c.reattach_grace, Config::default().reattach_grace),
            (5, 60)
        );
        let err = Config::from_toml_str("reattach_grace = 7200").unwrap_err();
        assert!(err.to_string().contains("reattach_grace"), "{err}");
        assert_eq!(
            (
                c.max_sessions_per_user,
                c.max_forwards_per_user,
                c.max_listeners_per_user,
                c.max_pending_remote_per_user
            ),
            (10, 20, 2, 4)
        );
        assert_eq!((c.nofile, c.disk_check_interval_secs), (65536, 60));
    }

    #[test]
    fn gpus_are_device_ids() {
        let c = Config::from_toml_str(r#"gpus = ["0", "GPU-8f6c"]"#).unwrap();
        assert_eq!(
            c.gpus.as_deref(),
            Some(&["0".to_owned(), "GPU-8f6c".to_owned()][..])
        );
        assert_eq!(Config::default().gpus, None, "absent: ask nvidia-smi");
        let e = Config::from_toml_str(r#"gpus = ["0", "0", "a b"]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#"gpus: "0" is listed twice"#), "{e}");
        assert!(e.contains(r#"gpus: "a b" is not a device id"#), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_toml_str("capcity = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("capcity"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let e = Config::from_toml_str(
            r#"
            name = "-bad"
            controller = "ftp://x"
            capacity = 0
            container_prefix = "Lab"
            init_binary = "labssh-init"
            sftp_binary = "labssh-sftp"
            helper_dir = "run"
            cluster_networks = ["10.0.0.0/33"]
            max_sessions_per_user = 0
            max_listeners_per_user = 0
            nofile = 64
            disk_check_interval_secs = 0
            services_interval_ms = 10
            "#,
        )
        .unwrap_err()
        .to_string();
        for key in [
            "name:",
            "controller:",
            "capacity:",
            "container_prefix:",
            "init_binary:",
            "sftp_binary:",
            "helper_dir:",
            "cluster_networks:",
            "max_sessions_per_user: must be greater than 0",
            "max_listeners_per_user: must be greater than 0",
            "nofile: 64 is below",
            "disk_check_interval_secs:",
            "services_interval_ms: 10 ms is too often",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "capacity = 0\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("agent.toml") && e.contains("capacity"), "{e}");
        let e = Config::load(dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }
}
