//! The `labssh.v1.Controller` gRPC service: agent streams, placement and
//! listings, as thin translations onto the registry and the catalogue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use labssh_proto::pb;
use labssh_proto::roles::Peer;
use pb::agent_message::Msg;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::field::Empty;
use tracing::{debug, info, warn};

mod endpoint;
mod refusal;

use crate::catalogue::Catalogue;
use crate::config::Config;
use crate::placement::PlaceError;
use crate::prestart::Prestarter;
use crate::registry::{Registration, Registry};
use crate::sessions::{Sessions, COMMAND_BUFFER};
use endpoint::advertised_endpoint;
use labssh_telemetry::audit::Audit;
use refusal::{Refusal, MAX_AGENT_NAME_LEN};
use serde_json::json;

/// How long a new Attach stream may take to send its `register`; a client
/// that opens the stream and says nothing should not hold a task forever.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued towards one agent. Only the Welcome and a final error are
/// ever sent, so this never fills.
const OUTBOUND_BUFFER: usize = 4;
/// Frames queued towards one watching operator; the proxy skips output beyond.
const WATCH_BUFFER: usize = 64;
/// How long a proxy has to start feeding a watched session.
const FEED_TIMEOUT: Duration = Duration::from_secs(10);

/// The gRPC service. Cheap to clone; every clone shares one registry.
#[derive(Debug, Clone)]
pub struct ControllerService {
    /// Agents and placement state.
    registry: Arc<Registry>,
    /// The environments, pushed to agents and listed to proxies.
    catalogue: Arc<Catalogue>,
    /// Told to agents in `Welcome`.
    heartbeat_interval_ms: u32,
    /// Cancelled at shutdown; ends every agent stream so the server can drain.
    shutdown: CancellationToken,
    /// mTLS is on: every caller has a [`Peer`] from its certificate, and an
    /// agent may register only under the name in it.
    mtls: bool,
    /// Runs `Prestart` calls (and the schedule's prestarts).
    prestarter: Arc<Prestarter>,
    /// Every proxy's sessions, for operators.
    sessions: Arc<Sessions>,
    /// Operators' actions, one JSON line each (`[audit]`).
    audit: Audit,
}

impl ControllerService {
    /// A service over `registry` and `catalogue`, configured by a validated
    /// `config`, running prestarts with `prestarter`.
    pub fn new(
        config: &Config,
        registry: Arc<Registry>,
        catalogue: Arc<Catalogue>,
        prestarter: Arc<Prestarter>,
        audit: Audit,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            registry,
            catalogue,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            shutdown,
            mtls: config.tls.enabled(),
            prestarter,
            sessions: Arc::default(),
            audit,
        }
    }

    fn welcome(&self) -> pb::ControllerMessage {
        pb::ControllerMessage {
            msg: Some(pb::controller_message::Msg::Welcome(pb::Welcome {
                heartbeat_interval_ms: self.heartbeat_interval_ms,
                environments: self.catalogue.environments().to_vec(),
            })),
        }
    }
}

#[tonic::async_trait]
impl pb::controller_server::Controller for ControllerService {
    type AttachStream = ReceiverStream<Result<pb::ControllerMessage, Status>>;

