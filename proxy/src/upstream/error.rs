//! Why the proxy could not reach, or get an answer from, the controller or an
//! agent. Decided once, from gRPC status codes, transport error types and
//! where in a call it failed, never from an error's text; what a student reads
//! and which `errors_total` kind is counted follow from the variant.

use std::time::Duration;

use labssh_proto::place::PlaceError;
use labssh_proto::tls::ApplyError;

/// A gRPC endpoint no client can be made for.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The URI is not one tonic accepts.
    #[error("{0}")]
    Uri(#[source] tonic::transport::Error),
    /// The TLS material could not be read or applied.
    #[error("tls: {0}")]
    Tls(#[source] ApplyError),
}

/// A failure towards the controller or an agent.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The configured controller endpoint cannot be used (a start-up error).
    #[error("controller: {uri:?}: {source}")]
    ControllerEndpoint {
        /// The configured URI.
        uri: String,
        /// What is wrong with it.
        #[source]
        source: EndpointError,
    },
    /// The catalogue has no such environment; the controller's message lists
    /// those there are.
    #[error("{0}")]
    UnknownEnvironment(String),
    /// The student's groups do not open the environment; the controller's
    /// message lists those they may use.
    #[error("{0}")]
    NotAllowed(String),
    /// No agent can take the student now (none is live, or all are full); the
    /// controller's message says which.
    #[error("{0}")]
    NoCapacity(String),
    /// The controller could not be reached (a transport failure), or did not
    /// answer within the controller timeout (no status then).
    #[error("the lab controller is not reachable right now; please try again in a minute")]
    ControllerDown(#[source] Option<tonic::Status>),
    /// The controller answered the placement with any other error.
    #[error("placement failed: {}", .0.message())]
    PlaceFailed(#[source] tonic::Status),
    /// The placement names an agent endpoint no client can be made for.
    #[error("bad agent endpoint {uri:?}: {source}")]
    AgentEndpoint {
        /// The endpoint the controller gave.
        uri: String,
        /// What is wrong with it.
        #[source]
        source: EndpointError,
    },
    /// The agent could not be called: the stream never opened.
    #[error("cannot reach your container's node: {}", .0.message())]
    AgentUnreachable(#[source] tonic::Status),
    /// The agent's stream failed before its first answer.
    #[error("lost the container's node: {}", .0.message())]
    AgentLost(#[source] tonic::Status),
    /// The agent ended the stream before its first answer; names the stream
    /// ("session", "connection", "listener").
    #[error("the container's node closed the {0}")]
    AgentClosed(&'static str),
    /// The agent's first message was not an answer.
    #[error("unexpected reply from the container's node")]
    Unexpected,
    /// The agent refused; its message is written for the student.
    #[error("{message}")]
    Refused {
        /// What the agent said.
        message: String,
        /// Whether policy refused it (SSH's "administratively prohibited").
        prohibited: bool,
    },
    /// No first answer within the time allowed.
    #[error("the container did not answer in time")]
    TimedOut(Duration),
}

impl UpstreamError {
    /// The placement error a controller's status means: the controller names its
    /// refusal in the status (`labssh_proto::place`); anything else that is
    /// `Unavailable` or late is tonic's own failure to reach it.
    pub(crate) fn from_place_status(status: tonic::Status) -> UpstreamError {
        let message = status.message();
        match PlaceError::from_status(&status) {
            Some(PlaceError::UnknownEnvironment { .. }) => {
                UpstreamError::UnknownEnvironment(message.into())
            }
            Some(PlaceError::NotAllowed { .. }) => UpstreamError::NotAllowed(message.into()),
            Some(
                PlaceError::NoLiveAgents | PlaceError::AllFull | PlaceError::NoGpusFree { .. },
            ) => UpstreamError::NoCapacity(message.into()),
            None => match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    UpstreamError::ControllerDown(Some(status))
                }
                _ => UpstreamError::PlaceFailed(status),
            },
        }
    }

    /// Whether the agent itself could not be reached or went away: a fresh
    /// placement may name another (the cached one may name an agent that just
    /// died).
    pub fn agent_unreachable(&self) -> bool {
        matches!(
            self,
            UpstreamError::AgentUnreachable(_)
                | UpstreamError::AgentLost(_)
                | UpstreamError::AgentClosed(_)
        )
    }

    /// The `errors_total` kind this failure counts as when a session cannot
    /// start; `None` for configuration errors, which are not counted.
    pub fn kind(&self) -> Option<&'static str> {
        Some(match self {
            UpstreamError::ControllerEndpoint { .. } | UpstreamError::AgentEndpoint { .. } => {
                return None
            }
            UpstreamError::UnknownEnvironment(_) => "place_unknown_environment",
            UpstreamError::NotAllowed(_) => "place_not_allowed",
            UpstreamError::NoCapacity(_) => "place_no_capacity",
            UpstreamError::ControllerDown(_) => "place_controller_down",
            UpstreamError::PlaceFailed(_) => "place_failed",
            UpstreamError::AgentUnreachable(_)
            | UpstreamError::AgentLost(_)
            | UpstreamError::AgentClosed(_) => "agent_unreachable",
            UpstreamError::Unexpected | UpstreamError::Refused { .. } => "session_start_failed",
            UpstreamError::TimedOut(_) => "session_start_timeout",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_statuses_are_told_apart_by_what_the_controller_names() {
        let unknown = tonic::Status::from(PlaceError::UnknownEnvironment {
            requested: "x".into(),
            available: vec!["default".into()],
        });
        assert!(matches!(
            UpstreamError::from_place_status(unknown),
            UpstreamError::UnknownEnvironment(m) if m == "unknown environment 'x'; available: default"
        ));
        let refused = tonic::Status::from(PlaceError::NotAllowed {
            requested: "gpu".into(),
            default: false,
            available: vec!["default".into(), "web".into()],
        });
        assert!(matches!(
            UpstreamError::from_place_status(refused),
            UpstreamError::NotAllowed(m) if m == "environment 'gpu' is not available to you; available: default, web"
        ));
        for refusal in [PlaceError::NoLiveAgents, PlaceError::AllFull] {
            let text = refusal.to_string();
            assert!(matches!(
                UpstreamError::from_place_status(tonic::Status::from(refusal)),
                UpstreamError::NoCapacity(m) if m == text
            ));
        }
        // Unavailable or late without the controller naming a refusal: tonic could
        // not reach it, whatever the text says.
        for status in [
            tonic::Status::unavailable(""),
            tonic::Status::unavailable("no backend agent is available; try again shortly"),
            tonic::Status::deadline_exceeded("slow"),
        ] {
            assert!(matches!(
                UpstreamError::from_place_status(status),
                UpstreamError::ControllerDown(Some(_))
            ));
        }
        assert!(matches!(
            UpstreamError::from_place_status(tonic::Status::internal("boom")),
            UpstreamError::PlaceFailed(_)
        ));
    }

    #[test]
    fn kinds_come_from_the_variant() {
        assert_eq!(
            UpstreamError::ControllerDown(None).kind(),
            Some("place_controller_down")
        );
        assert_eq!(
            UpstreamError::AgentClosed("session").kind(),
            Some("agent_unreachable")
        );
        assert_eq!(
            UpstreamError::TimedOut(Duration::from_secs(1)).kind(),
            Some("session_start_timeout")
        );
        assert!(UpstreamError::AgentLost(tonic::Status::unknown("x")).agent_unreachable());
        assert!(!UpstreamError::Unexpected.agent_unreachable());
    }
}
