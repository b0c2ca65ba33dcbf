//! One SSH connection carrying many channels at once, as OpenSSH's ControlMaster and
//! VS Code's Remote-SSH use it: 30 exec sessions, 19 forwarded connections and an
//! SFTP subsystem open together on one connection all work, and `ssh -O exit` then
//! leaves nothing behind: no proxy or agent task, no socket in this process (proxy
//! and agent run in it), no channel counted active, no process left in the container.
//! Counted over a second such connection, after a first has warmed what is pooled.
//!
//! Its own test binary, so the process-wide metrics and descriptor counts are this
//! test's alone.

mod lab;

use std::process::Stdio;
use std::time::{Duration, Instant};

use lab::{connect_when_up, echo_connections, leaks, round_trip, Lab, LabOptions};
use labssh_testkit::process::free_port;
use labssh_testkit::ssh::{stderr, stdout};
use tokio::io::AsyncWriteExt;

const STEP: Duration = Duration::from_secs(60);
/// Exec sessions on the one connection (the agent's default cap is 32 per student).
const SESSIONS: usize = 30;
/// Forwarded connections open beside them.
const FORWARDS: usize = 19;
/// The echo server in the container.
const ECHO: u16 = 7792;

/// The processes in alice's container running `sleep 3` (the sessions' commands).
fn sleeping(lab: &Lab) -> usize {
    let name = lab.container_name("alice", "default");
    labssh_testkit::docker::docker(&["exec", &name, "ps", "-o", "args"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.trim() == "sleep 3")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_channels_on_one_connection_work_and_ssh_o_exit_leaves_nothing() {
    let lab = Lab::start(LabOptions::default()).await;
    let mut server = lab
        .ssh
        .command(
            "alice",
            &Lab::alice(),
            &[&format!("exec nc -ll -p {ECHO} -e cat")],
        )
        .spawn()
        .unwrap();
    lab.wait_listening("alice", "default", ECHO).await;
    // A first round warms what the cluster keeps for reuse whatever the channels
    // (its pooled connections to Docker among them, which grow with concurrency);
    // the second, on a new master connection, must leave nothing beyond it.
    exercise(&lab, 0).await;
    let baseline = leaks::settled(STEP, leaks::Counts::now).await;
    exercise(&lab, 1).await;

    let deadline = Instant::now() + STEP;
    loop {
        let now = leaks::Counts::now();
        if now.within(&baseline) && sleeping(&lab) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leaked: now {now:?}, before {baseline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = server.kill().await;
    lab.stop().await;
}

/// One ControlMaster connection: the sessions, forwarded connections and SFTP at
/// once, then `ssh -O exit`.
async fn exercise(lab: &Lab, round: usize) {
    let control = lab.ssh.dir().join(format!("control{round}"));
    let ctl = control.to_str().unwrap().to_owned();
    let local = free_port();
    let spec = format!("{local}:localhost:{ECHO}");
    let mut master = lab
        .ssh
        .command_with(
            "alice",
            &Lab::alice(),
            &[
                "-M",
                "-S",
                &ctl,
                "-o",
                "ControlPersist=no",
                "-N",
                "-L",
                &spec,
            ],
            &[],
        )
        .spawn()
        .unwrap();
    drop(connect_when_up(local).await);
    // The forwarded connections, open before the sessions start and used while they
    // run (opened one by one: see `echo_connections`).
    let connections = echo_connections(local, FORWARDS).await;

    // Everything at once: sessions that overlap for 3 s, traffic on every forwarded
    // connection and an SFTP listing, all over the master's one connection.
    let sessions = (0..SESSIONS).map(|i| {
        let cmd = lab.ssh.command_with(
            "alice",
            &Lab::alice(),
            &["-S", &ctl],
            &[&format!("sleep 3; echo s{i}")],
        );
        async move {
            let out = tokio::time::timeout(STEP, labssh_testkit::ssh::output(cmd))
                .await
                .expect("session finished")
                .unwrap();
            assert_eq!(stdout(&out), format!("s{i}\n"), "{}", stderr(&out));
        }
    });
    let forwards = connections
        .into_iter()
        .enumerate()
        .map(|(i, s)| async move {
            let msg = format!("through {i}\n");
            let back = tokio::time::timeout(STEP, round_trip(s, msg.as_bytes()))
                .await
                .expect("echoed");
            assert_eq!(back, msg.as_bytes());
        });
    let port = lab.ssh.addr().port().to_string();
    let sftp = async {
        let mut cmd = lab.ssh.tool(
            "sftp",
            &[
                "-o",
                &format!("ControlPath={ctl}"),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-P",
                &port,
                "-b",
                "-",
                "alice@127.0.0.1",
            ],
        );
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"ls /\n").await.unwrap();
        drop(stdin);
        let out = tokio::time::timeout(STEP, child.wait_with_output())
            .await
            .expect("sftp finished")
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("/home"), "{}", stdout(&out));
    };
    let during = async {
        // While they run: every session's process is in the container at once.
        let deadline = Instant::now() + STEP;
        while sleeping(lab) < SESSIONS {
            assert!(
                Instant::now() < deadline,
                "not all sessions ran at once: {}",
                sleeping(lab)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::join!(
        futures::future::join_all(sessions),
        futures::future::join_all(forwards),
        sftp,
        during
    );

    let out = labssh_testkit::ssh::output(lab.ssh.tool("ssh", &["-S", &ctl, "-O", "exit", "lab"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let status = tokio::time::timeout(STEP, master.wait())
        .await
        .expect("master exited")
        .unwrap();
    assert!(status.success() || status.code() == Some(255), "{status}");
    drop(master);
}
