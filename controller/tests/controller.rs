//! Starts the real controller on loopback and drives it with the generated
//! gRPC client, playing the parts of agents and proxies.

use std::net::SocketAddr;
use std::time::Duration;

use labssh_controller::{Config, EnvironmentConfig};
use labssh_proto::pb;
use labssh_proto::place::PlaceError;
use pb::controller_client::ControllerClient;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// Upper bound for anything that should happen "promptly".
const PROMPTLY: Duration = Duration::from_secs(5);

struct Controller {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), labssh_controller::ControllerError>>,
}

impl Controller {
    async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(labssh_controller::run(listener, config, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn client(&self) -> ControllerClient<Channel> {
        ControllerClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(PROMPTLY, self.task)
            .await
            .expect("controller did not shut down in time")
            .unwrap()
            .unwrap();
    }
}

fn config(heartbeat_interval_ms: u32) -> Config {
    let mut config = Config {
        heartbeat_interval_ms,
        ..Config::default()
    };
    config.environments.insert(
        "gpu".to_string(),
        EnvironmentConfig {
            image: "labssh/cuda:12".to_string(),
            description: "CUDA".to_string(),
            ..EnvironmentConfig::default()
        },
    );
    config
}

fn status(capacity: u32, inventory: &[(&str, &str)]) -> pb::AgentStatus {
    pb::AgentStatus {
        capacity,
        containers: inventory.len() as u32,
        sessions: 0,
        draining: false,
        gpus: Vec::new(),
        prestarted: 0,
        inventory: inventory
            .iter()
            .map(|(user, environment)| pb::ContainerInfo {
                listening: Vec::new(),
                user: user.to_string(),
                environment: environment.to_string(),
                state: pb::ContainerState::Running.into(),
                gpus: Vec::new(),
                outdated: false,
            })
            .collect(),
    }
}

/// A fake agent: the sending half of its Attach stream and the replies.
struct Agent {
    tx: mpsc::Sender<pb::AgentMessage>,
    replies: Streaming<pb::ControllerMessage>,
}

impl Agent {
    async fn attach(
        client: &mut ControllerClient<Channel>,
        name: &str,
        endpoint: &str,
        status: pb::AgentStatus,
    ) -> (Self, pb::Welcome) {
        let (tx, rx) = mpsc::channel(8);
        tx.send(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Register(pb::Register {
                name: name.to_string(),
                endpoint: endpoint.to_string(),
                status: Some(status),
            })),
        })
        .await
        .unwrap();
        let mut replies = client
            .attach(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let welcome = match replies.message().await.unwrap() {
            Some(pb::ControllerMessage {
                msg: Some(pb::controller_message::Msg::Welcome(welcome)),
            }) => welcome,
            other => panic!("expected a welcome, got {other:?}"),
        };
        (Self { tx, replies }, welcome)
    }

    async fn heartbeat(&self, status: pb::AgentStatus) {
        self.tx
            .send(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
                    status: Some(status),
                })),
            })
            .await
            .unwrap();
    }
}

