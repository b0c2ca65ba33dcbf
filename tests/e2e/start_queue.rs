//! The agent's start queue end to end: a gate in front of the Docker socket holds
//! every container start until the test lets it through, so the queue's shape is
//! decided by the test, not by timing. Stock `ssh`, real Docker.

use std::time::Duration;

use crate::lab::queue::{gate, lab, place_of, wait_held, Login, WAIT};
use crate::lab::Lab;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_cold_logins_start_two_at_a_time_and_the_rest_see_their_place_fall() {
    let gate = gate().await;
    let lab = lab(&gate, |c| c.start_concurrency = 2).await;
    let logins: Vec<Login> = ["e1", "e2", "e3"]
        .iter()
        .flat_map(|e| {
            [
                Login::start(&lab, &format!("alice+{e}"), &Lab::alice()),
                Login::start(&lab, &format!("bob+{e}"), &Lab::bob()),
            ]
        })
        .collect();
    wait_held(&gate, 2).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while logins.iter().filter(|l| !l.places().is_empty()).count() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "4 never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gate.held(), 2, "exactly two start at once");
    let mut first: Vec<usize> = logins
        .iter()
        .filter_map(|l| l.places().first().copied())
        .collect();
    first.sort();
    assert_eq!(first, [0, 1, 2, 3], "one place each, in arrival order");
    // One start at a time: the queue moves up by one, and two are at the gate again
    // while anyone waits.
    for released in 1..=6 {
        gate.release(1);
        let held = if released <= 4 { 2 } else { 6 - released };
        let deadline = tokio::time::Instant::now() + WAIT;
        while gate.passed() < released || gate.held() != held {
            assert!(
                tokio::time::Instant::now() < deadline,
                "after {released} released: {} passed, {} held",
                gate.passed(),
                gate.held()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for login in logins {
        let places = login.places();
        let (code, out, err) = login.finish().await;
        assert_eq!((code, out.trim()), (Some(0), "shell-ok"), "{err}");
        if places.is_empty() {
            continue;
        }
        assert!(places.windows(2).all(|w| w[1] < w[0]), "{places:?}: {err}");
        // The last place line is followed by admission: the usual step line.
        let lines: Vec<&str> = err.lines().collect();
        let last = lines.iter().rposition(|l| place_of(l).is_some()).unwrap();
        assert!(
            places.last() == Some(&0)
                || lines[last + 1..]
                    .iter()
                    .any(|l| l.contains("creating your container")),
            "{err}"
        );
        assert!(err.contains("creating your container"), "{err}");
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_killed_while_queued_leaves_and_its_container_is_never_made() {
    let gate = gate().await;
    let lab = lab(&gate, |c| c.start_concurrency = 1).await;
    let first = Login::start(&lab, "alice+e1", &Lab::alice());
    wait_held(&gate, 1).await;
    let mut killed = Login::start(&lab, "bob+e1", &Lab::bob());
    killed.wait_line("place", |l| place_of(l) == Some(0)).await;
    let last = Login::start(&lab, "bob+e2", &Lab::bob());
    last.wait_line("place", |l| place_of(l) == Some(1)).await;
    killed.child.kill().await.unwrap();
    // Nothing was started meanwhile: the one behind moved up because bob+e1 left.
    last.wait_line("moved-up place", |l| place_of(l) == Some(0))
        .await;
    assert_eq!(gate.passed(), 0);
    gate.open();
    for login in [first, last] {
        let (code, out, err) = login.finish().await;
        assert_eq!((code, out.trim()), (Some(0), "shell-ok"), "{err}");
    }
    assert_eq!(
        gate.passed(),
        2,
        "the killed client's container never started"
    );
    assert_eq!(lab.container_id("bob", "e1"), None, "nor was it created");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_queue_limit_a_student_is_told_at_once_when_to_retry() {
    let gate = gate().await;
    let lab = lab(&gate, |c| {
        c.start_concurrency = 1;
        c.start_queue_limit = 1;
    })
    .await;
    // Bob's e3 container is made first, and is running.
    gate.release(1);
    let (code, _, err) = Login::start(&lab, "bob+e3", &Lab::bob()).finish().await;
    assert_eq!(code, Some(0), "{err}");
    let first = Login::start(&lab, "alice+e1", &Lab::alice());
    wait_held(&gate, 1).await;
    let second = Login::start(&lab, "bob+e1", &Lab::bob());
    second.wait_line("place", |l| place_of(l) == Some(0)).await;
    // The gate is still closed: the answer cannot wait for a start.
    let third = Login::start(&lab, "alice+e2", &Lab::alice());
    let (code, out, err) = third.finish().await;
    assert_eq!((code, out.as_str()), (Some(255), ""), "{err}");
    assert!(
        err.starts_with("labssh: ")
            && err.contains("this node is starting 2 containers already; try again in "),
        "{err}"
    );
    assert_eq!(lab.container_id("alice", "e2"), None);
    // A running container never waits in the queue, full or not.
    let (code, out, err) = Login::start(&lab, "bob+e3", &Lab::bob()).finish().await;
    assert_eq!((code, out.trim()), (Some(0), "shell-ok"), "{err}");
    assert!(place_of(&err).is_none(), "{err}");
    gate.open();
    for login in [first, second] {
        let (code, out, err) = login.finish().await;
        assert_eq!((code, out.trim()), (Some(0), "shell-ok"), "{err}");
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prestarted_container_is_counted_until_its_first_login() {
    use labssh_proto::pb;
    let gate = gate().await;
    gate.open();
    let lab = lab(&gate, |c| c.start_concurrency = 1).await;
    let endpoint = format!("http://{}", lab.cluster.as_ref().unwrap().agent_addrs[0]);
    let mut agent = pb::agent_client::AgentClient::new(
        tonic::transport::Endpoint::from_shared(endpoint)
            .unwrap()
            .connect_lazy(),
    );
    let prestart = pb::EnsureRequest {
        user: "bob".into(),
        environment: "e1".into(),
        prestart: true,
        ..Default::default()
    };
    let reply = agent.ensure(prestart.clone()).await.unwrap().into_inner();
    assert!(reply.created, "{reply:?}");
    wait_prestarted(&lab, 1).await;
    // A second prestart finds it there and changes nothing.
    let reply = agent.ensure(prestart).await.unwrap().into_inner();
    assert!(!reply.created && !reply.started, "{reply:?}");
    wait_prestarted(&lab, 1).await;
    // Its first login: not prestarted any more.
    let out = lab.ssh.run("bob+e1", &Lab::bob(), &["true"]).await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    wait_prestarted(&lab, 0).await;
    lab.stop().await;
}

/// The controller's view of agent0's `prestarted` count, once it is `n`.
async fn wait_prestarted(lab: &Lab, n: u32) {
    let mut controller = lab.cluster.as_ref().unwrap().controller_client().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let agents = controller
            .list_agents(labssh_proto::pb::ListAgentsRequest {})
            .await
            .unwrap()
            .into_inner()
            .agents;
        let seen = agents[0].status.as_ref().map(|s| s.prestarted);
        if seen == Some(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "prestarted {seen:?}, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forward_whose_client_is_killed_while_queued_leaves_too() {
    let gate = gate().await;
    let lab = lab(&gate, |c| c.start_concurrency = 1).await;
    let first = Login::start(&lab, "alice+e1", &Lab::alice());
    wait_held(&gate, 1).await;
    // `ssh -L` into alice's cold e2: its connections wait for her container (one
    // place, whatever their number).
    let port = labssh_testkit::process::free_port();
    let spec = format!("{port}:localhost:80");
    let mut forward = crate::forwarding::forward(&lab, "alice+e2", &["-L", &spec], port).await;
    let _held_open = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let behind = Login::start(&lab, "bob+e3", &Lab::bob());
    behind.wait_line("place", |l| place_of(l) == Some(1)).await;
    forward.kill().await.unwrap();
    behind
        .wait_line("moved-up place", |l| place_of(l) == Some(0))
        .await;
    assert_eq!(gate.passed(), 0);
    gate.open();
    for login in [first, behind] {
        let (code, out, err) = login.finish().await;
        assert_eq!((code, out.trim()), (Some(0), "shell-ok"), "{err}");
    }
    assert_eq!(lab.container_id("alice", "e2"), None, "never created");
    lab.stop().await;
}
