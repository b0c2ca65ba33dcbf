//! The Agent gRPC service: a thin adapter from rpcs to the session task and the backend.

use std::sync::Arc;

use labssh_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::backend::{BackendError, Ensured, SharedBackend};
use crate::catalogue::Catalogue;
use crate::forward;
use crate::inventory::Inventory;
use crate::limits::Limits;
use crate::names;
use crate::session;

/// Output messages buffered per session before the process is made to wait; small, so
/// a slow client holds back the process instead of growing the agent's memory.
const SESSION_OUTPUT_BUFFER: usize = 32;

/// State shared by all rpcs; lives as long as the agent.
pub struct Shared {
    /// This agent's name, the `agent` label of its metrics.
    pub name: String,
    /// The container runtime.
    pub backend: SharedBackend,
    /// Environments from the controller.
    pub catalogue: Arc<Catalogue>,
    /// Containers and session count for heartbeats.
    pub inventory: Arc<Inventory>,
    /// Cancelled when the agent shuts down; ends every session.
    pub shutdown: CancellationToken,
    /// Session tasks, so shutdown can wait for their cleanup.
    pub tasks: TaskTracker,
    /// Addresses forwarding never reaches, whatever the catalogue says; follows this
    /// host's address changes.
    pub guard: forward::host_watch::HostGuard,
    /// What one student may hold on this node: caps and disk quotas.
    pub limits: Arc<Limits>,
    /// `ssh -R` connections accepted and not yet attached.
    pub pending: Arc<forward::Pending>,
}

/// Why an ensure for a request failed, in words for the student and as a gRPC code.
pub struct EnsureFailure {
    /// For the student.
    pub message: String,
    /// For the caller's logic.
    pub code: tonic::Code,
}

impl From<EnsureFailure> for Status {
    fn from(f: EnsureFailure) -> Self {
        Status::new(f.code, f.message)
    }
}

impl Shared {
    /// Validates the request, looks the environment up and ensures the container;
    /// records a created or started container in the inventory at once.
    pub async fn ensure(
        &self,
        user: &str,
        environment: &str,
    ) -> Result<(pb::Environment, Ensured), EnsureFailure> {
        if !names::is_valid_user(user) {
            return Err(EnsureFailure {
                message: format!("invalid user name '{user}'"),
                code: tonic::Code::InvalidArgument,
            });
        }
        let env = self
            .catalogue
            .get(environment)
            .map_err(|message| EnsureFailure {
                message,
                code: tonic::Code::NotFound,
            })?;
        let ensured = self.backend.ensure(user, &env).await.map_err(|e| {
            tracing::warn!(user, environment, error = %e, "ensure failed");
            let code = match e {
                BackendError::InvalidName { .. } => tonic::Code::InvalidArgument,
                BackendError::NameTaken(_) => tonic::Code::AlreadyExists,
                BackendError::ImageNotAvailable { .. } => tonic::Code::FailedPrecondition,
                _ => tonic::Code::Unavailable,
            };
            EnsureFailure {
                message: e.to_string(),
                code,
            }
        })?;
        if ensured.created || ensured.started {
            self.inventory.note_running(&ensured.name, user, &env.name);
        }
        Ok((env, ensured))
    }
}

/// The tonic service.
pub struct AgentService {
    shared: Arc<Shared>,
}

impl AgentService {
    /// A service over `shared`.
    pub fn new(shared: Arc<Shared>) -> AgentService {
        AgentService { shared }
    }
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    type SessionStream = ReceiverStream<Result<pb::SessionOutput, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionInput>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (tx, rx) = mpsc::channel(SESSION_OUTPUT_BUFFER);
        // A child of the proxy's `start` span: one SSH connection, one trace.
        let span = tracing::info_span!("agent.session", agent = %self.shared.name);
        labssh_telemetry::grpc::set_parent(&span, request.metadata());
        let inbound = request.into_inner();
        self.shared.tasks.spawn(tracing::Instrument::instrument(
            session::run(self.shared.clone(), inbound, tx),
            span,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ForwardStream = ReceiverStream<Result<pb::ForwardOutput, Status>>;

    async fn forward(
        &self,
        request: Request<Streaming<pb::ForwardInput>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let (tx, rx) = mpsc::channel(forward::OUTPUT_BUFFER);
        let span = tracing::info_span!("agent.forward", agent = %self.shared.name);
        labssh_telemetry::grpc::set_parent(&span, request.metadata());
        let inbound = request.into_inner();
        self.shared.tasks.spawn(tracing::Instrument::instrument(
            forward::run(self.shared.clone(), inbound, tx),
            span,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ListenStream = ReceiverStream<Result<pb::ListenEvent, Status>>;

    async fn listen(
        &self,
        request: Request<pb::ListenRequest>,
    ) -> Result<Response<Self::ListenStream>, Status> {
        // Small: each event is one accepted connection the proxy attaches at once.
        let (tx, rx) = mpsc::channel(16);
        let span = tracing::info_span!("agent.listen", agent = %self.shared.name);
        labssh_telemetry::grpc::set_parent(&span, request.metadata());
        let request = request.into_inner();
        self.shared.tasks.spawn(tracing::Instrument::instrument(
            forward::listen(self.shared.clone(), request, tx),
            span,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn ensure(
        &self,
        request: Request<pb::EnsureRequest>,
    ) -> Result<Response<pb::EnsureReply>, Status> {
        let request = request.into_inner();
        let (_, ensured) = self
            .shared
            .ensure(&request.user, &request.environment)
            .await?;
        Ok(Response::new(pb::EnsureReply {
            container: ensured.name,
            created: ensured.created,
            started: ensured.started,
        }))
    }
}
