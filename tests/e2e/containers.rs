//! Operators' container actions with the `labssh` binary as an operator runs it:
//! `labssh containers` lists every agent's containers; `labssh container reset`
//! makes a student's container anew (a fresh root, the home kept) and ends the
//! sessions in it with a line saying why; `stop` stops it until the next login;
//! `remove --home` deletes the home only when confirmed. Another student's
//! container and session are never touched.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::lab::{Lab, LabOptions};

const STEP: Duration = Duration::from_secs(60);

/// `labssh ARGS --controller URL`: stdout, stderr and whether it succeeded.
pub(crate) async fn labssh(lab: &Lab, args: &[&str]) -> (String, String, bool) {
    let url = format!("http://{}", lab.cluster.as_ref().unwrap().controller_addr);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
        .args(args)
        .args(["--controller", &url])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// The containers listed, as JSON.
async fn containers(lab: &Lab) -> Vec<Value> {
    let (text, err, ok) = labssh(lab, &["containers", "--json"]).await;
    assert!(ok, "labssh containers failed: {err}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until `user`'s listed container is in `state` ("gone": not listed).
async fn until_listed(lab: &Lab, user: &str, state: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        let listed = containers(lab).await;
        let theirs = listed.iter().find(|c| c["user"] == user);
        let now = theirs.map_or("gone", |c| c["state"].as_str().unwrap());
        if now == state {
            if let Some(c) = theirs {
                assert_eq!(
                    (&c["agent"], &c["agent_live"]),
                    (&"agent0".into(), &true.into())
                );
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user}'s container never listed {state}: {listed:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ssh USER CMD`: its stdout, and its exit status.
async fn run(lab: &Lab, user: &str, command: &str) -> (String, Option<i32>) {
    let auth = if user == "alice" {
        Lab::alice()
    } else {
        Lab::bob()
    };
    let out = lab
        .ssh
        .command(user, &auth, &[command])
        .output()
        .await
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

/// A session kept open: it prints `up`, then waits for a line.
async fn hold(lab: &Lab, user: &str) -> (tokio::process::Child, tokio::process::ChildStdin) {
    let auth = if user == "alice" {
        Lab::alice()
    } else {
        Lab::bob()
    };
    let mut cmd = lab
        .ssh
        .command(user, &auth, &["echo up; read line; echo still"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let up = tokio::time::timeout(STEP, lines.next_line())
        .await
        .expect("the session answers")
        .unwrap();
    assert_eq!(up.as_deref(), Some("up"));
    // The rest of its output stays readable after this.
    child.stdout = Some(lines.into_inner().into_inner());
    (child, stdin)
}

/// After a reset: the marker written in the container's root is gone, the file
/// in alice's home is there.
async fn assert_fresh_root_and_kept_home(lab: &Lab, name: &str) {
    assert!(
        labssh_testkit::docker::docker(&["exec", name, "test", "-e", "/etc/marker"]).is_err(),
        "the old root's file survived the reset"
    );
    assert_eq!(
        run(lab, "alice", "cat ~/kept").await,
        ("kept\n".into(), Some(0))
    );
}

/// A session from [`hold`] still answers, and ends well.
async fn assert_still_answers(
    child: &mut tokio::process::Child,
    stdin: &mut tokio::process::ChildStdin,
) {
    use tokio::io::AsyncWriteExt;
    stdin.write_all(b"\n").await.unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let still = tokio::time::timeout(STEP, lines.next_line())
        .await
        .expect("the session answers")
        .unwrap();
    assert_eq!(still.as_deref(), Some("still"));
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_gives_a_fresh_root_keeps_the_home_and_ends_only_that_students_sessions() {
    // The controller's audit log: every operator action, done or refused.
    let audit = crate::audit::ControllerAudit::new();
    let lab = Lab::start(LabOptions {
        catalogue: audit.catalogue(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        run(&lab, "alice", "echo kept > ~/kept && echo ok").await,
        ("ok\n".into(), Some(0))
    );
    let name = lab.container_name("alice", "default");
    // Something in the container's own root, which a reset must not keep.
    labssh_testkit::docker::docker(&["exec", &name, "sh", "-c", "echo x > /etc/marker"]).unwrap();
    let before = lab.container_id("alice", "default").unwrap();
    let (alice, _alice_in) = hold(&lab, "alice").await;
    let (mut bob, mut bob_in) = hold(&lab, "bob").await;
    until_listed(&lab, "alice", "running").await;
    until_listed(&lab, "bob", "running").await;
    let (table, _, ok) = labssh(&lab, &["containers", "--user", "alice"]).await;
    assert!(
        ok && table.contains("alice") && !table.contains("bob"),
        "{table}"
    );

    let (said, err, ok) = labssh(&lab, &["container", "reset", "alice"]).await;
    assert!(ok, "reset failed: {err}");
    assert!(
        said.contains("alice+default on agent0: made anew") && said.contains("1 session(s) ended"),
        "{said}"
    );
    // Her open session ended with the reason, and status 255.
    let out = tokio::time::timeout(STEP, alice.wait_with_output())
        .await
        .expect("alice's client exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("labssh: your container is being reset by an operator"),
        "{stderr}"
    );
    // A new container: the root's file gone, the home's kept.
    let after = lab.container_id("alice", "default").unwrap();
    assert_ne!(before, after, "the container was made anew");
    assert_fresh_root_and_kept_home(&lab, &name).await;
    // Bob's session went on throughout.
    assert_still_answers(&mut bob, &mut bob_in).await;

    // Stop: listed stopped; the next login starts it, files kept.
    let (said, err, ok) = labssh(&lab, &["container", "stop", "alice+default"]).await;
    assert!(ok && said.contains("stopped"), "{said}{err}");
    lab.wait_state("alice", "default", "exited").await;
    until_listed(&lab, "alice", "stopped").await;
    assert_eq!(lab.container_state("bob", "default"), "running");
    let (said, err, ok) = labssh(&lab, &["container", "start", "alice"]).await;
    assert!(ok && said.contains("running"), "{said}{err}");
    lab.wait_state("alice", "default", "running").await;
    assert_eq!(
        run(&lab, "alice", "cat ~/kept").await,
        ("kept\n".into(), Some(0))
    );

    // Bad input: a clear error, nothing done.
    let (_, err, ok) = labssh(&lab, &["container", "reset", "carol"]).await;
    assert!(
        !ok && err.contains("carol has no container of 'default'"),
        "{err}"
    );
    let (_, err, ok) = labssh(&lab, &["container", "stop", "alice+nosuch"]).await;
    assert!(!ok && err.contains("no container of 'nosuch'"), "{err}");
    // Deleting a home is asked twice: without a terminal, only with --yes.
    let (_, err, ok) = labssh(&lab, &["container", "remove", "alice", "--home"]).await;
    assert!(!ok && err.contains("add --yes"), "{err}");
    assert!(lab.container_id("alice", "default").is_some());

    // Remove keeps the home unless asked.
    let (said, err, ok) = labssh(&lab, &["container", "remove", "alice"]).await;
    assert!(ok && said.contains("removed, the home kept"), "{said}{err}");
    assert!(lab.container_id("alice", "default").is_none());
    until_listed(&lab, "alice", "gone").await;
    assert_eq!(
        run(&lab, "alice", "cat ~/kept").await,
        ("kept\n".into(), Some(0))
    );
    let (said, err, ok) = labssh(&lab, &["container", "remove", "alice", "--home", "--yes"]).await;
    assert!(ok && said.contains("its home with it"), "{said}{err}");
    let volume = format!("{}-home-alice", lab.prefix());
    assert!(
        labssh_testkit::docker::docker(&["volume", "inspect", &volume]).is_err(),
        "the home volume {volume} is still there"
    );
    let (out, status) = run(&lab, "alice", "cat ~/kept 2>&1; true").await;
    assert!(out.contains("No such file"), "{out} {status:?}");
    // Bob's home is his own still.
    assert_eq!(lab.container_state("bob", "default"), "running");

    // One line per action, in order, each saying who, what, on whom and how it went.
    // (The refused `--home` without `--yes` never left the command line.)
    let (text, actions) = audit.until("container_action", 7).await;
    lab.stop().await;
    let summary: Vec<(String, String, String, bool, bool)> = actions
        .iter()
        .map(|e| {
            let word = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (
                word("action"),
                word("user"),
                word("environment"),
                e["remove_home"].as_bool().unwrap(),
                e["error"].is_null(),
            )
        })
        .collect();
    let row = |a: &str, u: &str, env: &str, home: bool, ok: bool| {
        (a.to_owned(), u.to_owned(), env.to_owned(), home, ok)
    };
    assert_eq!(
        summary,
        [
            row("reset", "alice", "", false, true),
            row("stop", "alice", "default", false, true),
            row("start", "alice", "", false, true),
            row("reset", "carol", "", false, false),
            row("stop", "alice", "nosuch", false, false),
            row("remove", "alice", "", false, true),
            row("remove", "alice", "", true, true),
        ],
        "{text}"
    );
    let reset = &actions[0];
    assert_eq!(reset["by"], "an operator (mTLS off)");
    assert_eq!(reset["agent"], "agent0");
    assert_eq!(reset["sessions_ended"], 1);
    assert!(reset["ts"].as_str().unwrap().ends_with('Z'), "{reset}");
    assert!(
        reset["controller"].as_str().unwrap().contains(':'),
        "{reset}"
    );
    assert!(
        actions[3]["error"]
            .as_str()
            .unwrap()
            .contains("carol has no container"),
        "{}",
        actions[3]
    );
    for secret in [crate::lab::ALICE_PW, crate::lab::BOB_PW] {
        assert!(
            !text.contains(secret),
            "a password in the audit log: {text}"
        );
    }
}

/// `ssh LOGIN [OPTIONS] [ARGS]` as `user` (alice or bob by password): stdout,
/// stderr and the exit status.
async fn ssh(
    lab: &Lab,
    login: &str,
    user: &str,
    options: &[&str],
    args: &[&str],
) -> (String, String, Option<i32>) {
    let auth = if user == "alice" {
        Lab::alice()
    } else {
        Lab::bob()
    };
    let mut cmd = lab.ssh.command_with(login, &auth, options, args);
    cmd.stdin(Stdio::null());
    let out = tokio::time::timeout(STEP, cmd.output())
        .await
        .expect("ssh exits")
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

/// The listing's word for the default environment's container.
fn default_state(listing: &str) -> &str {
    let row = listing
        .lines()
        .find(|l| l.starts_with("default (default)"))
        .unwrap_or_else(|| panic!("no default row in {listing}"));
    row.split_whitespace().nth(2).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_self_service_login_lists_stops_starts_and_resets_only_the_students_own_container() {
    let lab = Lab::start(LabOptions::default()).await;
    // Before any login: the environment is listed, with no container.
    let (listing, err, status) = ssh(&lab, "alice+", "alice", &[], &[]).await;
    assert_eq!(status, Some(0), "{err}");
    assert!(listing.starts_with("ENVIRONMENT"), "{listing}");
    assert_eq!(default_state(&listing), "none", "{listing}");
    assert!(listing.contains("ssh alice+@HOST reset [ENV]"), "{listing}");
    assert!(
        lab.container_id("alice", "default").is_none(),
        "the listing made a container"
    );

    assert_eq!(
        run(&lab, "alice", "echo kept > ~/kept && echo ok").await,
        ("ok\n".into(), Some(0))
    );
    let name = lab.container_name("alice", "default");
    labssh_testkit::docker::docker(&["exec", &name, "sh", "-c", "echo x > /etc/marker"]).unwrap();
    let (listing, _, _) = ssh(&lab, "alice+", "alice", &[], &["status"]).await;
    assert_eq!(default_state(&listing), "running", "{listing}");
    // Bob's listing is his own: alice's running container is not in it.
    let (listing, _, status) = ssh(&lab, "bob+", "bob", &[], &["list"]).await;
    assert_eq!(
        (default_state(&listing), status),
        ("none", Some(0)),
        "{listing}"
    );

    // Reset with a session of hers and one of bob's open.
    let before = lab.container_id("alice", "default").unwrap();
    let (alice, _alice_in) = hold(&lab, "alice").await;
    let (mut bob, mut bob_in) = hold(&lab, "bob").await;
    let bob_before = lab.container_id("bob", "default").unwrap();
    let (said, err, status) = ssh(&lab, "alice+", "alice", &[], &["reset"]).await;
    assert_eq!(status, Some(0), "{said}{err}");
    assert!(
        said.contains("is made anew from its image: your home is kept (1 open session(s) ended)"),
        "{said}"
    );
    let out = tokio::time::timeout(STEP, alice.wait_with_output())
        .await
        .expect("alice's held client exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("your container is being reset by you (from another login)"),
        "{stderr}"
    );
    assert_ne!(lab.container_id("alice", "default").unwrap(), before);
    assert_fresh_root_and_kept_home(&lab, &name).await;
    // Bob's session and container went on.
    assert_still_answers(&mut bob, &mut bob_in).await;
    assert_eq!(lab.container_id("bob", "default").unwrap(), bob_before);

    // Only her own containers can be named; anything else is refused, nothing done.
    let alice_now = lab.container_id("alice", "default").unwrap();
    for command in [
        "reset ../bob",
        "remove",
        "reset bob+default",
        "stop default extra",
    ] {
        let (out, err, status) = ssh(&lab, "alice+", "alice", &[], &[command]).await;
        assert_eq!(status, Some(1), "{command}: {out}{err}");
        assert!(err.contains("labssh: unknown command"), "{command}: {err}");
        assert!(
            err.contains("ssh alice+@HOST stop [ENV]"),
            "{command}: {err}"
        );
    }
    let (_, err, status) = ssh(&lab, "alice+", "alice", &[], &["stop", "nosuch"]).await;
    assert_eq!(status, Some(255), "{err}");
    assert!(
        err.contains("no container of 'nosuch': there is no such environment"),
        "{err}"
    );
    // No files, no forwarding, no one else's password.
    let (_, err, status) = ssh(&lab, "alice+", "alice", &["-s"], &["sftp"]).await;
    assert_eq!(status, Some(255), "{err}");
    assert!(
        err.contains("the self-service login has no sftp subsystem"),
        "{err}"
    );
    // (`ssh -W` prints only its own line; the proxy's reason goes with `-v`.)
    let (_, err, status) = ssh(&lab, "alice+", "alice", &["-v", "-W", "localhost:22"], &[]).await;
    assert_eq!(status, Some(255), "{err}");
    assert!(
        err.contains("administratively prohibited: labssh: the self-service login alice+ has no container to forward to"),
        "{err}"
    );
    let (_, err, status) = ssh(&lab, "alice+", "bob", &[], &["reset"]).await;
    assert_eq!(status, Some(255), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    let (_, err, status) = ssh(&lab, "alice++", "alice", &[], &["reset"]).await;
    assert_eq!(status, Some(255), "{err}");
    assert_eq!(lab.container_id("alice", "default").unwrap(), alice_now);
    assert_eq!(lab.container_id("bob", "default").unwrap(), bob_before);

    // Stop: only hers stops; start brings it back with her files.
    let (said, err, status) = ssh(&lab, "alice+", "alice", &[], &["stop"]).await;
    assert_eq!(status, Some(0), "{said}{err}");
    assert!(said.contains("is stopped: your files are kept"), "{said}");
    lab.wait_state("alice", "default", "exited").await;
    assert_eq!(lab.container_state("bob", "default"), "running");
    let (listing, _, _) = ssh(&lab, "alice+", "alice", &[], &[]).await;
    assert_eq!(default_state(&listing), "stopped", "{listing}");
    let (said, err, status) = ssh(&lab, "alice+", "alice", &[], &["start", "default"]).await;
    assert_eq!(status, Some(0), "{said}{err}");
    assert!(said.contains("is running"), "{said}");
    lab.wait_state("alice", "default", "running").await;
    assert_eq!(
        run(&lab, "alice", "cat ~/kept").await,
        ("kept\n".into(), Some(0))
    );
    lab.stop().await;
}
