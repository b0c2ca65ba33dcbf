//! Finding 5: any cluster certificate could call anything, and containers reached
//! every cluster address but this host's two ports.
//!
//! The role tests use real tonic clients holding the certificates `labssh certs`
//! issued, against the lab's real controller and agents over mTLS.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use labssh_proto::pb;
use labssh_proto::roles::{self, Role};
use labssh_proto::tls::TlsFiles;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::lab::{Lab, LabOptions};

mod firewall;

/// The certificate `labssh certs` issued to `role` `name` in the lab.
fn tls(lab: &Lab, role: &str, name: &str) -> TlsFiles {
    labssh::certs::files(&certs(lab), role.parse().unwrap(), name)
}

/// The name a proxy verifies agent `name` by.
fn agent_server(name: &str) -> String {
    roles::server_name(Role::Agent, name)
}

/// The proxy's own client for the agent `agent` at `endpoint`, as a placement
/// would give it.
fn dial_agent(
    upstream: &labssh_proxy::upstream::Upstream,
    agent: &str,
    endpoint: &str,
) -> pb::agent_client::AgentClient<Channel> {
    upstream
        .agent(&labssh_proxy::upstream::Placement {
            agent: agent.into(),
            endpoint: endpoint.into(),
            environment: "default".into(),
            notice: String::new(),
            record: String::new(),
        })
        .unwrap()
}

fn certs(lab: &Lab) -> PathBuf {
    lab.dir.path().join("certs")
}

async fn two_agents() -> Lab {
    Lab::start(LabOptions {
        tls: true,
        agents: Some(2),
        ..Default::default()
    })
    .await
}

fn controller_url(lab: &Lab) -> String {
    format!("https://{}", lab.cluster.as_ref().unwrap().controller_addr)
}

fn agent_url(lab: &Lab, i: usize) -> String {
    format!("https://{}", lab.cluster.as_ref().unwrap().agent_addrs[i])
}

async fn channel(url: String, tls: &TlsFiles, server_name: &str) -> Channel {
    let endpoint = Endpoint::from_shared(url).unwrap();
    tls.secure(endpoint, server_name)
        .unwrap()
        .connect()
        .await
        .expect("TLS handshake with the cluster's own server")
}

async fn controller(lab: &Lab, tls: &TlsFiles) -> pb::controller_client::ControllerClient<Channel> {
    pb::controller_client::ControllerClient::new(
        channel(controller_url(lab), tls, labssh_proto::tls::CONTROLLER_NAME).await,
    )
}

/// Opens an Attach stream registering `name`; Ok once the controller welcomed it.
async fn attach(
    mut client: pb::controller_client::ControllerClient<Channel>,
    name: &str,
) -> Result<tonic::Streaming<pb::ControllerMessage>, tonic::Status> {
    let register = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            name: name.into(),
            endpoint: "https://127.0.0.1:9".into(),
            status: Some(pb::AgentStatus {
                capacity: 1000,
                ..Default::default()
            }),
        })),
    };
    // The stream stays open after register, as a rogue agent's would.
    let outbound = futures::stream::iter([register]).chain(futures::stream::pending());
    let mut inbound = client.attach(outbound).await?.into_inner();
    match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
        Ok(Ok(Some(pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::Welcome(_)),
        }))) => Ok(inbound),
        Ok(Ok(other)) => panic!("expected a Welcome or a refusal, got {other:?}"),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("no answer to register within 10 s"),
    }
}

fn denied(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) -> tonic::Status {
    let status = result.expect_err(&format!("{what} was allowed"));
    assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    status
}

