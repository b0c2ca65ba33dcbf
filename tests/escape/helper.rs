//! Findings 1 and 2: a root environment's student must gain no capability by breaking
//! the in-container helper, and the agent must never be steered to another container's
//! helper (or to a socket of the student's own making).
//!
//! Every test here is a root student (`alice+admin`: `run_as_root = true` with CHOWN,
//! DAC_OVERRIDE, FOWNER, SETUID and SETGID granted) doing what the review did.

use std::process::Stdio;
use std::time::Duration;

use crate::lab::{connect_when_up, spawn_path, Lab, LabOptions};
use labssh_testkit::docker::docker;
use labssh_testkit::process::free_port;
use labssh_testkit::ssh::{stderr, stdout};
use tokio::io::AsyncReadExt;

/// The admin environment's grants (see `lab::controller_toml`): CHOWN 0, DAC_OVERRIDE 1,
/// FOWNER 3, SETGID 6, SETUID 7.
const ADMIN_CAPS: u64 = 1 << 0 | 1 << 1 | 1 << 3 | 1 << 6 | 1 << 7;
/// What the shocker technique needs.
const CAP_DAC_READ_SEARCH: u64 = 1 << 2;
/// Where labssh-init listens inside every helper container.
const SOCKET: &str = "/.labssh/run/helper.sock";

/// Compiles probe.c into a static binary (once per test process).
fn probe_binary() -> Vec<u8> {
    static BUILT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            labssh_testkit::process::static_c_binary(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/escape/probe.c"
            ))
        })
        .clone()
}

