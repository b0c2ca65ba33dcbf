//! A command's pipes, which labssh-init hands to the agent (SPAWN_PIPES): they are in
//! the agent's hands and in the student's own process, and nowhere alice can look.

use std::process::Stdio;

use labssh_testkit::ssh::{stderr, stdout};

use crate::lab::{read_until, Lab, LabOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bobs_handed_pipes_are_nowhere_alice_can_look() {
    let lab = Lab::start(LabOptions::default()).await;
    // Bob's command prints its stdin, stdout and stderr and keeps them open.
    let mut bob = lab
        .ssh
        .command(
            "bob",
            &Lab::bob(),
            &["for f in 0 1 2; do readlink /proc/self/fd/$f; done; echo listed; exec sleep 60"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn bob's session");
    let listed = read_until(bob.stdout.as_mut().unwrap(), "listed").await;
    let bobs: Vec<String> = listed
        .lines()
        .filter(|l| l.starts_with("pipe:"))
        .map(str::to_owned)
        .collect();
    assert_eq!(bobs.len(), 3, "{listed:?}");
    // They were handed over: the agent (in this test's process) holds them.
    let agent = labssh_testkit::pipes_held_by("self");
    for pipe in &bobs {
        assert!(agent.contains(pipe), "the agent does not hold bob's {pipe}");
    }
    // Alice reads every descriptor of every process her container can see.
    let out = lab
        .ssh
        .run(
            "alice",
            &Lab::alice(),
            &["for f in /proc/[0-9]*/fd/*; do readlink $f; done 2>/dev/null; true"],
        )
        .await
        .expect("ssh runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let seen = stdout(&out);
    // The look can find pipes at all: her own command's are among them.
    assert!(
        seen.lines().filter(|l| l.starts_with("pipe:")).count() >= 2,
        "alice saw no pipes at all: {seen:?}"
    );
    for pipe in &bobs {
        assert!(
            !seen.lines().any(|l| l == pipe),
            "alice's container sees bob's {pipe}"
        );
    }
    drop(bob);
}
