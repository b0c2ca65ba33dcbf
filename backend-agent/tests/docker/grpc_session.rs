//! The whole agent (`run`) with a fake controller, driven through the Session and
//! Ensure rpcs.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use crate::support::{environment, Scratch, STEP};
use futures::{Stream, StreamExt};
use labssh_proto::pb;
use labssh_proto::pb::agent_client::AgentClient;
use labssh_proto::pb::controller_server::{Controller, ControllerServer};
use pb::session_input::Msg as In;
use pb::session_output::Msg as Out;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Accepts Attach, welcomes the agent with a catalogue and forwards what it sends.
struct FakeController {
    messages: mpsc::UnboundedSender<pb::AgentMessage>,
    /// The catalogue of every Welcome.
    environments: Vec<pb::Environment>,
    /// Cancelled to make the controller vanish: streams fail, the server stops.
    gone: CancellationToken,
}

type AttachStream = Pin<Box<dyn Stream<Item = Result<pb::ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Controller for FakeController {
    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let messages = self.messages.clone();
        let gone = self.gone.clone();
        let (tx, rx) = mpsc::channel(4);
        let welcome = pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::Welcome(pb::Welcome {
                heartbeat_interval_ms: 100,
                environments: self.environments.clone(),
            })),
        };
        tx.send(Ok(welcome)).await.unwrap();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = gone.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("controller gone"))).await;
                        return;
                    }
                    message = inbound.next() => match message {
                        Some(Ok(message)) => { let _ = messages.send(message); }
                        _ => return,
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn place(
        &self,
        _: Request<pb::PlaceRequest>,
    ) -> Result<Response<pb::PlaceReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_environments(
        &self,
        _: Request<pb::ListEnvironmentsRequest>,
    ) -> Result<Response<pb::ListEnvironmentsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_agents(
        &self,
        _: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn drain(
        &self,
        _: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type PrestartStream = futures::stream::Empty<Result<pb::PrestartEvent, Status>>;

    async fn prestart(
        &self,
        _: Request<pb::PrestartRequest>,
    ) -> Result<Response<Self::PrestartStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type ReportStream = futures::stream::Empty<Result<pb::ProxyCommand, Status>>;

    async fn report(
        &self,
        _: Request<Streaming<pb::ProxyReport>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_sessions(
        &self,
        _: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn kick(&self, _: Request<pb::KickRequest>) -> Result<Response<pb::KickReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchStream = futures::stream::Empty<Result<pb::WatchFrame, Status>>;

    async fn watch(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn feed(
        &self,
        _: Request<Streaming<pb::FeedMessage>>,
    ) -> Result<Response<pb::FeedReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_containers(
        &self,
        _: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn container_action(
        &self,
        _: Request<pb::ContainerActionRequest>,
    ) -> Result<Response<pb::ContainerActionReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_services(
        &self,
        _: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesReply>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A running fake controller.
pub(crate) struct ControllerHandle {
    gone: CancellationToken,
    server: JoinHandle<()>,
}

impl ControllerHandle {
    /// Fails every Attach stream and stops serving.
    pub(crate) async fn vanish(self) {
        self.gone.cancel();
        tokio::time::timeout(STEP, self.server)
            .await
            .expect("fake controller stops")
            .unwrap();
    }
}

/// A fake controller serving on `listener`.
fn start_controller(
    listener: TcpListener,
) -> (ControllerHandle, mpsc::UnboundedReceiver<pb::AgentMessage>) {
    start_controller_with(listener, vec![environment()])
}

/// A fake controller serving `environments` on `listener`.
pub(crate) fn start_controller_with(
    listener: TcpListener,
    environments: Vec<pb::Environment>,
) -> (ControllerHandle, mpsc::UnboundedReceiver<pb::AgentMessage>) {
    let (messages, received) = mpsc::unbounded_channel();
    let gone = CancellationToken::new();
    let service = FakeController {
        environments,
        messages,
        gone: gone.clone(),
    };
    let stopped = gone.clone().cancelled_owned();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(ControllerServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped)
            .await;
    });
    (ControllerHandle { gone, server }, received)
}

pub(crate) struct Agent {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), labssh_agent::AgentError>>,
}

impl Agent {
    pub(crate) async fn start(scratch: &Scratch, controller: SocketAddr) -> Agent {
        let config = labssh_agent::Config {
            controller: format!("http://{controller}"),
            capacity: 7,
            ..scratch.config()
        };
        Agent::start_on(config, None).await
    }

    /// The agent with `config`, on `backend` if given, else the one `config` names.
    pub(crate) async fn start_on(
        config: labssh_agent::Config,
        backend: Option<labssh_agent::SharedBackend>,
    ) -> Agent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let task = match backend {
            Some(backend) => tokio::spawn(labssh_agent::run_with_backend(
                listener, config, backend, stopped,
            )),
            None => tokio::spawn(labssh_agent::run(listener, config, stopped)),
        };
        Agent {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub(crate) async fn client(&self) -> AgentClient<tonic::transport::Channel> {
        AgentClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Asks the agent to stop and checks it does so promptly.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(8), self.task)
            .await
            .expect("agent stops promptly")
            .unwrap()
            .unwrap();
    }
}

/// The next Register from the agent, skipping heartbeats.
pub(crate) async fn next_register(
    received: &mut mpsc::UnboundedReceiver<pb::AgentMessage>,
) -> pb::Register {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(pb::agent_message::Msg::Register(r)) = received.recv().await.unwrap().msg {
                return r;
            }
        }
    })
    .await
    .expect("agent registers")
}

/// Waits for a heartbeat whose status satisfies `check`.
pub(crate) async fn heartbeat_where(
    received: &mut mpsc::UnboundedReceiver<pb::AgentMessage>,
    check: impl Fn(&pb::AgentStatus) -> bool,
) -> pb::AgentStatus {
    tokio::time::timeout(STEP, async {
        loop {
            if let Some(pb::agent_message::Msg::Heartbeat(h)) = received.recv().await.unwrap().msg {
                let status = h.status.unwrap();
                if check(&status) {
                    return status;
                }
            }
        }
    })
    .await
    .expect("a matching heartbeat")
}

pub(crate) fn start(user: &str, environment: &str, command: &str) -> pb::SessionInput {
    pb::SessionInput {
        msg: Some(In::Start(pb::Start {
            user: user.into(),
            environment: environment.into(),
            command: command.into(),
            ..Default::default()
        })),
    }
}

fn input(msg: In) -> pb::SessionInput {
    pb::SessionInput { msg: Some(msg) }
}

/// Opens a session fed by the returned sender.
pub(crate) async fn open_session(
    client: &mut AgentClient<tonic::transport::Channel>,
    first: pb::SessionInput,
) -> (
    mpsc::UnboundedSender<pb::SessionInput>,
    Streaming<pb::SessionOutput>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(first).unwrap();
    let outputs = client
        .session(UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, outputs)
}

/// Reads the rest of a session.
pub(crate) async fn drain(mut outputs: Streaming<pb::SessionOutput>) -> Vec<Out> {
    tokio::time::timeout(STEP, async {
        let mut all = Vec::new();
        while let Some(msg) = outputs.message().await.unwrap() {
            all.push(msg.msg.unwrap());
        }
        all
    })
    .await
    .expect("session ends")
}

pub(crate) fn only_error(outputs: &[Out]) -> &str {
    match outputs {
        [Out::Error(e)] => &e.message,
        other => panic!("expected one error, got {other:?}"),
    }
}

#[tokio::test]
async fn sessions_run_commands_and_heartbeats_report_them() {
    let scratch = Scratch::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let controller_addr = listener.local_addr().unwrap();
    let (_controller, mut received) = start_controller(listener);
    let agent = Agent::start(&scratch, controller_addr).await;

    let register = next_register(&mut received).await;
    assert_eq!(register.name, scratch.agent);
    assert_eq!(register.endpoint, format!("http://{}", agent.addr));
    let status = register.status.unwrap();
    assert_eq!((status.capacity, status.containers), (7, 0));
    assert!(status.inventory.is_empty());
    heartbeat_where(&mut received, |_| true).await; // the Welcome has been applied

    let mut client = agent.client().await;
    let script = "echo out; echo err >&2; read line; echo got $line; exit 3";
    let (tx, outputs) = open_session(&mut client, start("kim", "default", script)).await;
    tx.send(input(In::Stdin(b"hello\n"[..].into()))).unwrap();
    tx.send(input(In::Eof(pb::Eof {}))).unwrap();
    let mut outputs = drain(outputs).await;
    // The container is created first, and the student told so before Started.
    assert!(
        matches!(&outputs[0], Out::Progress(p) if p.message == "creating your container…"),
        "{:?}",
        outputs[0]
    );
    outputs.remove(0);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for o in &outputs[1..outputs.len() - 1] {
        match o {
            Out::Stdout(b) => stdout.extend_from_slice(b),
            Out::Stderr(b) => stderr.extend_from_slice(b),
            other => panic!("unexpected {other:?}"),
        }
    }
    match &outputs[0] {
        Out::Started(s) => {
            assert_eq!(s.container, format!("{}-kim.default", scratch.prefix));
            assert!(s.container_started);
        }
        other => panic!("expected Started, got {other:?}"),
    }
    assert_eq!(String::from_utf8_lossy(&stdout), "out\ngot hello\n");
    assert_eq!(String::from_utf8_lossy(&stderr), "err\n");
    match outputs.last().unwrap() {
        Out::Exit(e) => assert_eq!(e.status, Some(pb::exit_status::Status::Code(3))),
        other => panic!("expected Exit, got {other:?}"),
    }

    // The new container shows in heartbeats at once, not after the next refresh.
    let status = heartbeat_where(&mut received, |s| s.containers == 1).await;
    assert_eq!(status.inventory[0].user, "kim");
    assert_eq!(status.inventory[0].environment, "default");
    assert_eq!(
        status.inventory[0].state,
        pb::ContainerState::Running as i32
    );

    let reply = client
        .ensure(pb::EnsureRequest {
            user: "kim".into(),
            environment: "default".into(),
            prestart: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!reply.created && !reply.started, "{reply:?}");

    let (_tx, outputs) = open_session(&mut client, start("kim", "nope", "true")).await;
    assert_eq!(
        only_error(&drain(outputs).await),
        "unknown environment 'nope'"
    );
    let (_tx, outputs) = open_session(&mut client, start("Kim/../x", "default", "true")).await;
    assert!(only_error(&drain(outputs).await).contains("invalid user name"));
    let (_tx, outputs) = open_session(&mut client, input(In::Eof(pb::Eof {}))).await;
    assert!(only_error(&drain(outputs).await).contains("must be start"));

    // Shutdown ends open sessions and the agent promptly.
    let (_tx, mut outputs) = open_session(&mut client, start("kim", "default", "sleep 600")).await;
    assert!(matches!(
        outputs.message().await.unwrap().unwrap().msg,
        Some(Out::Started(_))
    ));
    agent.stop().await;
    let end = tokio::time::timeout(STEP, outputs.message())
        .await
        .expect("stream ends");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}

#[tokio::test]
async fn a_vanished_proxy_gets_its_process_hung_up() {
    let scratch = Scratch::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let controller_addr = listener.local_addr().unwrap();
    let (_controller, mut received) = start_controller(listener);
    let agent = Agent::start(&scratch, controller_addr).await;
    next_register(&mut received).await;
    heartbeat_where(&mut received, |_| true).await;

    let mut client = agent.client().await;
    let first = pb::SessionInput {
        msg: Some(In::Start(pb::Start {
            user: "lou".into(),
            environment: "default".into(),
            argv: vec!["sleep".into(), "616".into()],
            ..Default::default()
        })),
    };
    let (tx, mut outputs) = open_session(&mut client, first).await;
    let mut answer = outputs.message().await.unwrap().unwrap().msg;
    while let Some(Out::Progress(_)) = answer {
        answer = outputs.message().await.unwrap().unwrap().msg;
    }
    assert!(matches!(answer, Some(Out::Started(_))));
    heartbeat_where(&mut received, |s| s.sessions == 1).await;
    let container = format!("{}-lou.default", scratch.prefix);
    let sleeping = || {
        let out = std::process::Command::new("docker")
            .args(["exec", &container, "ps", "-o", "args"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("sleep 616")
    };
    assert!(sleeping());

    drop(outputs);
    drop(tx);
    drop(client);
    heartbeat_where(&mut received, |s| s.sessions == 0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sleeping() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process survived its proxy"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop().await;
}

#[tokio::test]
async fn the_agent_waits_for_the_controller_and_re_registers_after_a_restart() {
    let scratch = Scratch::new();
    // A port with nobody listening yet.
    let controller_addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let agent = Agent::start(&scratch, controller_addr).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !agent.task.is_finished(),
        "agent must survive a missing controller"
    );

    let (controller, mut received) =
        start_controller(TcpListener::bind(controller_addr).await.unwrap());
    next_register(&mut received).await;
    heartbeat_where(&mut received, |_| true).await;
    agent
        .client()
        .await
        .ensure(pb::EnsureRequest {
            user: "max".into(),
            environment: "default".into(),
            prestart: false,
            ..Default::default()
        })
        .await
        .unwrap();

    controller.vanish().await;
    let (_controller, mut received) =
        start_controller(TcpListener::bind(controller_addr).await.unwrap());
    let register = next_register(&mut received).await;
    let status = register.status.unwrap();
    assert_eq!(status.containers, 1);
    assert_eq!(status.inventory[0].user, "max");
    agent.stop().await;
}
