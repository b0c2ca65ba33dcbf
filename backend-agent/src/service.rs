//! The Agent gRPC service: a thin adapter from rpcs to the session, forward and listen
//! tasks and the backend. Errors become gRPC statuses here and only here.

use std::future::Future;
use std::sync::Arc;

use labssh_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::actions::{self, ActionError};
use crate::backend::BackendError;
use crate::forward::{self, listen};
use crate::session;
use crate::start_queue::{Caller, Class};
use crate::state::{EnsureError, Shared};

/// Output messages buffered per session before the process is made to wait; small, so
/// a slow client holds back the process instead of growing the agent's memory.
const SESSION_OUTPUT_BUFFER: usize = 32;

impl From<EnsureError> for Status {
    fn from(e: EnsureError) -> Self {
        let code = match &e {
            EnsureError::InvalidUser(_) => Code::InvalidArgument,
            EnsureError::Environment(_) => Code::NotFound,
            EnsureError::Backend(BackendError::InvalidName { .. }) => Code::InvalidArgument,
            EnsureError::Backend(BackendError::NameTaken(_)) => Code::AlreadyExists,
            EnsureError::Backend(BackendError::ImageNotAvailable { .. }) => {
                Code::FailedPrecondition
            }
            EnsureError::Backend(BackendError::Busy { .. }) => Code::ResourceExhausted,
            EnsureError::Backend(BackendError::LeftQueue) => Code::Cancelled,
            EnsureError::Backend(_) => Code::Unavailable,
            EnsureError::Hook(_) => Code::FailedPrecondition,
            EnsureError::Identity(_) => Code::PermissionDenied,
        };
        Status::new(code, e.to_string())
    }
}

impl From<ActionError> for Status {
    fn from(e: ActionError) -> Self {
        let code = match &e {
            ActionError::Invalid(_) => Code::InvalidArgument,
            ActionError::NotFound { .. } => Code::NotFound,
            ActionError::HomeInUse { .. } => Code::FailedPrecondition,
            ActionError::Ensure(e) => {
                return Status::new(Status::from(e.clone()).code(), e.to_string())
            }
            ActionError::Backend(_) => Code::Unavailable,
        };
        Status::new(code, e.to_string())
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

    /// Runs `task` for one call on the agent's task tracker, in `span` (a child of
    /// the proxy's span: one SSH connection, one trace), and answers with the stream
    /// of what it sends.
    fn stream<I, T, F>(
        &self,
        span: tracing::Span,
        request: Request<I>,
        buffer: usize,
        task: impl FnOnce(Arc<Shared>, I, mpsc::Sender<Result<T, Status>>) -> F,
    ) -> Response<ReceiverStream<Result<T, Status>>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(buffer);
        labssh_telemetry::grpc::set_parent(&span, request.metadata());
        let run = task(self.shared.clone(), request.into_inner(), tx);
        self.shared
            .tasks
            .spawn(tracing::Instrument::instrument(run, span));
        Response::new(ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    type SessionStream = ReceiverStream<Result<pb::SessionOutput, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionInput>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let span = tracing::info_span!("agent.session", agent = %self.shared.name);
        Ok(self.stream(span, request, SESSION_OUTPUT_BUFFER, session::run))
    }

    type ForwardStream = ReceiverStream<Result<pb::ForwardOutput, Status>>;

    async fn forward(
        &self,
        request: Request<Streaming<pb::ForwardInput>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let span = tracing::info_span!("agent.forward", agent = %self.shared.name);
        Ok(self.stream(span, request, forward::OUTPUT_BUFFER, forward::run))
    }

    type ListenStream = ReceiverStream<Result<pb::ListenEvent, Status>>;

    async fn listen(
        &self,
        request: Request<pb::ListenRequest>,
    ) -> Result<Response<Self::ListenStream>, Status> {
        let span = tracing::info_span!("agent.listen", agent = %self.shared.name);
        Ok(self.stream(span, request, listen::EVENT_BUFFER, listen::listen))
    }

    async fn ensure(
        &self,
        request: Request<pb::EnsureRequest>,
    ) -> Result<Response<pb::EnsureReply>, Status> {
        let request = request.into_inner();
        // A prestart waits behind every student, and marks the container prestarted.
        let class = match request.prestart {
            true => Class::Prestart,
            false => Class::Student,
        };
        let (_, ensured) = self
            .shared
            .ensure_with(
                (&request.user, request.identity.as_ref()),
                &request.environment,
                None,
                Caller::quiet(class),
            )
            .await?;
        Ok(Response::new(pb::EnsureReply {
            container: ensured.name,
            created: ensured.created,
            started: ensured.started,
        }))
    }

    async fn act(
        &self,
        request: Request<pb::ContainerActionRequest>,
    ) -> Result<Response<pb::ContainerActionReply>, Status> {
        let request = request.into_inner();
        let reply = actions::act(&self.shared, &request)
            .await
            .inspect_err(|e| tracing::info!(user = %request.user, environment = %request.environment, by = %request.by, "container action failed: {e}"))?;
        Ok(Response::new(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::CatalogueError;

    #[test]
    fn ensure_errors_map_to_codes_with_the_students_message() {
        let cases = [
            (
                EnsureError::InvalidUser("a b".into()),
                Code::InvalidArgument,
            ),
            (
                EnsureError::Environment(CatalogueError::Unknown("gpu".into())),
                Code::NotFound,
            ),
            (
                EnsureError::Backend(BackendError::NameTaken("lab-a.b".into())),
                Code::AlreadyExists,
            ),
            (
                EnsureError::Backend(BackendError::ImageNotAvailable {
                    image: "img".into(),
                    agent: "a1".into(),
                }),
                Code::FailedPrecondition,
            ),
            (
                EnsureError::Backend(BackendError::StartFailed("exit 1".into())),
                Code::Unavailable,
            ),
            (
                EnsureError::Backend(BackendError::Busy {
                    starting: 501,
                    retry: 40,
                }),
                Code::ResourceExhausted,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, message.as_str()));
        }
        assert_eq!(
            Status::from(EnsureError::InvalidUser("a b".into())).message(),
            "invalid user name 'a b'"
        );
        assert_eq!(
            Status::from(EnsureError::Environment(CatalogueError::Unknown(
                "gpu".into()
            )))
            .message(),
            "unknown environment 'gpu'"
        );
    }
}
