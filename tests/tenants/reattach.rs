//! Kept sessions (they outlive their agent, to be resumed by id): bob's session id
//! named under alice's login resumes nothing, shows her nothing of bob's, and leaves
//! bob's session running and attached. The agent is asked as a proxy would ask it,
//! over gRPC: no student can name a session id any other way (the helper's socket
//! refuses every process in a container: see `inside`).

use std::time::Duration;

use labssh_proto::pb;
use pb::session_input::Msg as In;
use pb::session_output::Msg as Out;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::lab::{Lab, LabOptions};

const STEP: Duration = Duration::from_secs(60);

fn start(user: &str, command: &str) -> pb::Start {
    pb::Start {
        user: user.into(),
        environment: "default".into(),
        command: command.into(),
        pty: Some(pb::PtyRequest {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The next message that is not a progress line.
async fn next(out: &mut tonic::Streaming<pb::SessionOutput>) -> Out {
    loop {
        let msg = tokio::time::timeout(STEP, out.message())
            .await
            .expect("the agent answers")
            .expect("the stream holds")
            .expect("a message")
            .msg
            .expect("a body");
        if !matches!(msg, Out::Progress(_)) {
            return msg;
        }
    }
}

/// Stdout until it holds `want`.
async fn stdout_until(out: &mut tonic::Streaming<pb::SessionOutput>, want: &str) -> String {
    let mut got = String::new();
    while !got.contains(want) {
        match next(out).await {
            Out::Stdout(b) => got.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("{other:?} before {want:?}: {got:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bobs_session_id_resumes_nothing_for_alice() {
    let lab = Lab::start(LabOptions::default()).await;
    let endpoint = format!("http://{}", lab.cluster.as_ref().unwrap().agent_addrs[0]);
    let mut agent = pb::agent_client::AgentClient::new(
        tonic::transport::Endpoint::from_shared(endpoint)
            .unwrap()
            .connect_lazy(),
    );
    // Alice's container exists too: her resume finds a real helper to ask.
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    let (bob_tx, rx) = mpsc::channel(8);
    let first = In::Start(start("bob", "echo bob-ready; read l; echo \"bob got $l\""));
    bob_tx
        .send(pb::SessionInput { msg: Some(first) })
        .await
        .unwrap();
    let mut bob = agent
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let Out::Started(started) = next(&mut bob).await else {
        panic!("bob's session did not start");
    };
    let id = started.session_id;
    assert_eq!(id.len(), 32, "bob's session is kept: {id:?}");
    assert!(started.reattach_grace_secs > 0);
    stdout_until(&mut bob, "bob-ready").await;

    // Alice's login, bob's id: refused, and nothing of bob's comes with it.
    let (alice_tx, rx) = mpsc::channel(8);
    let resume = In::Resume(pb::Resume {
        start: Some(start("alice", "")),
        session_id: id.clone(),
        output_offset: 0,
    });
    alice_tx
        .send(pb::SessionInput { msg: Some(resume) })
        .await
        .unwrap();
    let mut alice = agent
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    match next(&mut alice).await {
        Out::Error(e) => {
            assert!(e.message.contains("could not be resumed"), "{}", e.message);
            assert!(!e.message.contains("bob"), "{}", e.message);
        }
        other => panic!("alice resumed bob's session: {other:?}"),
    }
    // A made-up id under bob's own login is refused the same way.
    let (guess_tx, rx) = mpsc::channel(8);
    let guess = In::Resume(pb::Resume {
        start: Some(start("bob", "")),
        session_id: "0123456789abcdef0123456789abcdef".into(),
        output_offset: 0,
    });
    guess_tx
        .send(pb::SessionInput { msg: Some(guess) })
        .await
        .unwrap();
    let mut guessed = agent
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(next(&mut guessed).await, Out::Error(_)));

    // Bob's session is still his and still attached: his input reaches it.
    bob_tx
        .send(pb::SessionInput {
            msg: Some(In::Stdin("hi\n".into())),
        })
        .await
        .unwrap();
    stdout_until(&mut bob, "bob got hi").await;
    loop {
        match next(&mut bob).await {
            Out::Exit(status) => {
                assert_eq!(status.status, Some(pb::exit_status::Status::Code(0)));
                break;
            }
            Out::Stdout(_) => {}
            other => panic!("{other:?}"),
        }
    }
    lab.stop().await;
}