async fn agents(lab: &Lab) -> Vec<pb::AgentInfo> {
    lab.cluster
        .as_ref()
        .unwrap()
        .controller_client()
        .unwrap()
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_certificate_cannot_attach_drain_or_resume() {
    let lab = two_agents().await;
    let client = controller(&lab, &tls(&lab, "proxy", "local")).await;

    let status = denied(
        attach(client.clone(), "rogue").await,
        "registering an agent with a proxy certificate",
    );
    assert!(
        status.message().contains("requires the role agent")
            && status.message().contains("the role proxy"),
        "the message names the role required and the role presented: {}",
        status.message()
    );
    for drain in [true, false] {
        denied(
            client
                .clone()
                .drain(pb::DrainRequest {
                    agent: "agent0".into(),
                    drain,
                })
                .await,
            "draining with a proxy certificate",
        );
    }
    let agents = agents(&lab).await;
    assert!(agents.iter().all(|a| a.name != "rogue"), "{agents:?}");
    assert!(agents.iter().all(|a| !a.draining), "{agents:?}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_certificate_cannot_place_nor_open_sessions_on_another_agent() {
    let lab = two_agents().await;
    let agent0 = tls(&lab, "agent", "agent0");

    // A compromised node0 tries to run a command in bob's container on node1.
    let mut other = pb::agent_client::AgentClient::new(
        channel(agent_url(&lab, 1), &agent0, &agent_server("agent1")).await,
    );
    let start = pb::SessionInput {
        msg: Some(pb::session_input::Msg::Start(pb::Start {
            user: "bob".into(),
            environment: "default".into(),
            command: "echo pwned".into(),
            ..Default::default()
        })),
    };
    let result = match other.session(futures::stream::iter([start])).await {
        Ok(response) => {
            let mut out = response.into_inner();
            let mut seen = Vec::new();
            while let Ok(Some(message)) = out.message().await {
                seen.push(message);
            }
            eprintln!("BEFORE-SESSION-OUTPUT {seen:?}");
            Ok(seen)
        }
        Err(status) => Err(status),
    };
    denied(
        result,
        "a session on another agent with an agent certificate",
    );
    denied(
        other
            .ensure(pb::EnsureRequest {
                user: "bob".into(),
                environment: "default".into(),
                prestart: false,
                ..Default::default()
            })
            .await,
        "ensuring a container on another agent with an agent certificate",
    );
    assert!(
        lab.container_id("bob", "default").is_none(),
        "no container was made for bob"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_certificate_for_one_node_cannot_register_as_another() {
    let lab = two_agents().await;
    let client = controller(&lab, &tls(&lab, "agent", "agent0")).await;
    let status = denied(
        attach(client, "agent1").await,
        "registering as agent1 with agent0's certificate",
    );
    assert!(
        status.message().contains("agent0") && status.message().contains("agent1"),
        "{}",
        status.message()
    );
    let agents = agents(&lab).await;
    let agent1 = agents.iter().find(|a| a.name == "agent1").unwrap();
    assert!(agent1.live, "{agents:?}");
    assert_eq!(agent1.endpoint, agent_url(&lab, 1), "agent1 not hijacked");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proxy_refuses_an_agent_presenting_another_nodes_certificate() {
    let lab = two_agents().await;
    // A rogue server holding agent1's real certificate and key, where the proxy
    // expects agent0 (as if it had taken over agent0's address).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rogue_url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let rogue = tokio::spawn(labssh_agent::run(
        listener,
        labssh_agent::Config {
            name: "agent1".into(),
            controller: "https://127.0.0.1:9".into(),
            tls: tls(&lab, "agent", "agent1"),
            container_prefix: format!("{}r", lab.cleanup.prefix),
            firewall: false,
            ..Default::default()
        },
        async {
            let _ = stopped.await;
        },
    ));
    let upstream = labssh_proxy::upstream::Upstream::new(
        &controller_url(&lab),
        tls(&lab, "proxy", "local"),
        Duration::from_secs(5),
        Duration::from_secs(1),
    )
    .unwrap();
    // An invalid user name: any server that answers does so without touching Docker.
    let probe = |mut client: pb::agent_client::AgentClient<Channel>| async move {
        client
            .ensure(pb::EnsureRequest {
                user: "not a user".into(),
                environment: "default".into(),
                prestart: false,
                ..Default::default()
            })
            .await
    };

    let status = probe(dial_agent(&upstream, "agent0", &rogue_url))
        .await
        .expect_err("the rogue answered as agent0");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        format!("{status:?}").contains("NotValidForName"),
        "refused for its certificate's name: {status:?}"
    );
    // Controls: the same server is accepted as the node its certificate names, and
    // the real agent0 as agent0; both answer (and refuse the bad user name).
    for (agent, url) in [
        ("agent1", rogue_url.clone()),
        ("agent0", agent_url(&lab, 0)),
    ] {
        let status = probe(dial_agent(&upstream, agent, &url))
            .await
            .expect_err("an invalid user name");
        assert_eq!(status.code(), Code::InvalidArgument, "{agent}: {status:?}");
    }
    let _ = stop.send(());
    rogue.await.unwrap().unwrap();
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_certificate_can_drain_and_resume() {
    let lab = two_agents().await;
    let labssh = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "labssh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dir = certs(&lab);
    let dir = dir.to_str().unwrap();
    labssh(&["certs", "--dir", dir, "--role", "admin", "--name", "ops"]);
    let controller = controller_url(&lab);
    let drained = labssh(&[
        "agent",
        "drain",
        "agent0",
        "--controller",
        &controller,
        "--tls-dir",
        dir,
        "--tls-name",
        "ops",
    ]);
    assert!(drained.contains("agent0 is draining"), "{drained}");
    let draining = |agents: Vec<pb::AgentInfo>| {
        agents
            .into_iter()
            .find(|a| a.name == "agent0")
            .unwrap()
            .draining
    };
    assert!(draining(agents(&lab).await));
    labssh(&[
        "agent",
        "resume",
        "agent0",
        "--controller",
        &controller,
        "--tls-dir",
        dir,
        "--tls-name",
        "ops",
    ]);
    assert!(!draining(agents(&lab).await));
    lab.stop().await;
}

/// Reads a Prestart stream to its end: each user's outcome.
async fn prestart_outcomes(
    mut client: pb::controller_client::ControllerClient<Channel>,
    users: &[&str],
) -> Result<Vec<(String, pb::PrestartOutcome, String)>, tonic::Status> {
    let mut stream = client
        .prestart(pb::PrestartRequest {
            users: users.iter().map(|u| u.to_string()).collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut outcomes = Vec::new();
    while let Some(event) = stream.message().await? {
        if let Some(pb::prestart_event::Event::Result(r)) = event.event {
            outcomes.push((r.user.clone(), r.outcome(), r.message));
        }
    }
    Ok(outcomes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_an_admin_certificate_can_prestart_and_the_controller_ensures_with_its_own() {
    let lab = two_agents().await;
    for role in ["proxy", "agent"] {
        let name = if role == "agent" { "agent0" } else { "local" };
        let client = controller(&lab, &tls(&lab, role, name)).await;
        let status = denied(
            prestart_outcomes(client, &["bob"]).await,
            &format!("a prestart with a {role} certificate"),
        );
        assert!(
            status.message().contains("requires the role admin"),
            "{}",
            status.message()
        );
    }
    for agent in 0..2 {
        assert!(
            labssh_testkit::docker::docker(&[
                "ps",
                "-aq",
                "--filter",
                "label=labssh.user=bob",
                "--filter",
                &format!("label=labssh.prefix={}", lab.cleanup.prefix)
            ])
            .unwrap()
            .trim()
            .is_empty(),
            "no container for bob after refused prestarts (agent {agent})"
        );
    }
    // An admin may; the controller then calls each agent's Ensure over mTLS
    // with its own certificate, which the agents accept for Ensure.
    let admin = controller(&lab, &tls(&lab, "admin", "local")).await;
    let outcomes = prestart_outcomes(admin, &["bob", "carol", "dave"])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 3);
    for (user, outcome, message) in &outcomes {
        assert_eq!(*outcome, pb::PrestartOutcome::Created, "{user}: {message}");
    }
    lab.stop().await;
}

/// The sessions registry is for operators: a proxy's or an agent's certificate may
/// neither list, kick nor watch; an admin's lists what the proxy reported over mTLS
/// (its own certificate, role proxy) and ends it, but cannot feed a watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_an_admin_certificate_lists_and_kicks_sessions() {
    use tokio::io::AsyncBufReadExt;
    let lab = two_agents().await;
    let mut held = lab
        .ssh
        .command("alice", &Lab::alice(), &["echo up; read line"])
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(held.stdout.take().unwrap()).lines();
    let up = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the session answers")
        .unwrap();
    assert_eq!(up.as_deref(), Some("up"));
    for role in ["proxy", "agent"] {
        let name = if role == "agent" { "agent0" } else { "local" };
        let mut client = controller(&lab, &tls(&lab, role, name)).await;
        let listed = client
            .list_sessions(pb::ListSessionsRequest::default())
            .await;
        let status = denied(
            listed,
            &format!("listing sessions with a {role} certificate"),
        );
        assert!(
            status.message().contains("requires the role admin"),
            "{status:?}"
        );
        let kick = pb::KickRequest {
            user: "alice".into(),
            ..Default::default()
        };
        denied(
            client.kick(kick).await,
            &format!("a kick with a {role} certificate"),
        );
        let watch = pb::WatchRequest {
            session: "local/1/0".into(),
        };
        denied(
            client.watch(watch).await,
            &format!("watching a session with a {role} certificate"),
        );
    }
    // The admin sees alice's session once the proxy reported it, and ends it.
    let mut admin = controller(&lab, &tls(&lab, "admin", "local")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = admin
            .list_sessions(pb::ListSessionsRequest::default())
            .await
            .unwrap()
            .into_inner();
        if reply.sessions.iter().any(|s| s.user == "alice") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's session never listed: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only a proxy feeds a watch: an operator cannot write into one.
    let feed = futures::stream::iter(vec![pb::FeedMessage {
        watch: 1,
        frame: None,
    }]);
    let status = denied(admin.feed(feed).await, "a feed with an admin certificate");
    assert!(
        status.message().contains("requires the role proxy"),
        "{status:?}"
    );
    let kick = pb::KickRequest {
        user: "alice".into(),
        ..Default::default()
    };
    let reply = admin.kick(kick).await.unwrap().into_inner();
    assert_eq!((reply.sessions, reply.proxies), (1, 1));
    let status = tokio::time::timeout(Duration::from_secs(30), held.wait())
        .await
        .expect("the kicked client exits")
        .unwrap();
    assert_eq!(status.code(), Some(255), "{status:?}");
    lab.stop().await;
}

/// Container actions go through the controller, which says who asked: an agent's
/// certificate may not ask it; a proxy's (a student's self-service login) may stop
/// its student's container but neither remove one nor list everyone's; and no one
/// but the controller may drive an agent's `Act` directly, an operator included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn container_actions_are_for_operators_and_students_through_the_controller_only() {
    let lab = two_agents().await;
    let out = lab
        .ssh
        .command("alice", &Lab::alice(), &["true"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut admin = controller(&lab, &tls(&lab, "admin", "local")).await;
    let alices = pb::ListContainersRequest {
        user: "alice".into(),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let holder = loop {
        let listed = admin
            .list_containers(alices.clone())
            .await
            .unwrap()
            .into_inner();
        if let Some(placed) = listed.containers.first() {
            break placed.agent.clone();
        }
        assert!(Instant::now() < deadline, "alice's container never listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let action = |verb: pb::ContainerVerb| pb::ContainerActionRequest {
        user: "alice".into(),
        verb: verb.into(),
        // Who asked is the controller's to say, not the caller's.
        by: "admin \"root\"".into(),
        ..Default::default()
    };

    let mut agent = controller(&lab, &tls(&lab, "agent", "agent0")).await;
    let status = denied(
        agent
            .container_action(action(pb::ContainerVerb::Reset))
            .await,
        "a reset with an agent certificate",
    );
    assert!(
        status
            .message()
            .contains("requires the role admin or proxy"),
        "{status:?}"
    );

    let mut proxy = controller(&lab, &tls(&lab, "proxy", "local")).await;
    let status = denied(
        proxy
            .list_containers(pb::ListContainersRequest::default())
            .await,
        "a proxy listing everyone's containers",
    );
    assert!(status.message().contains("one student's"), "{status:?}");
    // Nor everyone's services: a proxy asks for its own student's only.
    let status = denied(
        proxy
            .list_services(pb::ListServicesRequest::default())
            .await,
        "a proxy listing everyone's services",
    );
    assert!(status.message().contains("one student's"), "{status:?}");
    let status = denied(
        agent
            .list_services(pb::ListServicesRequest::default())
            .await,
        "an agent listing services",
    );
    assert!(
        status
            .message()
            .contains("requires the role admin or proxy"),
        "{status:?}"
    );
    let status = denied(
        proxy
            .container_action(action(pb::ContainerVerb::Remove))
            .await,
        "a remove with a proxy certificate",
    );
    assert!(status.message().contains("for operators"), "{status:?}");
    assert!(lab.container_id("alice", "default").is_some());
    // A student's own stop, through their proxy: told as theirs, not an operator's.
    let reply = proxy
        .container_action(action(pb::ContainerVerb::Stop))
        .await
        .expect("a student may stop their own container")
        .into_inner();
    assert_eq!(reply.agent, holder);
    lab.wait_state("alice", "default", "exited").await;

    // The agent's Act takes the controller's certificate only.
    let index = usize::from(holder != "agent0");
    for (role, name) in [("proxy", "local"), ("admin", "local"), ("agent", "agent1")] {
        let channel = channel(
            agent_url(&lab, index),
            &tls(&lab, role, name),
            &agent_server(&holder),
        )
        .await;
        let mut client = pb::agent_client::AgentClient::new(channel);
        let status = denied(
            client.act(action(pb::ContainerVerb::Remove)).await,
            &format!("Act with a {role} certificate"),
        );
        assert!(
            status.message().contains("requires the role controller"),
            "{status:?}"
        );
    }
    assert!(
        lab.container_id("alice", "default").is_some(),
        "nothing was removed"
    );
    lab.stop().await;
}