    async fn attach(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let peer = request.remote_addr();
        let certified = request.extensions().get::<Peer>().cloned();
        let mut inbound = request.into_inner();
        let register = first_register(&mut inbound).await?;
        check_agent_name(&register.name)?;
        if self.mtls {
            check_certified_name(certified.as_ref(), &register.name)
                .inspect_err(|e| warn!(?peer, "refused a registration: {e}"))?;
        }
        let endpoint =
            advertised_endpoint(&register.endpoint, peer).map_err(Refusal::BadEndpoint)?;

        let registration = self.registry.register(
            &register.name,
            &endpoint,
            register.status.unwrap_or_default(),
            Instant::now(),
        );
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        tx.try_send(Ok(self.welcome()))
            .expect("a new channel has room for the welcome");
        self.registry.set_outbound(&registration, tx.downgrade());
        tokio::spawn(serve_agent(
            self.registry.clone(),
            registration,
            inbound,
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn place(
        &self,
        request: Request<pb::PlaceRequest>,
    ) -> Result<Response<pb::PlaceReply>, Status> {
        // A child of the proxy's `place` span: one SSH connection, one trace.
        let span = tracing::info_span!(
            "controller.place",
            user = Empty,
            environment = Empty,
            agent = Empty,
            outcome = Empty
        );
        labssh_telemetry::grpc::set_parent(&span, request.metadata());
        let _entered = span.enter();
        let pb::PlaceRequest {
            user,
            environment,
            identity,
        } = request.into_inner();
        if user.is_empty() {
            return Err(Refusal::EmptyUser.into());
        }
        span.record("user", user.as_str());
        let environment = self
            .catalogue
            .resolve_for(&environment, identity.as_ref())
            .inspect_err(|e| {
                placement_outcome(&span, e.outcome());
                if let PlaceError::NotAllowed { requested, .. } = e {
                    info!(%user, environment = %requested, groups = ?identity.as_ref().map(|i| &i.groups), "refused: not in the environment's allowed_groups");
                }
            })
            .map_err(Refusal::from)?;
        span.record("environment", environment);
        let placed = self
            .registry
            .place_with(
                &user,
                environment,
                &self.catalogue.gpu_demand(environment),
                Instant::now(),
            )
            .map_err(|e| self.catalogue.suggest(e, &user, identity.as_ref()))
            .inspect_err(|e| {
                placement_outcome(&span, e.outcome());
                match e {
                    // Operators must hear about a full cluster; the rest is routine.
                    PlaceError::AllFull | PlaceError::NoGpusFree { .. } => {
                        warn!(%user, environment, "placement failed: {e}")
                    }
                    _ => debug!(%user, environment, "placement failed: {e}"),
                }
            })
            .map_err(Refusal::from)?;
        placement_outcome(&span, if placed.existing { "existing" } else { "new" });
        span.record("agent", placed.agent.as_str());
        debug!(%user, environment, agent = %placed.agent, existing = placed.existing, "placed");
        Ok(Response::new(pb::PlaceReply {
            agent_name: placed.agent,
            agent_endpoint: placed.endpoint,
            environment: environment.to_string(),
            existing: placed.existing,
            notice: placed.notice,
            record: self.catalogue.record(environment),
        }))
    }

    async fn list_environments(
        &self,
        _request: Request<pb::ListEnvironmentsRequest>,
    ) -> Result<Response<pb::ListEnvironmentsReply>, Status> {
        Ok(Response::new(pb::ListEnvironmentsReply {
            environments: self.catalogue.environments().to_vec(),
            default_environment: self.catalogue.default_environment().to_string(),
        }))
    }

    async fn list_agents(
        &self,
        _request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsReply>, Status> {
        Ok(Response::new(pb::ListAgentsReply {
            agents: self.registry.agents(Instant::now()),
        }))
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainReply>, Status> {
        let by = operator(&request);
        let pb::DrainRequest { agent, drain } = request.into_inner();
        let done = self.registry.drain(&agent, drain);
        self.audit.record(
            "drain",
            json!({"by": by, "agent": agent, "drain": drain, "done": done.is_some()}),
        );
        match done {
            Some(draining) => Ok(Response::new(pb::DrainReply { agent, draining })),
            None => {
                let known = self
                    .registry
                    .agents(Instant::now())
                    .into_iter()
                    .map(|a| a.name)
                    .collect();
                Err(Refusal::UnknownAgent { agent, known }.into())
            }
        }
    }

    type ReportStream = ReceiverStream<Result<pb::ProxyCommand, Status>>;

    /// Keeps a proxy's sessions as its reports say until its stream ends, and
    /// passes operators' commands for it down the same stream.
    async fn report(
        &self,
        request: Request<Streaming<pb::ProxyReport>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let mut inbound = request.into_inner();
        let (commands, mut queued) = mpsc::channel(COMMAND_BUFFER);
        let (out, answers) = mpsc::channel(COMMAND_BUFFER);
        let (sessions, shutdown) = (self.sessions.clone(), self.shutdown.clone());
        let stream = sessions.stream();
        tokio::spawn(async move {
            let mut name = String::new();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    report = inbound.message() => match report {
                        Ok(Some(report)) if !report.proxy.is_empty() => {
                            if name.is_empty() {
                                info!(proxy = %report.proxy, "proxy reporting its sessions");
                            }
                            name = report.proxy.clone();
                            sessions.report(stream, &name, report.sessions, &commands, Instant::now());
                        }
                        Ok(Some(_)) => {}
                        _ => break,
                    },
                    Some(command) = queued.recv() => {
                        if out.send(Ok(command)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            if !name.is_empty() {
                sessions.gone(stream, &name);
                info!(proxy = %name, "proxy stopped reporting; its sessions left the list");
            }
        });
        Ok(Response::new(ReceiverStream::new(answers)))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsReply>, Status> {
        Ok(Response::new(
            self.sessions.list(&request.into_inner(), Instant::now()),
        ))
    }

    async fn kick(
        &self,
        request: Request<pb::KickRequest>,
    ) -> Result<Response<pb::KickReply>, Status> {
        let by = operator(&request);
        let request = request.into_inner();
        if request.user.is_empty() == request.session.is_empty() {
            return Err(Status::invalid_argument(
                "name either a user or a session to kick",
            ));
        }
        let reply = self.sessions.kick(&request, &by, Instant::now());
        self.audit.record(
            "kick",
            json!({
                "by": by,
                "user": request.user,
                "session": request.session,
                "sessions": reply.sessions,
                "proxies": reply.proxies,
            }),
        );
        info!(user = %request.user, session = %request.session, %by, sessions = reply.sessions, proxies = reply.proxies, "operator kick");
        Ok(Response::new(reply))
    }

    type WatchStream = ReceiverStream<Result<pb::WatchFrame, Status>>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let by = operator(&request);
        let session = request.into_inner().session;
        let (watcher, frames) = mpsc::channel(WATCH_BUFFER);
        let watch = self.sessions.watch(&session, &by, watcher, Instant::now());
        self.audit.record(
            "watch",
            json!({
                "by": by,
                "session": session,
                "error": watch.as_ref().err().map(|e| e.message().to_owned()),
            }),
        );
        let watch = watch?;
        info!(%session, %by, "operator watches a session");
        // A proxy that never answers: the operator is told, not left waiting.
        let sessions = self.sessions.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FEED_TIMEOUT).await;
            if let Some(watcher) = sessions.claim(watch) {
                let _ = watcher
                    .send(Err(Status::unavailable(format!(
                        "the proxy holding session {session} did not start feeding it within {FEED_TIMEOUT:?}"
                    ))))
                    .await;
            }
        });
        Ok(Response::new(ReceiverStream::new(frames)))
    }

    async fn feed(
        &self,
        request: Request<Streaming<pb::FeedMessage>>,
    ) -> Result<Response<pb::FeedReply>, Status> {
        let mut inbound = request.into_inner();
        let Some(first) = inbound.message().await? else {
            return Err(Status::invalid_argument("an empty feed"));
        };
        let watch = first.watch;
        let watcher = self
            .sessions
            .claim(watch)
            .ok_or_else(|| Status::not_found("no operator waits for this feed"))?;
        let mut next = Some(first);
        while let Some(message) = next {
            if message.watch != watch {
                return Err(Status::invalid_argument(
                    "a feed carries one watch's number",
                ));
            }
            let frame = message.frame.unwrap_or_default();
            let last = matches!(frame.frame, Some(pb::watch_frame::Frame::Ended(_)));
            if watcher.send(Ok(frame)).await.is_err() || last {
                // The operator stopped watching, or the session ended.
                return Ok(Response::new(pb::FeedReply {}));
            }
            next = tokio::select! {
                message = inbound.message() => match message {
                    Ok(message) => message,
                    Err(status) => {
                        // The proxy went away: the operator is told, not cut off.
                        let why = format!("the proxy holding the session went away: {}", status.message());
                        let ended = pb::watch_frame::Frame::Ended(why);
                        let _ = watcher.send(Ok(pb::WatchFrame { frame: Some(ended) })).await;
                        return Err(status);
                    }
                },
                () = watcher.closed() => return Ok(Response::new(pb::FeedReply {})),
            };
        }
        let ended = pb::watch_frame::Frame::Ended("the proxy stopped feeding the session".into());
        let _ = watcher
            .send(Ok(pb::WatchFrame { frame: Some(ended) }))
            .await;
        Ok(Response::new(pb::FeedReply {}))
    }

    async fn list_containers(
        &self,
        request: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersReply>, Status> {
        let proxy = request
            .extensions()
            .get::<Peer>()
            .is_some_and(|p| p.role == labssh_proto::roles::Role::Proxy);
        let request = request.into_inner();
        if proxy && request.user.is_empty() {
            return Err(Status::permission_denied(
                "a proxy lists one student's containers only",
            ));
        }
        Ok(Response::new(crate::containers::list(
            &self.registry,
            &request,
            Instant::now(),
        )))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesReply>, Status> {
        let proxy = request
            .extensions()
            .get::<Peer>()
            .is_some_and(|p| p.role == labssh_proto::roles::Role::Proxy);
        let request = request.into_inner();
        if proxy && request.user.is_empty() && request.viewer.is_empty() {
            return Err(Status::permission_denied(
                "a proxy lists one student's services only, or what one login may open",
            ));
        }
        Ok(Response::new(crate::services::list(
            &self.registry,
            &self.catalogue,
            &request,
            Instant::now(),
        )))
    }

    async fn container_action(
        &self,
        request: Request<pb::ContainerActionRequest>,
    ) -> Result<Response<pb::ContainerActionReply>, Status> {
        let by = crate::containers::caller(request.extensions().get::<Peer>(), request.get_ref());
        let request = request.into_inner();
        let reply = crate::containers::act(
            &self.registry,
            &self.catalogue,
            self.prestarter.agents(),
            request.clone(),
            by.clone(),
        )
        .await
        .inspect_err(|e| {
            info!(user = %request.user, environment = %request.environment, %by, "container action refused: {}", e.message())
        });
        let verb = pb::ContainerVerb::try_from(request.verb).unwrap_or_default();
        self.audit.record(
            "container_action",
            json!({
                "by": by,
                "user": request.user,
                "environment": request.environment,
                "action": verb.word(),
                "remove_home": request.remove_home,
                "agent": reply.as_ref().ok().map(|r| r.agent.clone()),
                "sessions_ended": reply.as_ref().ok().map(|r| r.sessions_ended),
                "error": reply.as_ref().err().map(|e| e.message().to_owned()),
            }),
        );
        Ok(Response::new(reply?))
    }

    type PrestartStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::PrestartEvent, Status>> + Send + 'static>,
    >;

    /// Resolves the users and streams one result per user as each finishes;
    /// the call ending early cancels the users not yet started.
    async fn prestart(
        &self,
        request: Request<pb::PrestartRequest>,
    ) -> Result<Response<Self::PrestartStream>, Status> {
        let caller = request
            .extensions()
            .get::<Peer>()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "an unauthenticated caller (mTLS off)".to_string());
        let request = request.into_inner();
        let plan = self
            .prestarter
            .plan(&request)
            .inspect_err(|e| info!(%caller, "prestart refused: {e}"));
        self.audit.record(
            "prestart",
            json!({
                "by": caller,
                "environment": plan.as_ref().map_or(request.environment.clone(), |p| p.environment.clone()),
                "group": request.group,
                "users": plan.as_ref().ok().map(|p| p.users.len()),
                "error": plan.as_ref().err().map(|e| e.to_string()),
            }),
        );
        let plan = plan.map_err(Refusal::from)?;
        info!(
            %caller,
            environment = %plan.environment,
            users = plan.users.len(),
            group = %request.group,
            concurrency = plan.concurrency,
            "prestart"
        );
        let events = ReceiverStream::new(self.prestarter.run(plan));
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            events, Ok,
        ))))
    }
}

/// The `register` an Attach stream must open with.
async fn first_register(
    inbound: &mut Streaming<pb::AgentMessage>,
) -> Result<pb::Register, Refusal> {
    let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Refusal::RegisterTimeout)??;
    match first {
        Some(pb::AgentMessage {
            msg: Some(Msg::Register(register)),
        }) => Ok(register),
        Some(_) => Err(Refusal::NotRegister),
        None => Err(Refusal::EndedBeforeRegister),
    }
}

