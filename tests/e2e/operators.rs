//! Operators' view across proxy replicas, with the `labssh` binary as an operator
//! runs it: `labssh sessions` lists every replica's open sessions (the controller
//! keeps what each proxy reports), `labssh kick USER` ends that student's
//! connections with a line saying so and leaves everyone else's alone, and a
//! replica that stops takes its sessions out of the list.
//!
//! Two proxy replicas share the lab's controller: the lab's own, and a second one
//! started here on its own port.

use std::process::Stdio;
use std::time::{Duration, Instant};

use labssh_testkit::ssh::Ssh;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::audit::{audit_beside_users, wait_for, ControllerAudit};
use crate::lab::{read_until, Lab, LabOptions};

const STEP: Duration = Duration::from_secs(30);

/// `labssh ARGS --controller URL`: its stdout, and whether it succeeded.
async fn labssh(lab: &Lab, args: &[&str]) -> (String, bool) {
    let url = format!("http://{}", lab.cluster.as_ref().unwrap().controller_addr);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
        .args(args)
        .args(["--controller", &url])
        .output()
        .await
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

/// Sessions listed, as JSON.
async fn listed(lab: &Lab) -> Vec<Value> {
    let (text, ok) = labssh(lab, &["sessions", "--json"]).await;
    assert!(ok, "labssh sessions failed: {text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until the listed sessions satisfy `done`.
async fn until(lab: &Lab, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + STEP;
    loop {
        let sessions = listed(lab).await;
        if done(&sessions) {
            return sessions;
        }
        assert!(Instant::now() < deadline, "{what}: {sessions:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A held session: `echo up; read line; echo still`.
struct Held {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

async fn hold(mut cmd: tokio::process::Command) -> Held {
    cmd.stdin(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let up = tokio::time::timeout(STEP, lines.next_line())
        .await
        .expect("the session answers")
        .unwrap();
    assert_eq!(up.as_deref(), Some("up"));
    Held {
        child,
        stdin,
        lines,
    }
}

const SCRIPT: &str = "echo up; read line; echo still";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_of_every_replica_are_listed_and_a_kick_ends_only_the_students() {
    let lab = Lab::start(LabOptions {
        proxy: Some(audit_beside_users),
        ..Default::default()
    })
    .await;
    // A second replica of the proxy, sharing the lab's controller and users file.
    let cluster = lab.cluster.as_ref().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_port = listener.local_addr().unwrap().port();
    let mut config = cluster.proxy_config.clone();
    config.host_keys = vec![lab.dir.path().join("second_host_key")];
    config.cache_key_file = lab.dir.path().join("second_cache.key");
    config.audit.path = String::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let second = tokio::spawn(labssh_proxy::run(listener, config, async {
        let _ = stopped.await;
    }));

    let alice = hold(lab.ssh.command("alice", &Lab::alice(), &[SCRIPT])).await;
    // Bob comes in through the second replica.
    let second_ssh = Ssh::new(std::net::SocketAddr::from(([127, 0, 0, 1], second_port))).unwrap();
    let mut bob_cmd = second_ssh.command("bob", &Lab::bob(), &[SCRIPT]);
    bob_cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut bob = hold(bob_cmd).await;

    // Both replicas' sessions, in one list.
    let sessions = until(&lab, "alice and bob listed", |s| {
        s.iter().any(|x| x["user"] == "alice") && s.iter().any(|x| x["user"] == "bob")
    })
    .await;
    let proxy_of = |user: &str| {
        sessions.iter().find(|s| s["user"] == user).unwrap()["proxy"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_ne!(proxy_of("alice"), proxy_of("bob"), "{sessions:#?}");
    assert!(proxy_of("bob").ends_with(&format!(":{second_port}")));
    let alices = sessions.iter().find(|s| s["user"] == "alice").unwrap();
    assert_eq!(alices["kind"], "exec");
    assert_eq!(alices["agent"], "agent0");
    assert_eq!(alices["environment"], "default");
    // The table names them too.
    let (table, ok) = labssh(&lab, &["sessions", "--user", "alice"]).await;
    assert!(
        ok && table.contains("alice") && !table.contains("bob"),
        "{table}"
    );

    // The status names the agent, both replicas and the sessions.
    let (status, ok) = labssh(&lab, &["status"]).await;
    assert!(ok, "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("agent0") && l.contains(" live ")),
        "{status}"
    );
    assert!(
        status.contains("1 agent(s), 2 proxy replica(s), 2 session(s)"),
        "{status}"
    );
    let (status, ok) = labssh(&lab, &["status", "--json"]).await;
    assert!(ok, "{status}");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["sessions"], 2, "{status}");
    assert_eq!(status["proxies"].as_array().unwrap().len(), 2, "{status}");
    assert_eq!(status["agents"][0]["name"], "agent0", "{status}");
    assert_eq!(status["agents"][0]["state"], "live", "{status}");

    // Kick alice: her client is told and exits; bob goes on.
    let (said, ok) = labssh(&lab, &["kick", "alice"]).await;
    assert!(ok, "{said}");
    assert!(said.contains("1 open session(s) listed"), "{said}");
    let out = tokio::time::timeout(STEP, alice.child.wait_with_output())
        .await
        .expect("alice's client exits")
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("labssh: your session was ended by an operator"),
        "{stderr}"
    );
    drop(alice.stdin);
    // The kick is in the replica's audit log, with who asked.
    let kick = wait_for(&lab, "kick", |_| true).await;
    assert_eq!(kick["user"], "alice");
    assert!(kick["by"].as_str().unwrap().contains("operator"), "{kick}");
    bob.stdin.write_all(b"\n").await.unwrap();
    let still = tokio::time::timeout(STEP, bob.lines.next_line())
        .await
        .expect("bob's session answers")
        .unwrap();
    assert_eq!(still.as_deref(), Some("still"));
    until(&lab, "alice gone from the list", |s| {
        !s.iter().any(|x| x["user"] == "alice")
    })
    .await;
    // Kicking someone with nothing open says so.
    let (_, ok) = labssh(&lab, &["kick", "--session", "nobody:1/1/1"]).await;
    assert!(!ok, "a kick of an unknown session succeeded");

    // The second replica stops: bob's session leaves the list with it.
    let _ = bob.child.kill().await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(STEP, second).await;
    until(&lab, "bob gone with his replica", |s| {
        !s.iter().any(|x| x["user"] == "bob")
    })
    .await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_watches_a_terminal_session_read_only_and_sees_bytes_and_forwards() {
    let controller_audit = ControllerAudit::new();
    let lab = Lab::start(LabOptions {
        catalogue: controller_audit.catalogue(),
        proxy: Some(audit_beside_users),
        ..Default::default()
    })
    .await;
    let url = format!("http://{}", lab.cluster.as_ref().unwrap().controller_addr);
    let watch = |id: &str| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_labssh"));
        cmd.args(["sessions", "--watch", id, "--controller", &url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    };

    // Alice's terminal session, and bob's command without one.
    let mut cmd = lab.ssh.command_with("alice", &Lab::alice(), &["-tt"], &[]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut alice = cmd.spawn().unwrap();
    let mut typed = alice.stdin.take().unwrap();
    typed.write_all(b"echo ready-$((2*3))\n").await.unwrap();
    let mut screen = alice.stdout.take().unwrap();
    read_until(&mut screen, "ready-6").await;
    let bob = hold(lab.ssh.command("bob", &Lab::bob(), &[SCRIPT])).await;
    let sessions = until(&lab, "alice's shell and bob's command listed", |s| {
        s.iter()
            .any(|x| x["user"] == "alice" && x["kind"] == "shell")
            && s.iter().any(|x| x["user"] == "bob")
    })
    .await;
    let of = |user: &str| sessions.iter().find(|s| s["user"] == user).unwrap().clone();
    let (alices, bobs) = (of("alice"), of("bob"));
    assert_eq!(alices["watchable"], true, "{alices}");
    assert_eq!(bobs["watchable"], false, "{bobs}");

    // A session with no terminal cannot be watched; nor one that is not open.
    let out = watch(bobs["id"].as_str().unwrap()).output().await.unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("only terminal sessions can be watched"),
        "{said}"
    );
    let out = watch("nowhere:1/1/1").output().await.unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no proxy reports an open session"), "{said}");

    // Watching alice: the watcher is told whose it is, alice is told she is
    // watched, and the watcher sees her last lines, then what her terminal shows
    // from then on, once each.
    let mut watcher = watch(alices["id"].as_str().unwrap()).spawn().unwrap();
    let mut told = watcher.stderr.take().unwrap();
    let header = read_until(&mut told, "read-only; Ctrl-C stops").await;
    assert!(header.contains("watching alice's session"), "{header}");
    let mut followed = watcher.stdout.take().unwrap();
    read_until(&mut followed, "ready-6").await;
    typed.write_all(b"echo watched-$((6*7))\n").await.unwrap();
    let seen = read_until(&mut followed, "watched-42").await;
    assert!(
        !seen.contains("ready-6"),
        "output from before the watch came twice: {seen}"
    );
    // Her byte counts reach the list.
    until(&lab, "alice's bytes counted", |s| {
        s.iter().any(|x| {
            x["user"] == "alice"
                && x["bytes_to_container"].as_u64() > Some(20)
                && x["bytes_to_client"].as_u64() > Some(20)
        })
    })
    .await;

    // Her forward is listed, with where it goes, while it is open.
    let _server = crate::forwarding::background(&lab, "alice", "exec nc -ll -p 7791 -e cat");
    lab.wait_listening("alice", "default", 7791).await;
    let port = labssh_testkit::process::free_port();
    let spec = format!("{port}:localhost:7791");
    let mut tunnel = crate::forwarding::forward(&lab, "alice", &["-L", &spec], port).await;
    let held = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    until(&lab, "alice's forward listed", |s| {
        s.iter().any(|x| {
            x["user"] == "alice" && x["kind"] == "forward" && x["destination"] == "localhost:7791"
        })
    })
    .await;
    drop(held);
    let _ = tunnel.kill().await;

    // The watcher leaves: alice is told.
    let _ = watcher.kill().await;
    let mut alice_err = alice.stderr.take().unwrap();
    read_until(&mut alice_err, "stopped watching this session").await;
    // A second watcher stays until alice leaves: the watch ends saying so.
    let mut watcher = watch(alices["id"].as_str().unwrap()).spawn().unwrap();
    let mut told = watcher.stderr.take().unwrap();
    read_until(&mut told, "read-only; Ctrl-C stops").await;
    typed.write_all(b"exit\n").await.unwrap();
    let status = tokio::time::timeout(STEP, watcher.wait())
        .await
        .expect("the watch ends with the session")
        .unwrap();
    let tail = read_until(&mut told, "the session ended").await;
    assert!(status.success(), "{tail}");
    tokio::time::timeout(STEP, alice.wait())
        .await
        .expect("alice's client exits")
        .unwrap();
    let mut stderr = String::new();
    alice_err.read_to_string(&mut stderr).await.unwrap();
    assert!(
        stderr.contains("is now watching this session (read-only)"),
        "alice was not told of the second watch: {stderr}"
    );
    assert!(
        !stderr.contains("stopped watching"),
        "a watch that ended with the session is not announced: {stderr}"
    );
    // The watch is audited with who watched.
    let watched = wait_for(&lab, "watch", |_| true).await;
    assert_eq!(watched["user"], "alice");
    assert_eq!(watched["session"], alices["id"]);
    assert!(
        watched["by"].as_str().unwrap().contains("operator"),
        "{watched}"
    );
    // The controller's audit log has each watch asked for, and why one was refused.
    let (text, watches) = controller_audit.until("watch", 4).await;
    let asked: Vec<(String, Value)> = watches
        .iter()
        .map(|e| {
            (
                e["session"].as_str().unwrap().to_owned(),
                e["error"].clone(),
            )
        })
        .collect();
    assert_eq!(asked.len(), 4, "{text}");
    assert_eq!(asked[0].0, bobs["id"].as_str().unwrap());
    assert!(
        asked[0].1.as_str().unwrap().contains("no terminal"),
        "{text}"
    );
    assert_eq!(asked[1].0, "nowhere:1/1/1");
    assert_eq!(
        asked[2],
        (alices["id"].as_str().unwrap().to_owned(), Value::Null)
    );
    drop(bob);
    lab.stop().await;
}
