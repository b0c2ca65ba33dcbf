//! The lifecycle across students: alice's keep-alive file and her open sessions keep
//! only her own container awake, never bob's; and her keep-alive is read without
//! following a symlink (the agent, root on the host, reads it through her container).

use labssh_testkit::ssh::stderr;

use crate::lab::{environment_toml, Lab, LabOptions};

/// A lab whose `nap` environment pauses after 2 s idle and allows a keep-alive.
async fn napping_lab() -> Lab {
    let keys = "idle_pause_after = \"2s\"\nmax_keepalive = \"1h\"";
    Lab::start(LabOptions {
        catalogue: environment_toml("nap", keys),
        ..Default::default()
    })
    .await
}

/// Runs `command` as `user` in `nap`; panics unless it succeeds.
async fn run(lab: &Lab, user: &str, command: &str) {
    let auth = if user == "alice" {
        Lab::alice()
    } else {
        Lab::bob()
    };
    let out = lab
        .ssh
        .run(&format!("{user}+nap"), &auth, &[command])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{user}: {}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alices_keepalive_keeps_only_her_own_container_awake() {
    let lab = napping_lab().await;
    // Bob first, then alice asks for an hour: bob idled longer, and is paused...
    run(&lab, "bob", "true").await;
    run(&lab, "alice", "echo 1h > ~/.labssh-keepalive").await;
    lab.wait_state("bob", "nap", "paused").await;
    // ...and so would alice be by now (2 s after her login) without her keep-alive.
    run(&lab, "bob", "true").await;
    lab.wait_state("bob", "nap", "paused").await;
    assert_eq!(lab.container_state("alice", "nap"), "running");

    // Alice's open session does not keep bob's container awake either.
    let mut held = lab
        .ssh
        .command("alice+nap", &Lab::alice(), &["sleep 30"])
        .spawn()
        .unwrap();
    run(&lab, "bob", "true").await;
    lab.wait_state("bob", "nap", "paused").await;
    held.kill().await.unwrap();
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_symlinked_keepalive_is_not_followed() {
    let lab = napping_lab().await;
    // The link's target says an hour; the agent must not read through the link.
    run(
        &lab,
        "alice",
        "echo 1h > /tmp/forever; ln -s /tmp/forever ~/.labssh-keepalive",
    )
    .await;
    lab.wait_state("alice", "nap", "paused").await;
    lab.stop().await;
}
