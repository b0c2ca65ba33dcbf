//! Resource exhaustion: alice's fork bomb and memory hog stay in her container's
//! limits, and bob logs in meanwhile. Bob's login time, idle and under alice's load, is
//! printed as figures (a benchmark, not an assertion: CI machines are noisy); the test
//! asserts what cannot be noise: every login of bob's succeeds, with his own output,
//! and alice's container never holds more processes than its limit.

use std::time::{Duration, Instant};

use labssh_testkit::ssh::{stderr, stdout};

use crate::lab::{Lab, LabOptions};
use crate::{as_alice, eventually};

/// Logins of bob's timed each way.
const LOGINS: usize = 5;
/// The test catalogue's `pids_limit` for the default environment.
const PIDS_LIMIT: u64 = 128;

/// Median of bob's login-and-run times over [`LOGINS`] logins; each must succeed.
async fn bob_logins(lab: &Lab, phase: &str) -> Duration {
    let mut times = Vec::new();
    for i in 0..LOGINS {
        let started = Instant::now();
        let out = lab
            .ssh
            .run("bob", &Lab::bob(), &[&format!("echo bob-{i}")])
            .await
            .expect("ssh runs");
        times.push(started.elapsed());
        assert_eq!(
            (out.status.code(), stdout(&out)),
            (Some(0), format!("bob-{i}\n")),
            "bob's login {i} {phase} failed: {}",
            stderr(&out)
        );
    }
    times.sort();
    times[LOGINS / 2]
}

/// Processes in alice's default container now, read from its pids cgroup on the host
/// (`docker exec` cannot start a process in a container at its limit): cgroup v1's
/// pids hierarchy or v2's unified one.
fn alice_pids(lab: &Lab) -> u64 {
    let pid = crate::inspect(&lab.container_name("alice", "default"), "{{.State.Pid}}");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let file = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "pids") {
            Some(format!("/sys/fs/cgroup/pids{path}/pids.current"))
        } else if controllers.is_empty() && !cgroups.contains(":pids:") {
            Some(format!("/sys/fs/cgroup{path}/pids.current"))
        } else {
            None
        }
    });
    file.and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alices_fork_bomb_and_memory_hog_do_not_keep_bob_out() {
    let lab = Lab::start(LabOptions::default()).await;
    as_alice(&lab, "alice", "true").await;
    let idle = bob_logins(&lab, "while idle").await;
    // The fork bomb (busy processes until the limit, then a busy loop of failing
    // forks: it never dies out as `:(){ :|:& };:` does at the limit), and a shell that grows past the memory limit, each in its own
    // session of alice's.
    let mut bomb = lab
        .ssh
        .command(
            "alice",
            &Lab::alice(),
            &["while true; do (while true; do :; done) & done"],
        )
        .spawn()
        .unwrap();
    let mut hog = lab
        .ssh
        .command(
            "alice",
            &Lab::alice(),
            &["while true; do x=$(head -c 400000000 /dev/zero | tr '\\0' a); done"],
        )
        .spawn()
        .unwrap();
    let mut peak = 0;
    eventually(
        Duration::from_secs(60),
        "alice's fork bomb never reached her pids limit",
        || {
            let now = alice_pids(&lab);
            peak = peak.max(now);
            now + 8 >= PIDS_LIMIT
        },
    )
    .await;
    let loaded = bob_logins(&lab, "during alice's fork bomb and memory hog").await;
    for _ in 0..10 {
        peak = peak.max(alice_pids(&lab));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        peak <= PIDS_LIMIT,
        "alice's container held {peak} processes, over its limit {PIDS_LIMIT}"
    );
    println!(
        "bob's login, median of {LOGINS}: idle {idle:?}, during alice's fork bomb and memory hog {loaded:?} ({:.2}x)",
        loaded.as_secs_f64() / idle.as_secs_f64()
    );
    let _ = bomb.kill().await;
    let _ = hog.kill().await;
    lab.stop().await;
}
