//! Helpers for the agent's Docker tests: the test image, unique names, clean-up.
#![allow(dead_code)] // not every helper serves a test on every path

/// Runs an `async fn(path: &str)` test on both spawn paths, as `<name>::helper` and
/// `<name>::exec` (main.rs declares `support` first, with `#[macro_use]`).
#[allow(unused_macros)]
macro_rules! on_both_paths {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn helper() {
                super::$name("helper").await
            }
            #[tokio::test]
            async fn exec() {
                super::$name("exec").await
            }
        }
    };
}

use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use labssh_agent::backend::{
    Backend, Ensured, ExitStatus, Output, Process, PtySpec, SpawnPath, SpawnSpec,
};
use labssh_agent::{Config, DockerBackend};
use labssh_proto::pb;
use rand::Rng;

/// The image built by scripts/build-busybox-image.sh.
pub const IMAGE: &str = "labssh/busybox:latest";
/// Generous bound on any single step, so a broken test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(30);

/// Builds the test image once per test binary if Docker does not have it.
pub fn ensure_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let present = Command::new("docker")
            .args(["image", "inspect", IMAGE])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../scripts/build-busybox-image.sh"
            );
            let status = Command::new("bash")
                .arg(script)
                .status()
                .expect("run image script");
            assert!(status.success(), "building {IMAGE} failed");
        }
    });
}

/// A busybox image whose ENTRYPOINT and CMD serve a page with httpd on port 8080 as
/// USER nobody, built once (from the test image) if missing.
pub const HTTPD_IMAGE: &str = "labssh/busybox-httpd:test";
/// What [`HTTPD_IMAGE`] serves.
pub const HTTPD_PAGE: &str = "served by the image command";

/// Builds [`HTTPD_IMAGE`] if Docker does not have it.
pub fn ensure_httpd_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        ensure_image();
        if image_present(HTTPD_IMAGE) {
            return;
        }
        let script = format!(
            r#"set -e
c=$(docker create {IMAGE})
trap 'docker rm -f "$c" >/dev/null' EXIT
docker export "$c" | docker import \
  --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'USER nobody' \
  --change 'ENTRYPOINT ["/bin/sh", "-c"]' \
  --change 'CMD ["mkdir -p /tmp/www && echo {HTTPD_PAGE} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]' \
  - {HTTPD_IMAGE} >/dev/null"#
        );
        let status = Command::new("bash")
            .args(["-c", &script])
            .status()
            .expect("run docker");
        assert!(status.success(), "building {HTTPD_IMAGE} failed");
    });
}

/// The Debian image built by scripts/build-debian-image.sh (a minute or two with
/// debootstrap when missing).
pub const DEBIAN_IMAGE: &str = "labssh/debian:bookworm";

/// Builds [`DEBIAN_IMAGE`] if Docker does not have it, or has an older version (the
/// script checks).
pub fn ensure_debian_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/build-debian-image.sh"
        );
        let status = Command::new("bash")
            .arg(script)
            .arg(DEBIAN_IMAGE)
            .status()
            .expect("run image script");
        assert!(status.success(), "building {DEBIAN_IMAGE} failed");
    });
}

