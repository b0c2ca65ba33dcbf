//! Finding 4: one student cannot use up what the node shares, and finding 6's
//! forwarding items (names an allow rule gives are resolved by the agent; the hard
//! guard follows this host's address changes).
//!
//! - `caps`: per-student caps on sessions, forwards, `ssh -R` listeners and accepted
//!   `ssh -R` connections, across all of a student's SSH connections;
//! - `nofile`: the agent raises its open-file limit at start;
//! - `disk`: home and writable-layer quotas, measured and enforced at login;
//! - `forwarding`: allow-list names resolved by the agent, and the guard following
//!   address changes (both need root: network namespaces, interfaces).

mod caps;
mod disk;
mod forwarding;
mod nofile;

use std::process::Output;
use std::time::{Duration, Instant};

use labssh_testkit::ssh::{stderr, Auth};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::lab::Lab;

/// Upper bound for one step (a login, a refusal, a count dropping); generous for a
/// loaded two-core machine.
const STEP: Duration = Duration::from_secs(60);

/// Opens a session of `login` that stays up (`sleep`), and returns once it runs.
async fn held_session(lab: &Lab, login: &str, auth: &Auth, command: &str) -> Child {
    let mut child = lab
        .ssh
        .command(login, auth, &[&format!("echo up; {command}")])
        .spawn()
        .expect("spawn ssh");
    let stdout = child.stdout.take().expect("stdout piped");
    let line = tokio::time::timeout(STEP, BufReader::new(stdout).lines().next_line())
        .await
        .expect("the session comes up in time")
        .expect("read the session's output");
    assert_eq!(
        line.as_deref(),
        Some("up"),
        "{login}'s session did not start"
    );
    child
}

/// Runs `ssh login command` until `done` says its output is what is wanted, or
/// panics after [`STEP`] with the last output.
async fn until(
    lab: &Lab,
    login: &str,
    auth: &Auth,
    command: &str,
    done: impl Fn(&Output) -> bool,
) -> Output {
    let deadline = Instant::now() + STEP;
    loop {
        let out = lab
            .ssh
            .run(login, auth, &[command])
            .await
            .expect("ssh runs");
        if done(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{login} `{command}` never got there; last: {:?} {}",
            out.status,
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