/// Reads one agent's heartbeats until its stream ends, it is replaced, or
/// the controller shuts down; then marks it dead. Dropping `tx` on return
/// ends the agent's response stream.
async fn serve_agent(
    registry: Arc<Registry>,
    registration: Registration,
    mut inbound: Streaming<pb::AgentMessage>,
    tx: mpsc::Sender<Result<pb::ControllerMessage, Status>>,
    shutdown: CancellationToken,
) {
    let reason = loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => {
                // The agent reconnects to the next controller and registers
                // afresh; nothing to mark.
                debug!(agent = registration.name(), "closing agent stream for shutdown");
                return;
            }
            _ = tx.closed() => break "agent stopped reading",
            message = inbound.message() => message,
        };
        let now = Instant::now();
        let result = match message {
            Ok(Some(pb::AgentMessage {
                msg: Some(Msg::Heartbeat(heartbeat)),
            })) => registry.heartbeat(&registration, heartbeat.status.unwrap_or_default(), now),
            Ok(Some(pb::AgentMessage {
                msg: Some(Msg::Register(_)),
            })) => {
                // Closing is the safe answer: the agent reconnects with a
                // fresh stream, where register is legal.
                let _ = tx.try_send(Err(Refusal::RegisterTwice.into()));
                break "register sent twice";
            }
            // A message kind newer than this controller: still a sign of life.
            Ok(Some(pb::AgentMessage { msg: None })) => registry.touch(&registration, now),
            Ok(None) => break "stream closed by agent",
            Err(status) => {
                debug!(agent = registration.name(), %status, "agent stream failed");
                break "stream failed";
            }
        };
        if let Err(superseded) = result {
            info!(agent = registration.name(), "closing stale agent stream");
            let _ = tx.try_send(Err(Refusal::from(superseded).into()));
            // The new registration owns the entry; do not mark it dead.
            return;
        }
    };
    registry.disconnect(&registration, reason);
}

