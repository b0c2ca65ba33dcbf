//! Idle containers paused, then stopped, and woken by the next login with the
//! student told on stderr (never stdout); busy ones left alone; old ones recreated
//! at a login with no other session, home kept. Stock `ssh`, real Docker, timers of
//! a few seconds.

use std::time::Duration;

use crate::lab::{environment_toml, Lab, LabOptions};
use labssh_testkit::ssh::{stderr, stdout};

/// Starts a lab with the environments given as (name, keys).
async fn lab_with(environments: &[(&str, &str)]) -> Lab {
    let catalogue = environments
        .iter()
        .map(|(name, keys)| environment_toml(name, keys))
        .collect();
    Lab::start(LabOptions {
        catalogue,
        ..Default::default()
    })
    .await
}

/// Runs `command` as alice in `env`; returns (exit code, stdout, stderr).
async fn alice(lab: &Lab, env: &str, command: &str) -> (Option<i32>, String, String) {
    let out = lab
        .ssh
        .run(&format!("alice+{env}"), &Lab::alice(), &[command])
        .await
        .unwrap();
    (out.status.code(), stdout(&out), stderr(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_container_is_paused_and_a_login_wakes_it() {
    let lab = lab_with(&[("nap", "idle_pause_after = \"2s\"")]).await;
    let (code, out, err) = alice(&lab, "nap", "echo hello > ~/notes; echo made").await;
    assert_eq!((code, out.trim()), (Some(0), "made"), "{err}");
    lab.wait_state("alice", "nap", "paused").await;

    let (code, out, err) = alice(&lab, "nap", "cat ~/notes").await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "hello\n", "stdout is the command's alone");
    assert!(
        err.contains("labssh: waking your paused container"),
        "{err}"
    );
    assert_eq!(lab.container_state("alice", "nap"), "running");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_container_with_no_session_is_not_paused() {
    let lab = lab_with(&[("nap", "idle_pause_after = \"2s\"")]).await;
    // Alice leaves a loop running; bob leaves nothing, after her.
    let busy = "setsid sh -c 'yes >/dev/null' </dev/null >/dev/null 2>&1 & echo started";
    let (code, out, err) = alice(&lab, "nap", busy).await;
    assert_eq!((code, out.trim()), (Some(0), "started"), "{err}");
    let out = lab
        .ssh
        .run("bob+nap", &Lab::bob(), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Bob's idled less long than alice's, and is paused: hers would have been first.
    lab.wait_state("bob", "nap", "paused").await;
    assert_eq!(lab.container_state("alice", "nap"), "running");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_container_is_stopped_and_the_next_login_starts_it_with_words() {
    let lab = lab_with(&[(
        "doze",
        "idle_pause_after = \"1s\"\nidle_stop_after = \"2s\"",
    )])
    .await;
    let (code, _, err) = alice(&lab, "doze", "echo kept > ~/notes").await;
    assert_eq!(code, Some(0), "{err}");
    let id = lab.container_id("alice", "doze").unwrap();
    lab.wait_state("alice", "doze", "exited").await;

    let (code, out, err) = alice(&lab, "doze", "cat ~/notes").await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "kept\n", "the home is intact and stdout clean");
    assert!(
        err.contains("labssh: your container was stopped after 2 s idle; starting it"),
        "{err}"
    );
    assert_eq!(
        lab.container_id("alice", "doze").unwrap(),
        id,
        "the same container"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_container_is_recreated_at_a_login_with_no_other_session() {
    let lab = lab_with(&[("aging", "max_age = \"2s\"")]).await;
    let (code, _, err) = alice(&lab, "aging", "echo kept > ~/notes").await;
    assert_eq!(code, Some(0), "{err}");
    let first = lab.container_id("alice", "aging").unwrap();

    // A session stays open past max_age: the next login joins the same container.
    let mut open = lab
        .ssh
        .command("alice+aging", &Lab::alice(), &["echo open; sleep 4"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(open.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
        .await
        .unwrap();
    assert_eq!(line, "open\n");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, _, err) = alice(&lab, "aging", "true").await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        lab.container_id("alice", "aging").unwrap(),
        first,
        "not under an open session"
    );
    assert!(open.wait().await.unwrap().success());

    // Alone now: made fresh, the home kept, with a one-line notice.
    let (code, out, err) = alice(&lab, "aging", "cat ~/notes").await;
    assert_eq!((code, out.as_str()), (Some(0), "kept\n"), "{err}");
    assert!(
        err.contains("old; making a fresh one (your home is kept)"),
        "{err}"
    );
    assert_ne!(lab.container_id("alice", "aging").unwrap(), first);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forward_wakes_a_paused_container() {
    let lab = lab_with(&[("nap", "idle_pause_after = \"2s\"")]).await;
    // An echo server outlives the session that started it; nothing else runs.
    let serve = "setsid nc -ll -p 7777 -e cat </dev/null >/dev/null 2>&1 & echo serving";
    let (code, out, err) = alice(&lab, "nap", serve).await;
    assert_eq!((code, out.trim()), (Some(0), "serving"), "{err}");
    lab.wait_listening("alice", "nap", 7777).await;
    lab.wait_state("alice", "nap", "paused").await;

    let port = labssh_testkit::process::free_port();
    let spec = format!("{port}:localhost:7777");
    let mut client = crate::forwarding::forward(&lab, "alice+nap", &["-L", &spec], port).await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(
        Duration::from_secs(30),
        crate::lab::round_trip(stream, b"through a paused container"),
    )
    .await
    .expect("echoed in time");
    assert_eq!(echoed, b"through a paused container");
    assert_eq!(lab.container_state("alice", "nap"), "running");
    let _ = client.kill().await;
    lab.stop().await;
}