async fn place(
    client: &mut ControllerClient<Channel>,
    user: &str,
    environment: &str,
) -> Result<pb::PlaceReply, tonic::Status> {
    client
        .place(pb::PlaceRequest {
            user: user.to_string(),
            environment: environment.to_string(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn agents(client: &mut ControllerClient<Channel>) -> Vec<pb::AgentInfo> {
    client
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents
}

/// Polls ListAgents until `agent`'s liveness is `live`.
async fn wait_live(client: &mut ControllerClient<Channel>, agent: &str, live: bool) {
    tokio::time::timeout(PROMPTLY, async {
        loop {
            if agents(client)
                .await
                .iter()
                .any(|a| a.name == agent && a.live == live)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{agent} never became live={live}"));
}

#[tokio::test]
async fn agent_lifecycle_and_placement() {
    let controller = Controller::start(config(1_000)).await;
    let mut client = controller.client().await;

    assert_eq!(
        place(&mut client, "alice", "").await.unwrap_err().code(),
        Code::Unavailable
    );

    let (agent, welcome) = Agent::attach(
        &mut client,
        "node-1",
        "http://0.0.0.0:7001",
        status(10, &[("alice", "default")]),
    )
    .await;
    assert_eq!(welcome.heartbeat_interval_ms, 1_000);
    let names: Vec<_> = welcome
        .environments
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["default", "gpu"]);
    assert_eq!(welcome.environments[1].image, "labssh/cuda:12");

    // Sticky to the registered inventory; the default environment filled in.
    let reply = place(&mut client, "alice", "").await.unwrap();
    assert_eq!(
        reply,
        pb::PlaceReply {
            agent_name: "node-1".to_string(),
            // The unspecified host was replaced by where the agent came from.
            agent_endpoint: "http://127.0.0.1:7001".to_string(),
            environment: "default".to_string(),
            existing: true,
            notice: String::new(),
            record: "off".to_string(),
        }
    );

    // A new user is placed, and stays put on a second login.
    let bob = place(&mut client, "bob", "gpu").await.unwrap();
    assert_eq!((bob.agent_name.as_str(), bob.existing), ("node-1", false));
    assert_eq!(bob.environment, "gpu");
    assert_eq!(place(&mut client, "bob", "gpu").await.unwrap(), bob);

    let err = place(&mut client, "bob", "nope").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        "unknown environment 'nope'; available: default, gpu"
    );
    // A proxy reads the error back from the status, not from its text.
    assert_eq!(
        PlaceError::from_status(&err),
        Some(PlaceError::UnknownEnvironment {
            requested: "nope".into(),
            available: vec!["default".into(), "gpu".into()],
        })
    );
    assert_eq!(
        place(&mut client, "", "").await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let envs = client
        .list_environments(pb::ListEnvironmentsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(envs.default_environment, "default");
    assert_eq!(envs.environments, welcome.environments);

    // Heartbeats update the status operators see.
    agent
        .heartbeat(status(10, &[("alice", "default"), ("bob", "gpu")]))
        .await;
    tokio::time::timeout(PROMPTLY, async {
        while agents(&mut client).await[0]
            .status
            .as_ref()
            .unwrap()
            .containers
            != 2
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("heartbeat never showed up");
    assert!(place(&mut client, "bob", "gpu").await.unwrap().existing);

    // The stream ends: the agent is dead but still listed, and nothing is
    // placed any more.
    drop(agent);
    wait_live(&mut client, "node-1", false).await;
    let listed = agents(&mut client).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].endpoint, "http://127.0.0.1:7001");
    let err = place(&mut client, "alice", "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.message(),
        "no backend agent is available; try again shortly"
    );
    assert_eq!(
        PlaceError::from_status(&err),
        Some(PlaceError::NoLiveAgents)
    );

    controller.shutdown().await;
}

#[tokio::test]
async fn silent_agent_is_dead_until_it_heartbeats() {
    let controller = Controller::start(config(50)).await;
    let mut client = controller.client().await;
    let (agent, _) = Agent::attach(
        &mut client,
        "node-1",
        "http://10.0.0.1:7001",
        status(4, &[]),
    )
    .await;

    // No heartbeats: dead after 3 × 50 ms although the stream is open.
    wait_live(&mut client, "node-1", false).await;
    assert_eq!(
        place(&mut client, "alice", "").await.unwrap_err().code(),
        Code::Unavailable
    );

    agent.heartbeat(status(4, &[])).await;
    wait_live(&mut client, "node-1", true).await;
    assert_eq!(
        place(&mut client, "alice", "").await.unwrap().agent_name,
        "node-1"
    );
    controller.shutdown().await;
}

#[tokio::test]
async fn re_registration_replaces_the_old_stream() {
    let controller = Controller::start(config(1_000)).await;
    let mut client = controller.client().await;
    let (old, _) = Agent::attach(
        &mut client,
        "node-1",
        "http://10.0.0.1:7001",
        status(4, &[]),
    )
    .await;
    let (new, _) = Agent::attach(
        &mut client,
        "node-1",
        "http://10.0.0.2:7001",
        status(4, &[]),
    )
    .await;

    // The old stream is closed on its next heartbeat and cannot kill the
    // new registration, nor can its end.
    old.heartbeat(status(0, &[])).await;
    let Agent { tx, mut replies } = old;
    let closed = tokio::time::timeout(PROMPTLY, replies.message())
        .await
        .expect("old stream was not closed");
    assert_eq!(closed.unwrap_err().code(), Code::Aborted);
    drop((tx, replies));

    new.heartbeat(status(4, &[])).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let listed = agents(&mut client).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].live);
    assert_eq!(listed[0].endpoint, "http://10.0.0.2:7001");
    assert_eq!(listed[0].status.as_ref().unwrap().capacity, 4);
    let reply = place(&mut client, "alice", "").await.unwrap();
    assert_eq!(reply.agent_endpoint, "http://10.0.0.2:7001");
    controller.shutdown().await;
}

#[tokio::test]
async fn attach_must_start_with_register() {
    let controller = Controller::start(config(1_000)).await;
    let mut client = controller.client().await;
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
            status: Some(status(4, &[])),
        })),
    })
    .await
    .unwrap();
    let err = client.attach(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("register"), "{}", err.message());
    assert!(agents(&mut client).await.is_empty());
    controller.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_open_attach_streams() {
    let controller = Controller::start(config(1_000)).await;
    let mut client = controller.client().await;
    let (agent, _) = Agent::attach(
        &mut client,
        "node-1",
        "http://10.0.0.1:7001",
        status(4, &[]),
    )
    .await;
    // The agent keeps its stream open; shutdown must not wait for it.
    controller.shutdown().await;
    let Agent {
        tx: _tx,
        mut replies,
    } = agent;
    let end = tokio::time::timeout(PROMPTLY, replies.message())
        .await
        .expect("agent stream still open after shutdown");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}