/// Counts a placement answer and notes it on the rpc's span.
/// Who called, for the audit log and the student: the certificate's identity.
fn operator<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Peer>()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "an operator (mTLS off)".to_owned())
}

fn placement_outcome(span: &tracing::Span, outcome: &'static str) {
    labssh_telemetry::metrics::placement(outcome);
    span.record("outcome", outcome);
}

/// An agent's certificate names its node: it may register as that node only,
/// so a compromised node cannot take over another's placements.
fn check_certified_name(certified: Option<&Peer>, name: &str) -> Result<(), Refusal> {
    match certified {
        Some(peer) if peer.name == name => Ok(()),
        Some(peer) => Err(Refusal::OtherNode {
            role: peer.role,
            certified: peer.name.clone(),
            name: name.to_owned(),
        }),
        // The role guard hands every allowed call its peer; none means it did not run.
        None => Err(Refusal::Uncertified),
    }
}

fn check_agent_name(name: &str) -> Result<(), Refusal> {
    if name.is_empty() {
        return Err(Refusal::EmptyAgentName);
    }
    if name.len() > MAX_AGENT_NAME_LEN || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(Refusal::BadAgentName(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certified_names() {
        let peer = |name: &str| Peer {
            role: labssh_proto::roles::Role::Agent,
            name: name.into(),
        };
        assert!(check_certified_name(Some(&peer("node1")), "node1").is_ok());
        let refused =
            Status::from(check_certified_name(Some(&peer("node1")), "node2").unwrap_err());
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(refused.message().contains("node1") && refused.message().contains("node2"));
        assert!(check_certified_name(None, "node1").is_err());
    }

    #[test]
    fn agent_names() {
        assert!(check_agent_name("node-1").is_ok());
        assert!(check_agent_name("").is_err());
        assert!(check_agent_name("a b").is_err());
        assert!(check_agent_name(&"a".repeat(254)).is_err());
    }
}