fn image_present(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A container's log, stdout and stderr.
pub fn docker_logs(container: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", container])
        .output()
        .expect("run docker");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Runs the docker CLI; returns stdout.
pub fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A unique prefix and agent name; removes their containers, volumes and networks when
/// dropped, also when the test fails.
pub struct Scratch {
    /// Container/volume name prefix, unique to this test.
    pub prefix: String,
    /// Agent name, unique to this test.
    pub agent: String,
}

impl Scratch {
    pub fn new() -> Scratch {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        ensure_image();
        let tag: u32 = rand::thread_rng().gen();
        Scratch {
            prefix: format!("labsshtest{tag:08x}"),
            agent: format!("test-agent-{tag:08x}"),
        }
    }

    /// A config using this scratch's names.
    pub fn config(&self) -> Config {
        Config {
            name: self.agent.clone(),
            container_prefix: self.prefix.clone(),
            ..Config::default()
        }
    }

    /// A connected Docker backend.
    pub async fn backend(&self) -> Arc<DockerBackend> {
        Arc::new(
            DockerBackend::connect(&self.config())
                .await
                .expect("connect to Docker"),
        )
    }

    /// Names of this test's containers.
    /// `user`'s home volume as an older agent made it, labelled so cleanup finds it.
    pub fn labelled_volume(&self, user: &str) -> String {
        let name = format!("{}-home-{user}", self.prefix);
        docker_cli(&[
            "volume",
            "create",
            "--label",
            &format!("labssh.prefix={}", self.prefix),
            &name,
        ]);
        name
    }

    pub fn containers(&self) -> Vec<String> {
        docker_cli(&[
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=labssh.prefix={}", self.prefix),
        ])
        .lines()
        .map(str::to_owned)
        .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let ids = docker_cli(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=labssh.prefix={}", self.prefix),
        ]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            docker_cli(&args);
        }
        let vols = docker_cli(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=labssh.prefix={}", self.prefix),
        ]);
        for v in vols.split_whitespace() {
            docker_cli(&["volume", "rm", "-f", v]);
        }
        // The containers' networks the backend made (after the containers: a network
        // in use cannot go); Docker has address pools for only a few dozen.
        let networks = docker_cli(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=labssh.prefix={}", self.prefix),
        ]);
        for n in networks.split_whitespace() {
            docker_cli(&["network", "rm", n]);
        }
    }
}

/// The environment most tests use: busybox as uid/gid 1000 with some limits.
pub fn environment() -> pb::Environment {
    pb::Environment {
        name: "default".into(),
        image: IMAGE.into(),
        memory_bytes: 64 << 20,
        nano_cpus: 500_000_000,
        pids_limit: 64,
        uid: 1000,
        gid: 1000,
        shell: "/bin/sh".into(),
        env: std::collections::BTreeMap::from([("LAB".to_owned(), "yes".to_owned())]),
        ..Default::default()
    }
}

/// [`environment`] with processes started through `path` ("helper" or "exec").
pub fn environment_on(path: &str) -> pb::Environment {
    pb::Environment {
        spawn: path.into(),
        ..environment()
    }
}

/// Ensures `user`'s container of [`environment_on`]`(path)` and checks that processes
/// will start through that path (so a missing labssh-init fails loudly here).
pub async fn ensure_on(backend: &DockerBackend, user: &str, path: &str) -> Ensured {
    let ensured = backend
        .ensure(user, &environment_on(path))
        .await
        .expect("ensure");
    let actual = backend.spawn_path(&ensured.container_id).await.unwrap();
    assert_eq!(
        actual.name(),
        path,
        "container {} would not use the {path} path (is labssh-init built? do the tests run as root?)",
        ensured.name
    );
    ensured
}

/// Waits for a container's helper route to be the one given.
pub async fn assert_path(backend: &DockerBackend, container: &str, path: SpawnPath) {
    assert_eq!(backend.spawn_path(container).await.unwrap(), path);
}

/// Runs `sh -c script` as `user` without a pty, with stdin closed; returns stdout,
/// stderr and the exit status.
pub async fn run_script(
    backend: &dyn Backend,
    container: &str,
    user: &str,
    script: &str,
) -> (String, String, ExitStatus) {
    let env = environment();
    let argv = vec!["/bin/sh".into(), "-c".into(), script.into()];
    let spec = SpawnSpec::for_user(user, &env, argv, Vec::new(), None);
    let process = tokio::time::timeout(STEP, backend.spawn(container, spec))
        .await
        .expect("spawn in time")
        .expect("spawn");
    collect(process).await
}

/// Drains a process's output (stdin closed at once) and waits for it.
pub async fn collect(process: Process) -> (String, String, ExitStatus) {
    let Process {
        stdin,
        mut output,
        control,
        ..
    } = process;
    drop(stdin);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    tokio::time::timeout(STEP, async {
        while let Some(chunk) = output.next().await {
            match chunk {
                Output::Stdout(b) => out.extend_from_slice(&b),
                Output::Stderr(b) => err.extend_from_slice(&b),
            }
        }
    })
    .await
    .expect("output ends in time");
    let status = tokio::time::timeout(STEP, control.wait())
        .await
        .expect("exit in time")
        .expect("exit status");
    (
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        status,
    )
}

/// A pty spec.
pub fn pty(cols: u16, rows: u16) -> PtySpec {
    PtySpec {
        term: "xterm".into(),
        cols,
        rows,
    }
}
