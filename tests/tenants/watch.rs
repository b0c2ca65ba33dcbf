//! An operator watching alice's terminal (`labssh sessions --watch`): the watcher
//! gets her screen and nothing of bob's, who is working beside her; the notice that
//! she is watched reaches her terminal only; and bob's terminal gets nothing of hers.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::lab::{read_until, Lab, LabOptions};
use crate::Bob;

const STEP: Duration = Duration::from_secs(30);

/// A terminal session: its client, what is typed, what it shows.
struct Terminal {
    child: Child,
    typed: ChildStdin,
    screen: ChildStdout,
}

async fn terminal(lab: &Lab, user: &str, password: &labssh_testkit::ssh::Auth) -> Terminal {
    let mut cmd = lab.ssh.command_with(user, password, &["-tt"], &[]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut typed = child.stdin.take().unwrap();
    let mut screen = child.stdout.take().unwrap();
    typed.write_all(b"echo in-$((3*3))\n").await.unwrap();
    read_until(&mut screen, "in-9").await;
    Terminal {
        child,
        typed,
        screen,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watching_alice_shows_nothing_of_bobs_and_tells_bob_nothing() {
    let lab = Lab::start(LabOptions::default()).await;
    let bob = Bob::plant(&lab).await;
    let url = format!("http://{}", lab.cluster.as_ref().unwrap().controller_addr);
    let mut alices = terminal(&lab, "alice", &Lab::alice()).await;
    let mut bobs = terminal(&lab, "bob", &Lab::bob()).await;

    // Alice's terminal session, as the operator finds it.
    let deadline = Instant::now() + STEP;
    let id = loop {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
            .args([
                "sessions",
                "--json",
                "--user",
                "alice",
                "--controller",
                &url,
            ])
            .output()
            .await
            .unwrap();
        let found = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|s| s["kind"] == "shell")
            .map(|s| s["id"].as_str().unwrap().to_owned());
        if let Some(id) = found {
            break id;
        }
        assert!(Instant::now() < deadline, "alice's shell was never listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut watcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
        .args(["sessions", "--watch", &id, "--controller", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut told = watcher.stderr.take().unwrap();
    read_until(&mut told, "read-only; Ctrl-C stops").await;
    let mut followed = watcher.stdout.take().unwrap();

    // Both type; bob reads his secret. Alice's marker comes last, so once the
    // watcher has it, anything of bob's would have come before it.
    bobs.typed
        .write_all(b"echo bob-$((5*5)); cat ~/secret\n")
        .await
        .unwrap();
    read_until(&mut bobs.screen, &bob.secret).await;
    alices
        .typed
        .write_all(b"echo alice-$((6*7))\n")
        .await
        .unwrap();
    let seen = read_until(&mut followed, "alice-42").await;
    assert!(
        !seen.contains("bob-25"),
        "bob's output reached the watcher: {seen}"
    );
    bob.assert_not_in(&seen, "an operator's watch of alice");

    // Bob was not told of a watch that is not his, nor shown alice's screen.
    bobs.typed.write_all(b"exit\n").await.unwrap();
    alices.typed.write_all(b"exit\n").await.unwrap();
    let mut rest = String::new();
    bobs.screen.read_to_string(&mut rest).await.unwrap();
    assert!(
        !rest.contains("alice-42"),
        "alice's output on bob's terminal: {rest}"
    );
    let bob_out = tokio::time::timeout(STEP, bobs.child.wait_with_output())
        .await
        .expect("bob's client exits")
        .unwrap();
    let bob_err = String::from_utf8_lossy(&bob_out.stderr);
    assert!(
        !bob_err.contains("watching"),
        "bob was told of alice's watch: {bob_err}"
    );
    let alice_out = tokio::time::timeout(STEP, alices.child.wait_with_output())
        .await
        .expect("alice's client exits")
        .unwrap();
    let alice_err = String::from_utf8_lossy(&alice_out.stderr);
    assert!(
        alice_err.contains("is now watching this session"),
        "{alice_err}"
    );
    let ended = tokio::time::timeout(STEP, watcher.wait())
        .await
        .expect("the watch ends with alice's session")
        .unwrap();
    assert!(ended.success());
    lab.stop().await;
}
