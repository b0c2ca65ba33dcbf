//! Isolation per environment through the stock ssh client: the catalogue's rlimits,
//! seccomp profile file and read-only root reach the student's shell, and a student
//! who hits the process or memory limit is told which, on stderr.

use std::time::{Duration, Instant};

use labssh_testkit::ssh::{stderr, stdout};
use tokio::io::AsyncBufReadExt;

use crate::lab::{spawn_path, Lab, LabOptions};

/// The process limit of the `small` environment: the container's init, its command
/// and a shell fit, a loop of sleeps does not.
const PIDS_LIMIT: u32 = 16;
/// Bound on waiting for a condition below.
const DEADLINE: Duration = Duration::from_secs(20);

/// Catalogue TOML: `iso` (rlimits, a seccomp profile denying mkdir, a read-only root
/// with a tmpfs /tmp) and `small` (few processes, little memory).
fn catalogue(profile: &std::path::Path) -> String {
    let spawn = spawn_path();
    let image = labssh_testkit::docker::TEST_IMAGE;
    format!(
        r#"
[environments.iso]
image = "{image}"
spawn = "{spawn}"
uid = 1000
gid = 1000
seccomp = "{}"
rlimits = {{ nofile = 333, core = {{ soft = 0, hard = 0 }} }}
read_only_root = true
tmpfs = ["/tmp:size=8m"]

[environments.small]
image = "{image}"
spawn = "{spawn}"
uid = 1000
gid = 1000
pids_limit = {PIDS_LIMIT}
memory_mb = 32
"#,
        profile.display()
    )
}

/// A lab with [`catalogue`]; the directory holds the seccomp profile.
async fn lab() -> (Lab, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("deny-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let lab = Lab::start(LabOptions {
        catalogue: catalogue(&profile),
        ..Default::default()
    })
    .await;
    (lab, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rlimits_seccomp_and_a_read_only_root_reach_the_shell() {
    let (lab, _dir) = lab().await;
    let out = lab
        .ssh
        .run(
            "alice+iso",
            &Lab::alice(),
            &[r#"ulimit -n; ulimit -c
ls / >/dev/null && echo ls-ok
mkdir ~/d 2>/dev/null || echo mkdir-refused
touch /etc/planted 2>/dev/null || echo root-read-only
echo t > /tmp/t && echo tmp-ok
echo h > ~/h && echo home-ok; id -un"#],
        )
        .await
        .unwrap();
    assert_eq!(
        stdout(&out),
        "333\n0\nls-ok\nmkdir-refused\nroot-read-only\ntmp-ok\nhome-ok\nalice\n",
        "{}",
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_process_limit_is_named() {
    let (lab, _dir) = lab().await;
    // Fills the container's process table for a few seconds: forks past the limit
    // fail. A shell whose fork fails exits, so the filling is a subshell's; the
    // session's shell then takes the slot the subshell left, says so (echo is a
    // builtin) and waits (a builtin too).
    let mut filler = lab
        .ssh
        .command(
            "alice+small",
            &Lab::alice(),
            &["sleep 8 & (for i in $(seq 40); do sleep 8 & done) 2>/dev/null; s=$?; sleep 8 & echo full; wait; exit $s"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(filler.stdout.take().unwrap()).lines();
    let full = tokio::time::timeout(DEADLINE, lines.next_line()).await;
    assert_eq!(full.unwrap().unwrap().as_deref(), Some("full"));
    // On the helper path the session cannot start (labssh-init's fork fails); Docker
    // exec puts its process into the container however full (the kernel checks the
    // limit at fork, not when a process joins), so there its first fork fails and the
    // session is told as it ends. Either way, on stderr.
    let out = lab
        .ssh
        .run(
            "alice+small",
            &Lab::alice(),
            &["ls / >/dev/null && echo in"],
        )
        .await
        .unwrap();
    let refused = stderr(&out);
    assert_eq!(stdout(&out), "", "{refused}");
    if spawn_path() == "helper" {
        assert!(
            refused.contains("labssh: could not start your session: "),
            "{refused}"
        );
    }
    assert!(
        refused.contains(&format!(
            "your container reached its process limit ({PIDS_LIMIT})"
        )),
        "{refused}"
    );
    // The session that hit the limit (its subshell failed to fork) hears it too as it
    // ends, on stderr.
    let filled = tokio::time::timeout(DEADLINE, filler.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(filled.status.code(), Some(0), "{}", stderr(&filled));
    assert!(
        stderr(&filled).contains(&format!(
            "labssh: your container reached its process limit ({PIDS_LIMIT})"
        )),
        "{}",
        stderr(&filled)
    );
    assert!(!stdout(&filled).contains("labssh:"), "{}", stdout(&filled));
    // Once the processes are gone, logins work again.
    let started = Instant::now();
    loop {
        let out = lab
            .ssh
            .run("alice+small", &Lab::alice(), &["echo back"])
            .await
            .unwrap();
        if stdout(&out) == "back\n" {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "still refused: {}",
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_memory_limit_is_named() {
    let (lab, _dir) = lab().await;
    // busybox tail keeps a line that never ends: it grows until the OOM killer comes.
    let out = lab
        .ssh
        .run("alice+small", &Lab::alice(), &["exec tail /dev/zero"])
        .await
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains(
            "labssh: your container ran out of memory (its limit is 32 MiB); the kernel killed your process"
        ),
        "{err}"
    );
    assert_eq!(stdout(&out), "");
    assert_ne!(out.status.code(), Some(0));
}
