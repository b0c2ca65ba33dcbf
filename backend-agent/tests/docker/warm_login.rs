//! A login into a running container asks Docker nothing: the whole agent, its Docker
//! socket behind a [`CountingProxy`], driven through Ensure and Session as the proxy
//! drives it. What the agent knows follows Docker's events: a change made from outside
//! is seen, a change whose event has not come yet is caught when the helper does not
//! answer, and without the events stream Docker is asked again.

use std::sync::Arc;
use std::time::Duration;

use labssh_agent::{Config, DockerBackend};
use labssh_proto::pb;
use labssh_proto::pb::agent_client::AgentClient;
use pb::session_input::Msg as In;
use pb::session_output::Msg as Out;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::counting_proxy::CountingProxy;
use crate::grpc_session::{
    drain, heartbeat_where, next_register, open_session, start, start_controller_with, Agent,
    ControllerHandle,
};
use crate::support::{docker_cli, environment, run_script, Scratch, STEP};

/// Warm logins measured in a row.
const WARM_LOGINS: usize = 20;
/// The student of every test here.
const USER: &str = "wes";

/// The agent on a counted Docker socket, with its controller.
struct Lab {
    proxy: CountingProxy,
    backend: Arc<DockerBackend>,
    agent: Agent,
    client: AgentClient<Channel>,
    /// The student's container's name.
    container: String,
    _controller: ControllerHandle,
    _received: mpsc::UnboundedReceiver<pb::AgentMessage>,
    _scratch: Scratch,
}

impl Lab {
    async fn start() -> Lab {
        let scratch = Scratch::new();
        let proxy = CountingProxy::start();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let controller = listener.local_addr().unwrap();
        let (handle, mut received) = start_controller_with(listener, vec![environment()]);
        let config = Config {
            controller: format!("http://{controller}"),
            docker_socket: proxy.path.to_str().unwrap().to_owned(),
            // No periodic Docker work falls into what the tests count.
            inventory_refresh_secs: 3600,
            disk_check_interval_secs: 3600,
            ..scratch.config()
        };
        let backend = Arc::new(DockerBackend::connect(&config).await.unwrap());
        let agent = Agent::start_on(config, Some(backend.clone())).await;
        next_register(&mut received).await;
        heartbeat_where(&mut received, |_| true).await;
        let client = agent.client().await;
        Lab {
            proxy,
            backend,
            agent,
            client,
            container: format!("{}-{USER}.default", scratch.prefix),
            _controller: handle,
            _received: received,
            _scratch: scratch,
        }
    }

    /// A login as the proxy makes it: a session running `true`, which must succeed.
    async fn login(&mut self) -> pb::Started {
        self.session(start(USER, "default", "true")).await
    }

    /// An SFTP session whose client sends nothing: the server is looked for in the
    /// container, started, and ends at once.
    async fn sftp(&mut self) -> pb::Started {
        let first = pb::SessionInput {
            msg: Some(In::Start(pb::Start {
                user: USER.into(),
                environment: "default".into(),
                subsystem: "sftp".into(),
                ..Default::default()
            })),
        };
        self.session(first).await
    }

