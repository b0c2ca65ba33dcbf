//! Per-student caps, across a student's SSH connections: over a cap the student is
//! refused with a message, another student is not, and closing gives the count back.

use std::time::{Duration, Instant};

use futures::StreamExt;
use labssh_proto::pb;
use labssh_testkit::process::free_port;
use labssh_testkit::ssh::{stderr, stdout};
use pb::agent_client::AgentClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{held_session, until, STEP};
use crate::lab::{connect_when_up, round_trip, Lab, LabOptions};

async fn lab_with(agent_config: fn(&mut labssh_agent::Config)) -> Lab {
    Lab::start(LabOptions {
        agent_config: Some(agent_config),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_are_capped_per_student_across_connections() {
    let lab = lab_with(|a| a.max_sessions_per_user = 2).await;
    // Two SSH connections, one session each.
    let first = held_session(&lab, "alice", &Lab::alice(), "exec sleep 600").await;
    let _second = held_session(&lab, "alice", &Lab::alice(), "exec sleep 600").await;
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo third"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "too many open sessions on this node for alice (2); close some and try again"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "the third session ran");
    // Bob is not affected.
    let out = lab
        .ssh
        .run("bob", &Lab::bob(), &["echo bob-ok"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "bob-ok\n", "{}", stderr(&out));
    // Closing one gives alice a session back.
    drop(first);
    let out = until(&lab, "alice", &Lab::alice(), "echo again", |o| {
        o.status.success()
    })
    .await;
    assert_eq!(stdout(&out), "again\n");
    lab.stop().await;
}

/// One byte through an open forwarded connection and back (an echo server).
async fn echo(s: &mut TcpStream) {
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    tokio::time::timeout(STEP, s.read_exact(&mut b))
        .await
        .expect("echo in time")
        .expect("the connection is open");
    assert_eq!(&b, b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwards_are_capped_per_student_across_connections() {
    let lab = lab_with(|a| a.max_forwards_per_user = 2).await;
    let _alice_echo =
        held_session(&lab, "alice", &Lab::alice(), "exec nc -ll -p 7777 -e cat").await;
    let _bob_echo = held_session(&lab, "bob", &Lab::bob(), "exec nc -ll -p 7777 -e cat").await;
    lab.wait_listening("alice", "default", 7777).await;
    lab.wait_listening("bob", "default", 7777).await;
    // Two SSH connections forwarding, one open connection through each.
    let mut tunnels = Vec::new();
    let mut open = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let spec = format!("{port}:localhost:7777");
        tunnels.push(
            lab.ssh
                .command_with("alice", &Lab::alice(), &["-N", "-L", &spec], &[])
                .spawn()
                .unwrap(),
        );
        let mut s = connect_when_up(port).await;
        echo(&mut s).await;
        open.push((port, s));
    }
    // A third, on a third connection, is refused with the reason.
    let port = free_port();
    let spec = format!("{port}:localhost:7777");
    let child = lab
        .ssh
        .command_with(
            "alice",
            &Lab::alice(),
            &["-o", "LogLevel=INFO", "-L", &spec],
            &["sleep 3; echo session-alive"],
        )
        .spawn()
        .unwrap();
    let mut s = connect_when_up(port).await;
    let _ = s.write_all(b"x").await;
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(STEP, s.read(&mut buf))
        .await
        .expect("the refused forward closes")
        .unwrap_or(0);
    assert_eq!(n, 0, "a third forwarded connection reached the echo server");
    let out = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stdout(&out), "session-alive\n", "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "too many open forwarded connections on this node for alice (2); close some and try again"
        ),
        "{}",
        stderr(&out)
    );
    // Bob is not affected.
    let bob_port = free_port();
    let spec = format!("{bob_port}:localhost:7777");
    let _bob_tunnel = lab
        .ssh
        .command_with("bob", &Lab::bob(), &["-N", "-L", &spec], &[])
        .spawn()
        .unwrap();
    let s = connect_when_up(bob_port).await;
    assert_eq!(round_trip(s, b"bob\n").await, b"bob\n");
    // Closing one connection gives alice a forward back.
    let (port, closed) = open.pop().unwrap();
    drop(closed);
    let deadline = Instant::now() + STEP;
    loop {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = s.write_all(b"y").await;
        let mut b = [0u8; 1];
        if let Ok(Ok(1)) = tokio::time::timeout(STEP, s.read(&mut b)).await {
            assert_eq!(&b, b"y");
            break;
        }
        assert!(Instant::now() < deadline, "alice never got a forward back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(tunnels);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_listeners_are_capped_per_student_across_connections() {
    let lab = lab_with(|a| a.max_listeners_per_user = 1).await;
    let first = lab
        .ssh
        .command_with(
            "alice",
            &Lab::alice(),
            &[
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                "9301:127.0.0.1:9",
            ],
            &[],
        )
        .spawn()
        .unwrap();
    lab.wait_listening("alice", "default", 9301).await;
    let second = |login: &'static str, auth| {
        let lab = &lab;
        async move {
            labssh_testkit::ssh::output(lab.ssh.command_with(
                login,
                &auth,
                &["-o", "ExitOnForwardFailure=yes", "-R", "9302:127.0.0.1:9"],
                &["echo ran"],
            ))
            .await
            .unwrap()
        }
    };
    let out = second("alice", Lab::alice()).await;
    assert!(!out.status.success(), "a second listener was allowed");
    assert!(
        stderr(&out).contains("remote port forwarding failed"),
        "{}",
        stderr(&out)
    );
    // Bob is not affected.
    let out = second("bob", Lab::bob()).await;
    assert_eq!(stdout(&out), "ran\n", "{}", stderr(&out));
    // Closing the first gives alice a listener back.
    drop(first);
    let deadline = Instant::now() + STEP;
    loop {
        let out = second("alice", Lab::alice()).await;
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice never got a listener back: {}",
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    lab.stop().await;
}

/// Attaches an accepted `ssh -R` connection, as a proxy would.
async fn attach(
    agent: &mut AgentClient<tonic::transport::Channel>,
    user: &str,
    connection: u64,
) -> Result<tonic::Streaming<pb::ForwardOutput>, String> {
    let first = pb::ForwardInput {
        msg: Some(pb::forward_input::Msg::Attach(pb::ForwardAttach {
            user: user.into(),
            environment: "default".into(),
            connection,
        })),
    };
    let input = futures::stream::iter([first]).chain(futures::stream::pending());
    let mut out = agent
        .forward(input)
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    match tokio::time::timeout(STEP, out.next()).await {
        Ok(Some(Ok(pb::ForwardOutput {
            msg: Some(pb::forward_output::Msg::Opened(_)),
        }))) => Ok(out),
        other => Err(format!("{other:?}")),
    }
}

/// The next connection a Listen call announces.
async fn accepted(events: &mut tonic::Streaming<pb::ListenEvent>) -> u64 {
    match tokio::time::timeout(STEP, events.next()).await {
        Ok(Some(Ok(pb::ListenEvent {
            msg: Some(pb::listen_event::Msg::Accepted(a)),
        }))) => a.connection,
        other => panic!("expected an accepted connection, got {other:?}"),
    }
}

/// Listens in `user`'s container through the agent's Listen rpc; returns the port.
async fn listen(
    agent: &mut AgentClient<tonic::transport::Channel>,
    user: &str,
) -> (tonic::Streaming<pb::ListenEvent>, u32) {
    let request = pb::ListenRequest {
        user: user.into(),
        environment: "default".into(),
        host: "localhost".into(),
        port: 0,
        ..Default::default()
    };
    let mut events = agent.listen(request).await.unwrap().into_inner();
    match tokio::time::timeout(STEP, events.next()).await {
        Ok(Some(Ok(pb::ListenEvent {
            msg: Some(pb::listen_event::Msg::Listening(l)),
        }))) => (events, l.port),
        other => panic!("listen failed: {other:?}"),
    }
}

/// `docker exec` in `user`'s container of this lab.
fn exec(lab: &Lab, user: &str, detach: bool, script: &str) -> String {
    let name = lab.container_name(user, "default");
    let mut args = vec!["exec"];
    if detach {
        args.push("-d");
    }
    args.extend([name.as_str(), "sh", "-c", script]);
    labssh_testkit::docker::docker(&args).unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// A client in the container that keeps its connection open (a FIFO as stdin that
/// nobody writes; busybox nc leaves at stdin's end) and says when the server closed it.
fn held_client(port: u32, tag: &str) -> String {
    format!(
        "mkfifo /tmp/{tag} && (sleep 600 >/tmp/{tag} 2>/dev/null </dev/null &) && nc 127.0.0.1 {port} </tmp/{tag} >/dev/null; echo closed"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_remote_connections_waiting_for_the_client_are_capped() {
    let lab = lab_with(|a| a.max_pending_remote_per_user = 1).await;
    let cluster = lab.cluster.as_ref().unwrap();
    let mut agent = AgentClient::connect(format!("http://{}", cluster.agent_addrs[0]))
        .await
        .unwrap();
    // The proxy's side of `ssh -R`, without a proxy: nothing attaches what is accepted.
    let (mut alice_events, alice_port) = listen(&mut agent, "alice").await;
    exec(&lab, "alice", true, &held_client(alice_port, "c1"));
    let first = accepted(&mut alice_events).await;
    // A second waits for nobody: it is closed at once, not after the attach timeout.
    let waited = Instant::now();
    let said = exec(&lab, "alice", false, &held_client(alice_port, "c2"));
    assert_eq!(said.trim(), "closed");
    tracing::info!("second connection closed after {:?}", waited.elapsed());
    // Bob's listener is not affected.
    let (mut bob_events, bob_port) = listen(&mut agent, "bob").await;
    exec(
        &lab,
        "bob",
        true,
        &format!("echo bob | nc 127.0.0.1 {bob_port}"),
    );
    let bob_connection = accepted(&mut bob_events).await;
    attach(&mut agent, "bob", bob_connection).await.unwrap();
    // Attaching the first gives the count back; the next announced connection is the
    // third one (the second was never announced).
    let _first = attach(&mut agent, "alice", first).await.unwrap();
    exec(
        &lab,
        "alice",
        true,
        &format!("echo three | nc 127.0.0.1 {alice_port}"),
    );
    let next = accepted(&mut alice_events).await;
    let mut third = attach(&mut agent, "alice", next)
        .await
        .expect("the next announced connection is live");
    let mut got = Vec::new();
    while let Ok(Some(Ok(out))) = tokio::time::timeout(STEP, third.next()).await {
        match out.msg {
            Some(pb::forward_output::Msg::Data(d)) => got.extend_from_slice(&d),
            _ => break,
        }
    }
    assert_eq!(
        got, b"three\n",
        "the next announced connection is not the third"
    );
    lab.stop().await;
}
