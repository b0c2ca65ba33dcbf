//! Keepalives: a client that stops answering is disconnected within
//! `client_alive_interval_secs` × (`client_alive_count_max` + 1), and its
//! process in the container ends.

use std::process::Command;
use std::time::Instant;

use labssh_testkit::docker::docker;
use tokio::io::AsyncBufReadExt;

use super::{metric, BOUND, RETRY};
use crate::lab::{Lab, LabOptions};

/// What the session runs: easy to find in the container's process list.
const MARKER: &str = "sleep 4242";

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Whether the marker process runs in bob's container.
fn marker_runs(lab: &Lab) -> bool {
    let ps = docker(&["exec", &lab.container_name("bob", "default"), "ps"]).unwrap_or_default();
    ps.contains(MARKER)
}

/// `ssh` stopped with SIGSTOP after its login (its kernel still acknowledges
/// TCP, but it answers no keepalive) is disconnected, and its session ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_answering_keepalives_is_disconnected() {
    let lab = Lab::start(LabOptions {
        proxy: Some(|c| {
            c.client_alive_interval_secs = 1;
            c.client_alive_count_max = 2;
        }),
        ..Default::default()
    })
    .await;
    let timeouts = || {
        metric(
            "labssh_errors_total",
            &[("component", "proxy"), ("kind", "client_alive_timeout")],
        )
    };
    let before = timeouts();
    let mut ssh = lab
        .ssh
        .command_with(
            "bob",
            &Lab::bob(),
            &[],
            &[&format!("echo in; exec {MARKER}")],
        )
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(ssh.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(BOUND, lines.next_line()).await;
    assert_eq!(first.unwrap().unwrap().as_deref(), Some("in"));
    assert!(marker_runs(&lab));

    let pid = ssh.id().unwrap();
    signal(pid, "-STOP");
    // The proxy gives up on it, and the container's process goes with the session.
    let deadline = Instant::now() + BOUND;
    while marker_runs(&lab) || timeouts() <= before {
        assert!(
            Instant::now() < deadline,
            "a stopped client still served {BOUND:?} on"
        );
        tokio::time::sleep(RETRY).await;
    }
    signal(pid, "-CONT");
    let status = tokio::time::timeout(BOUND, ssh.wait())
        .await
        .expect("ssh sees its connection gone")
        .unwrap();
    assert_eq!(status.code(), Some(255));
    lab.stop().await;
}