/// Runs `script` as alice in her root environment; returns stdout, failing on a
/// non-zero exit.
async fn as_root(lab: &Lab, script: &str) -> String {
    let out = lab
        .ssh
        .run("alice+admin", &Lab::alice(), &[script])
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{script}: stdout={} stderr={}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Puts the probe into alice's home (a volume: it outlives restarts and recreation).
async fn upload_probe(lab: &Lab) {
    let out = lab
        .ssh
        .run_with_stdin(
            "alice+admin",
            &Lab::alice(),
            &["cat > ~/probe && chmod 755 ~/probe"],
            &probe_binary(),
        )
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `CapEff` and `CapBnd` of a fresh login shell in the root environment.
async fn shell_caps(lab: &Lab) -> (u64, u64) {
    let text = as_root(lab, "grep -E '^Cap(Eff|Bnd)' /proc/self/status").await;
    let field = |name: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    (field("CapEff:"), field("CapBnd:"))
}

/// When Docker last started the container.
fn started_at(id: &str) -> String {
    docker(&["inspect", "-f", "{{.State.StartedAt}}", id])
        .unwrap()
        .trim()
        .to_owned()
}

/// Only the helper path has a socket to break.
fn helper_path() -> bool {
    spawn_path() == "helper"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_root_student_who_breaks_the_helper_gains_no_capability() {
    if !helper_path() {
        return;
    }
    let lab = Lab::start(LabOptions::default()).await;
    upload_probe(&lab).await;
    let before = shell_caps(&lab).await;
    assert_eq!(before, (ADMIN_CAPS, ADMIN_CAPS), "caps before: {before:x?}");

    // The review's step one: the socket goes, so the agent thinks the helper is dead.
    as_root(&lab, &format!("rm {SOCKET}")).await;
    let (eff, bnd) = shell_caps(&lab).await;
    assert_eq!(
        (eff, bnd),
        (ADMIN_CAPS, ADMIN_CAPS),
        "after the socket was removed: CapEff {eff:016x} CapBnd {bnd:016x}"
    );
    assert_eq!(eff & CAP_DAC_READ_SEARCH, 0);

    // And the shocker technique finds nothing to use.
    let out = as_root(&lab, "~/probe handle ~").await;
    assert!(out.contains("own: denied"), "{out}");
    assert!(out.contains("fsroot: denied"), "{out}");
    // The helper is back: the socket is there again, made by PID 1.
    let out = as_root(&lab, &format!("test -S {SOCKET} && echo socket")).await;
    assert_eq!(out, "socket\n");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_never_follows_a_planted_socket_to_another_students_container() {
    if !helper_path() {
        return;
    }
    let lab = Lab::start(LabOptions::default()).await;
    // Bob serves a secret on his container's loopback only.
    let out = lab
        .ssh
        .run(
            "bob",
            &Lab::bob(),
            &["mkdir -p ~/www && echo bob-secret > ~/www/index.html && busybox httpd -p 127.0.0.1:7777 -h ~/www && echo up"],
        )
        .await
        .unwrap();
    assert_eq!(stdout(&out), "up\n", "{}", stderr(&out));
    as_root(&lab, "true").await;
    let alice = lab.container_id("alice", "admin").unwrap();
    let bob = lab.container_id("bob", "default").unwrap();
    let bob_pid = docker(&["inspect", "-f", "{{.State.Pid}}", &bob]).unwrap();
    let bob_name = docker(&["inspect", "-f", "{{.Name}}", &bob]).unwrap();
    // Where bob's socket is as the agent (host root) sees it: in the host directory
    // older agents shared with the container, and through bob's init in /proc.
    let targets = [
        format!("/run/labssh{}/helper.sock", bob_name.trim()),
        format!("/proc/{}/root{SOCKET}", bob_pid.trim()),
    ];
    for target in targets {
        let restarted = started_at(&alice);
        as_root(
            &lab,
            &format!(
                "ln -s {target} {SOCKET}.new && mv -f {SOCKET}.new {SOCKET} && ls -l {SOCKET}"
            ),
        )
        .await;
        // Alice's `ssh -L` to "her own" loopback.
        let port = free_port();
        let spec = format!("{port}:127.0.0.1:7777");
        let mut client = lab
            .ssh
            .command_with("alice+admin", &Lab::alice(), &["-N", "-L", &spec], &[])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut conn = connect_when_up(port).await;
        use tokio::io::AsyncWriteExt;
        conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut got)).await;
        let got = String::from_utf8_lossy(&got);
        assert!(
            !got.contains("bob-secret"),
            "alice read bob's loopback service through {target}: {got}"
        );
        client.kill().await.unwrap();
        // The agent noticed and restored alice's own helper instead.
        assert_ne!(started_at(&alice), restarted, "helper was not restored");
        let out = as_root(
            &lab,
            &format!("test -S {SOCKET} && ! test -L {SOCKET} && echo own"),
        )
        .await;
        assert_eq!(out, "own\n");
    }
    // Bob was not disturbed.
    let out = lab
        .ssh
        .run("bob", &Lab::bob(), &["wget -qO- http://127.0.0.1:7777/"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "bob-secret\n", "{}", stderr(&out));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_socket_of_the_students_own_making_gets_not_a_byte() {
    if !helper_path() {
        return;
    }
    let lab = Lab::start(LabOptions::default()).await;
    upload_probe(&lab).await;
    let out = as_root(&lab, &format!("~/probe listen {SOCKET} ~/probe.log")).await;
    assert_eq!(out, "listening\n");
    // The next login is served as usual, by the real helper.
    let out = as_root(&lab, "echo served; grep CapEff /proc/self/status").await;
    assert!(out.starts_with("served\n"), "{out}");
    assert!(out.contains(&format!("{ADMIN_CAPS:016x}")), "{out}");
    // The impostor was connected to at most, and sent nothing.
    let log = as_root(&lab, "cat ~/probe.log 2>/dev/null; true").await;
    assert!(
        log.lines().all(|l| l == "connection: 0 bytes"),
        "the agent talked to the planted socket: {log}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_root_student_cannot_fill_the_host_through_the_helpers_directory() {
    if !helper_path() {
        return;
    }
    let lab = Lab::start(LabOptions::default()).await;
    // Before, /.labssh/run was a directory of the host's /run (a tmpfs the host needs).
    let out = as_root(
        &lab,
        "dd if=/dev/zero of=/.labssh/run/fill bs=1M count=16 2>&1; echo rc=$?; \
         ls -l /.labssh/run/fill | awk '{print \"size=\" $5}'; rm -f /.labssh/run/fill; \
         i=0; while [ $i -lt 100 ] && touch /.labssh/run/f$i 2>/dev/null; do i=$((i+1)); done; \
         echo files=$i; rm -f /.labssh/run/f*",
    )
    .await;
    assert!(out.contains("No space left on device"), "{out}");
    let size: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("size="))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(size <= 64 * 1024, "{out}");
    let files: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("files="))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(files < 16, "{out}");
    // The helper still serves.
    assert_eq!(as_root(&lab, "echo fine").await, "fine\n");
    lab.stop().await;
}