    /// Runs a session with no input to its successful end.
    async fn session(&mut self, first: pb::SessionInput) -> pb::Started {
        let (tx, outputs) = open_session(&mut self.client, first).await;
        tx.send(pb::SessionInput {
            msg: Some(In::Eof(pb::Eof {})),
        })
        .unwrap();
        let (mut started, mut exit) = (None, None);
        for output in drain(outputs).await {
            match output {
                Out::Progress(_) => {}
                Out::Started(s) => started = Some(s),
                Out::Exit(e) => exit = Some(e.status),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(exit, Some(Some(pb::exit_status::Status::Code(0))));
        started.expect("the session started")
    }

    /// The Ensure rpc, as a forward or a prestart makes it.
    async fn ensure(&mut self) -> pb::EnsureReply {
        let request = pb::EnsureRequest {
            user: USER.into(),
            environment: "default".into(),
            ..Default::default()
        };
        self.client.ensure(request).await.unwrap().into_inner()
    }

    /// A warm login: Ensure, then a session and an SFTP session; all find the
    /// container running.
    async fn warm_login(&mut self) {
        let reply = self.ensure().await;
        assert!(!reply.created && !reply.started, "{reply:?}");
        let started = self.login().await;
        assert!(!started.container_started, "{started:?}");
        let started = self.sftp().await;
        assert!(!started.container_started, "{started:?}");
    }

    /// Waits until the agent no longer knows the container (it heard Docker's event).
    async fn until_forgotten(&self) {
        tokio::time::timeout(STEP, async {
            while self.backend.knows(&self.container) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the agent hears of the change")
    }

    /// Whether `calls` asked Docker about the container by its name.
    fn inspected(&self, calls: &[String]) -> bool {
        let asked = format!("GET /containers/{}/json", self.container);
        calls.contains(&asked)
    }

    async fn stop(self) {
        self.agent.stop().await;
    }
}

#[tokio::test]
async fn warm_logins_ask_docker_nothing() {
    let mut lab = Lab::start().await;
    let cold = lab.proxy.mark();
    assert!(lab.login().await.container_started);
    let cold_calls = lab.proxy.calls_since(cold).len();
    assert!(cold_calls > 0);

    let warm = lab.proxy.mark();
    for _ in 0..WARM_LOGINS {
        lab.warm_login().await;
    }
    let calls = lab.proxy.calls_since(warm);
    println!(
        "Docker requests: cold login {cold_calls}, per warm login (Ensure, Session, SFTP) {:.2} over {WARM_LOGINS}",
        calls.len() as f64 / WARM_LOGINS as f64
    );
    assert!(calls.is_empty(), "warm logins asked Docker: {calls:#?}");
    assert!(lab.proxy.since(warm).is_empty(), "the events stream held");
    lab.stop().await;
}

#[tokio::test]
async fn a_change_from_outside_is_seen_in_dockers_events() {
    let mut lab = Lab::start().await;
    assert!(lab.login().await.container_started);
    lab.warm_login().await;
    assert!(lab.backend.knows(&lab.container));

    // Stopped from outside: the event makes the agent forget, Docker is asked and the
    // container started again.
    docker_cli(&["stop", "-t", "1", &lab.container]);
    lab.until_forgotten().await;
    let mark = lab.proxy.mark();
    let reply = lab.ensure().await;
    assert!(!reply.created && reply.started, "{reply:?}");
    let calls = lab.proxy.calls_since(mark);
    assert!(lab.inspected(&calls), "{calls:#?}");
    assert!(calls.iter().any(|c| c.ends_with("/start")), "{calls:#?}");
    let mark = lab.proxy.mark();
    lab.warm_login().await;
    assert_eq!(lab.proxy.calls_since(mark), Vec::<String>::new());

    // Stopped while its event is held back: what the agent knows says it runs, but
    // its first process is gone, so Docker is asked and the container started.
    lab.proxy.hold_events(true);
    docker_cli(&["stop", "-t", "1", &lab.container]);
    assert!(lab.backend.knows(&lab.container));
    let mark = lab.proxy.mark();
    assert!(lab.login().await.container_started);
    let calls = lab.proxy.calls_since(mark);
    assert!(lab.inspected(&calls), "{calls:#?}");
    assert!(calls.iter().any(|c| c.ends_with("/start")), "{calls:#?}");
    // Removed while its event is held back: made again (the home volume kept).
    docker_cli(&["rm", "-f", &lab.container]);
    let mark = lab.proxy.mark();
    assert!(lab.login().await.container_started);
    let calls = lab.proxy.calls_since(mark);
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("POST /containers/create")),
        "{calls:#?}"
    );
    // The held events are of the old container, or older than what the agent saw.
    lab.proxy.hold_events(false);
    let mark = lab.proxy.mark();
    lab.warm_login().await;
    lab.warm_login().await;
    assert_eq!(lab.proxy.calls_since(mark), Vec::<String>::new());
    lab.stop().await;
}

#[tokio::test]
async fn without_dockers_events_docker_is_asked() {
    let mut lab = Lab::start().await;
    assert!(lab.login().await.container_started);
    lab.warm_login().await;

    // The events stream cut: once the agent opens it again, it asks Docker afresh.
    let mark = lab.proxy.mark();
    lab.proxy.cut_events();
    lab.proxy.events_requests(mark, 1).await;
    assert!(!lab.backend.knows(&lab.container));
    let mark = lab.proxy.mark();
    lab.warm_login().await;
    assert!(lab.inspected(&lab.proxy.calls_since(mark)));
    let mark = lab.proxy.mark();
    lab.warm_login().await;
    assert_eq!(lab.proxy.calls_since(mark), Vec::<String>::new());

    // The stream kept away: a change it would have told is not missed.
    lab.proxy.refuse_events(true);
    let mark = lab.proxy.mark();
    lab.proxy.cut_events();
    lab.proxy.events_requests(mark, 1).await;
    docker_cli(&["stop", "-t", "1", &lab.container]);
    let reply = lab.ensure().await;
    assert!(!reply.created && reply.started, "{reply:?}");
    lab.login().await;
    lab.proxy.refuse_events(false);
    lab.stop().await;
}

#[tokio::test]
async fn a_session_into_a_container_removed_since_its_ensure_makes_it_again() {
    let mut lab = Lab::start().await;
    assert!(lab.login().await.container_started);
    let id = docker_cli(&["inspect", "-f", "{{.Id}}", &lab.container]);
    let id = id.trim();
    // Removed between a login's ensure and its process: the helper does not answer,
    // Docker says the container is gone, and it is made again for the process.
    docker_cli(&["rm", "-f", id]);
    let (out, _, _) = run_script(&*lab.backend, id, USER, "echo here").await;
    assert_eq!(out, "here\n");
    let recreated = docker_cli(&["inspect", "-f", "{{.Id}}", &lab.container]);
    assert_ne!(recreated.trim(), id);
    lab.warm_login().await;
    lab.stop().await;
}
