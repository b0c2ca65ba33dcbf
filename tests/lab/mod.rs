//! A whole lab for one test: controller, agent and proxy in-process on
//! loopback, the real Docker engine, optionally a real Redis, and the stock
//! OpenSSH client.

#![allow(dead_code)]

pub mod browser;
pub mod leaks;
pub mod queue;

use std::time::Duration;

use labssh::cluster::{Cluster, ClusterConfig};
use labssh_testkit::docker::{ensure_test_image, Cleanup, BARE_IMAGE, DEBIAN_IMAGE, TEST_IMAGE};
use labssh_testkit::redis_server::RedisServer;
use labssh_testkit::ssh::{Auth, Ssh};
use tokio::net::TcpListener;

/// Reads `from` until what was read holds `marker` (within 30 s); all of it.
pub async fn read_until(from: &mut (impl tokio::io::AsyncRead + Unpin), marker: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains(marker) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let n = tokio::time::timeout(left, from.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {marker:?} in {:?}", String::from_utf8_lossy(&seen)))
            .unwrap();
        assert!(
            n > 0,
            "ended before {marker:?}: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

pub const ALICE_PW: &str = "alice-correct-horse";
pub const BOB_PW: &str = "bob-battery-staple";
/// The web front door's site in tests: `https://lab.test:PORT/`, services at
/// `https://8080-alice.lab.test:PORT/` (curl's `--resolve` points them at loopback).
pub const WEB_DOMAIN: &str = "lab.test";

/// Options for [`Lab::start`].
#[derive(Default)]
pub struct LabOptions {
    /// Start a Redis and use it as the credential cache.
    pub redis: bool,
    /// Number of agents (default 1).
    pub agents: Option<usize>,
    /// Point the proxy at this controller URL instead (e.g. a dead one).
    pub controller_override: Option<String>,
    /// mTLS between the roles, with certificates made for this lab.
    pub tls: bool,
    /// Brute-force limits for the proxy (default: the proxy's defaults).
    pub rate_limit: Option<labssh_proxy::rate_limit::RateLimitConfig>,
    /// Changes to the proxy's configuration, made after the lab's own settings.
    pub proxy: Option<fn(&mut labssh_proxy::Config)>,
    /// The proxy's `[auth]` section (LDAP, webhook, certificates), set
    /// before `proxy` runs.
    pub proxy_auth: Option<labssh_proxy::config::auth::AuthConfig>,
    /// More catalogue TOML (`[environments.NAME]` tables) for one test.
    pub catalogue: String,
    /// Changes every agent's configuration (caps, intervals) for one test.
    pub agent_config: Option<fn(&mut labssh_agent::Config)>,
    /// The Docker socket the agents use (e.g. a testkit `DockerGate`'s).
    pub docker_socket: Option<std::path::PathBuf>,
}

pub struct Lab {
    pub cluster: Option<Cluster>,
    pub ssh: Ssh,
    pub redis: Option<RedisServer>,
    pub users_file: std::path::PathBuf,
    pub cleanup: Cleanup,
    pub dir: tempfile::TempDir,
}

/// How the lab's environments start processes: `LABSSH_TEST_SPAWN=exec` runs the whole
/// suite on Docker exec instead of the in-container helper (scripts/test.sh does both).
pub fn spawn_path() -> String {
    std::env::var("LABSSH_TEST_SPAWN").unwrap_or_else(|_| "helper".into())
}

/// The catalogue every test lab uses.
pub fn controller_toml() -> String {
    let spawn = spawn_path();
    format!(
        r#"
heartbeat_interval_ms = 200
default_environment = "default"

[environments.default]
image = "{TEST_IMAGE}"
spawn = "{spawn}"
memory_mb = 256
cpus = 1.0
pids_limit = 128
uid = 1000
gid = 1000
# tests/e2e/services.rs: alice's port 8080 is also `web-alice`.
services = {{ web = 8080 }}

[environments.admin]
image = "{TEST_IMAGE}"
spawn = "{spawn}"
description = "root shell, for labs that need it"
run_as_root = true
cap_add = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"]

[environments.broken]
image = "labssh/this-image-does-not-exist:never"
spawn = "{spawn}"

# Forwarding allowed anywhere the agent's own limits permit.
[environments.open]
image = "{TEST_IMAGE}"
spawn = "{spawn}"
uid = 1000
gid = 1000
[environments.open.forwarding]
allow = ["*:*"]

# Forwarding turned off.
[environments.closed]
image = "{TEST_IMAGE}"
spawn = "{spawn}"
uid = 1000
gid = 1000
[environments.closed.forwarding]
local = false
remote = false

# Nothing in the image at all: no shell, no sftp-server (ensure_bare_image).
[environments.bare]
image = "{BARE_IMAGE}"
spawn = "{spawn}"
uid = 1000
gid = 1000

# A real Debian with OpenSSH's sftp-server, scp and rsync (ensure_debian_image).
[environments.debian]
image = "{DEBIAN_IMAGE}"
spawn = "{spawn}"
shell = "/bin/bash"
uid = 1000
gid = 1000
"#
    )
}

/// Catalogue TOML for [`LabOptions::catalogue`]: an environment `name` like the
/// default one (the test image, uid 1000) with more keys, e.g. lifecycle timers
/// (`idle_pause_after = "2s"`), one `key = value` per line.
pub fn environment_toml(name: &str, keys: &str) -> String {
    let spawn = spawn_path();
    format!(
        "\n[environments.{name}]\nimage = \"{TEST_IMAGE}\"\nspawn = \"{spawn}\"\nuid = 1000\ngid = 1000\n{keys}\n"
    )
}

/// A plain proxy config in `dir` (`proxy.toml`) for a proxy started as its own process:
/// SSH on 127.0.0.1:`ssh_port`, its host key, users file and cache key in `dir`, the
/// controller on 127.0.0.1:`controller_port`.
pub fn write_proxy_toml(dir: &std::path::Path, ssh_port: u16, controller_port: u16) {
    std::fs::write(
        dir.join("proxy.toml"),
        format!(
            "listen = \"127.0.0.1:{ssh_port}\"\nhost_keys = [\"{d}/host_key\"]\nusers_file = \"{d}/users.toml\"\n\
             cache_key_file = \"{d}/cache.key\"\ncontroller = \"http://127.0.0.1:{controller_port}\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), so corruption cannot hide in
/// repeating patterns.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sends `message` on `s`, shuts its write side and returns what comes back until
/// EOF (an echo server's answer); panics after 30 s.
pub async fn round_trip(mut s: tokio::net::TcpStream, message: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(message).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut back))
        .await
        .expect("the answer within 30 s")
        .unwrap();
    back
}

/// `n` connections to an echo server behind 127.0.0.1:`port` (an `ssh -L` to a
/// busybox `nc -ll -e cat` in a container), opened one after another, each answered
/// once before the next is opened. busybox `nc` listens with a backlog of 2: a burst
/// of connects overflows it and the kernel resets some of them, so tests that need
/// many at once open them this way and then use them all together.
pub async fn echo_connections(port: u16, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let hello = format!("hello {i}\n");
        s.write_all(hello.as_bytes()).await.unwrap();
        let mut back = vec![0; hello.len()];
        tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut back))
            .await
            .unwrap_or_else(|_| panic!("connection {i} answered within 30 s"))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(back, hello.as_bytes(), "connection {i}");
        open.push(s);
    }
    open
}

/// A connection to 127.0.0.1:`port` once something accepts there (an `ssh -L`
/// coming up); panics after 30 s.
pub async fn connect_when_up(port: u16) -> tokio::net::TcpStream {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing accepted on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Lab {
    pub async fn start(options: LabOptions) -> Lab {
        labssh_testkit::init_tracing();
        tokio::task::spawn_blocking(ensure_test_image)
            .await
            .unwrap()
            .expect("test image");
        let prefix = labssh_testkit::unique("lt");
        let cleanup = Cleanup {
            prefix: prefix.clone(),
        };
        let dir = tempfile::tempdir().unwrap();
        let users_file = dir.path().join("users.toml");
        labssh_proxy::users::add_user(&users_file, "alice", Some(ALICE_PW), None).unwrap();
        labssh_proxy::users::add_user(&users_file, "bob", Some(BOB_PW), None).unwrap();

        let redis = options
            .redis
            .then(|| RedisServer::start().expect("redis-server"));
        let catalogue = format!("{}\n{}", controller_toml(), options.catalogue);
        let mut controller = labssh_controller::Config::from_toml_str(&catalogue).unwrap();
        // Groups for prestarts come from the lab's own users file.
        if controller.users_file().is_none() {
            controller.users_file = users_file.clone();
        }
        let agents = (0..options.agents.unwrap_or(1))
            .map(|i| {
                let mut agent = labssh_agent::Config {
                    name: format!("agent{i}"),
                    container_prefix: if i == 0 {
                        prefix.clone()
                    } else {
                        format!("{prefix}a{i}")
                    },
                    // The lab's own: labs of other checkouts on this host install
                    // their labssh-init into the default directory at any time, and
                    // containers made then would mount that one.
                    helper_dir: dir.path().join("helpers").display().to_string(),
                    ..Default::default()
                };
                if let Some(socket) = &options.docker_socket {
                    agent.docker_socket = socket.display().to_string();
                }
                if let Some(change) = options.agent_config {
                    change(&mut agent);
                }
                agent
            })
            .collect();
        let mut proxy = labssh_proxy::Config {
            host_keys: vec![dir.path().join("host_ed25519_key")],
            users_file: users_file.clone(),
            cache_key_file: dir.path().join("cache.key"),
            redis_url: redis.as_ref().map(|r| r.url()).unwrap_or_default(),
            auth_rejection_ms: 50,
            controller_timeout_secs: 5,
            rate_limit: options.rate_limit.clone().unwrap_or_default(),
            ..Default::default()
        };
        if let Some(auth) = options.proxy_auth.clone() {
            proxy.auth = auth;
        }
        if let Some(change) = options.proxy {
            change(&mut proxy);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_count = options.agents.unwrap_or(1);
        let mut cluster = Cluster::start(
            ClusterConfig {
                controller,
                agents,
                proxy,
                tls_dir: options.tls.then(|| dir.path().join("certs")),
            },
            listener,
        )
        .await
        .expect("cluster start");
        cluster
            .wait_ready(agent_count, Duration::from_secs(30))
            .await
            .expect("agents register");
        let ssh = Ssh::new(cluster.ssh_addr).unwrap();
        Lab {
            cluster: Some(cluster),
            ssh,
            redis,
            users_file,
            cleanup,
            dir,
        }
    }

    pub fn alice() -> Auth {
        Auth::Password(ALICE_PW.into())
    }

    pub fn bob() -> Auth {
        Auth::Password(BOB_PW.into())
    }

    /// The id of a user's container in this lab, found by its labels (whatever the
    /// agent names it).
    pub fn container_id(&self, user: &str, env: &str) -> Option<String> {
        let id = labssh_testkit::docker::docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=labssh.prefix={}", self.cleanup.prefix),
            "--filter",
            &format!("label=labssh.user={user}"),
            "--filter",
            &format!("label=labssh.env={env}"),
        ])
        .ok()?;
        let id = id.trim();
        (!id.is_empty()).then(|| id.to_owned())
    }

    /// Docker's word for the state of a user's container ("running", "paused",
    /// "exited"), empty when there is none.
    pub fn container_state(&self, user: &str, env: &str) -> String {
        let name = self.container_name(user, env);
        labssh_testkit::docker::docker(&["inspect", "-f", "{{.State.Status}}", &name])
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }

    /// Waits until a user's container is in `state` (see [`Lab::container_state`]);
    /// panics after 30 s.
    pub async fn wait_state(&self, user: &str, env: &str, state: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.container_state(user, env);
            if now == state {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{user}'s {env} container never became {state} (it is {now:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The prefix of this lab's containers and volumes.
    pub fn prefix(&self) -> &str {
        &self.cleanup.prefix
    }

    /// The name Docker knows (or will know) a user's container by.
    pub fn container_name(&self, user: &str, env: &str) -> String {
        labssh_agent::backend::docker::container_name(&self.cleanup.prefix, user, env)
    }

    /// What the hooks in `user`'s `env` container wrote to `/tmp/hooks-*`, read with
    /// `docker exec` (not a login, which would run hooks itself); empty if nothing.
    pub fn hook_records(&self, user: &str, env: &str) -> String {
        let name = self.container_name(user, env);
        labssh_testkit::docker::docker(&[
            "exec",
            &name,
            "sh",
            "-c",
            "cat /tmp/hooks-* 2>/dev/null; true",
        ])
        .unwrap_or_default()
    }

    /// Whether TCP `port` listens in `user`'s `env` container (its /proc/net/tcp, tcp6).
    pub fn listening(&self, user: &str, env: &str, port: u16) -> bool {
        let name = self.container_name(user, env);
        let tcp = labssh_testkit::docker::docker(&[
            "exec",
            &name,
            "cat",
            "/proc/net/tcp",
            "/proc/net/tcp6",
        ])
        .unwrap_or_default();
        let local = format!(":{port:04X}");
        tcp.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        })
    }

    /// Waits until TCP `port` listens inside `user`'s `env` container; panics after
    /// 30 s.
    pub async fn wait_listening(&self, user: &str, env: &str, port: u16) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.listening(user, env, port) {
            assert!(
                std::time::Instant::now() < deadline,
                "port {port} never listened in {user}'s {env} container"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `n` web front doors (`labssh web`) on this lab's proxy configuration, sharing
    /// one cookie key and a self-signed certificate for `lab.test` and `*.lab.test`
    /// (in the lab's directory as `web.crt`); their ports. They stop with the test's
    /// runtime.
    pub async fn start_web(&self, n: usize) -> Vec<u16> {
        self.start_web_with(n, |_| {}).await
    }

    /// [`Lab::start_web`] with `change` made to each replica's configuration
    /// (`[proxy_protocol]` behind a balancer, `[web]` limits).
    pub async fn start_web_with(
        &self,
        n: usize,
        change: impl Fn(&mut labssh_proxy::Config),
    ) -> Vec<u16> {
        let cluster = self.cluster.as_ref().expect("a lab with a cluster");
        let dir = self.dir.path();
        let names = vec![WEB_DOMAIN.to_owned(), format!("*.{WEB_DOMAIN}")];
        let certified = rcgen::generate_simple_self_signed(names).expect("a certificate");
        std::fs::write(dir.join("web.crt"), certified.cert.pem()).unwrap();
        std::fs::write(dir.join("web.key"), certified.signing_key.serialize_pem()).unwrap();
        // Made here, once, so no replica reads it half-written by another.
        labssh_proxy::credential_cache::load_or_create_key(&dir.join("web-cookie.key")).unwrap();
        let mut ports = Vec::new();
        for _ in 0..n {
            let mut config = cluster.proxy_config.clone();
            config.web = labssh_proxy::config::web::WebConfig {
                listen: "127.0.0.1:0".into(),
                domain: WEB_DOMAIN.into(),
                tls_cert: dir.join("web.crt"),
                tls_key: dir.join("web.key"),
                cookie_key_file: dir.join("web-cookie.key"),
                session_hours: 1,
                http: String::new(),
                ..Default::default()
            };
            change(&mut config);
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(listener.local_addr().unwrap().port());
            tokio::spawn(labssh_proxy::web::run(
                listener,
                config,
                std::future::pending(),
            ));
        }
        ports
    }

    pub async fn stop(mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.shutdown().await.expect("clean shutdown");
        }
    }
}

/// The environments a refusal's `available:` list names (`labssh: environment 'x' is
/// not available to you; available: a, b`).
pub fn listed(stderr: &str) -> Vec<String> {
    let line = stderr
        .lines()
        .find(|l| l.contains("available: "))
        .unwrap_or_else(|| panic!("no list in {stderr:?}"));
    let list = line.split("available: ").nth(1).unwrap();
    list.split(", ").map(|s| s.trim().to_string()).collect()
}

/// The proxy's `[auth]` for a test slapd: the users file, then `server` at `url`
/// (searched as the reader, groups under ou=groups), with a 2 s timeout.
pub fn ldap_auth(
    server: &labssh_testkit::slapd::Slapd,
    url: String,
) -> labssh_proxy::config::auth::AuthConfig {
    use labssh_testkit::slapd;
    labssh_proxy::config::auth::AuthConfig {
        ldap: Some(labssh_proxy::config::auth::LdapConfig {
            url,
            bind_dn: slapd::READER_DN.into(),
            bind_password_file: Some(server.reader_password_file.clone()),
            base_dn: slapd::BASE_DN.into(),
            group_base_dn: slapd::GROUPS_DN.into(),
            timeout: labssh_proto::duration::ConfigDuration(Duration::from_secs(2)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
