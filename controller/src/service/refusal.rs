//! Why the controller refuses or ends a call: one error for every RPC, mapped to a
//! gRPC status in one place. Messages reach agents' logs and students' terminals.

use labssh_proto::roles::Role;
use tonic::{Code, Status};

use crate::members::MembersError;
use crate::placement::PlaceError;
use crate::prestart::PrestartError;
use crate::registry::Superseded;

/// Longest agent name accepted; it appears in logs and replies to proxies.
pub const MAX_AGENT_NAME_LEN: usize = 253;

/// Why a call was refused or ended.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A new Attach stream sent nothing within the register timeout.
    #[error("no register message received in time")]
    RegisterTimeout,
    /// The first message on an Attach stream was something else.
    #[error("the first message on an Attach stream must be register")]
    NotRegister,
    /// The Attach stream ended before it registered.
    #[error("the Attach stream ended before register")]
    EndedBeforeRegister,
    /// A second register on a stream that has registered.
    #[error("register is only allowed as the first message")]
    RegisterTwice,
    /// The agent's stream failed before it registered.
    #[error(transparent)]
    Stream(#[from] Status),
    /// The agent gave no name.
    #[error("register.name must not be empty")]
    EmptyAgentName,
    /// The agent's name is too long or has spaces or control characters.
    #[error(
        "register.name {0:?} must be at most {MAX_AGENT_NAME_LEN} bytes without spaces or control characters"
    )]
    BadAgentName(String),
    /// The agent's certificate names another node.
    #[error(
        "this {role} certificate is for the node {certified:?}; it may register only as {certified:?}, not as {name:?}"
    )]
    OtherNode {
        /// The role its certificate holds.
        role: Role,
        /// The node its certificate names.
        certified: String,
        /// The name it registered with.
        name: String,
    },
    /// With mTLS on, the caller showed no certificate naming a node.
    #[error("register requires an agent certificate naming the node")]
    Uncertified,
    /// The endpoint the agent advertised is not an http(s) URL.
    #[error("register.endpoint: {0}")]
    BadEndpoint(String),
    /// The agent registered again on another stream; this one is stale.
    #[error(transparent)]
    Superseded(#[from] Superseded),
    /// A placement request without a user.
    #[error("user must not be empty")]
    EmptyUser,
    /// No agent could be chosen.
    #[error(transparent)]
    Place(#[from] PlaceError),
    /// A drain or resume for an agent the controller does not know.
    #[error("unknown agent '{agent}'; known agents: {}", known_list(known))]
    UnknownAgent {
        /// The name asked for.
        agent: String,
        /// Every agent the controller knows.
        known: Vec<String>,
    },
    /// A prestart that cannot begin (unknown environment or group, no users).
    #[error(transparent)]
    Prestart(#[from] PrestartError),
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none".to_string()
    } else {
        known.join(", ")
    }
}

impl Refusal {
    /// The gRPC code callers act on.
    fn code(&self) -> Code {
        match self {
            Refusal::RegisterTimeout => Code::DeadlineExceeded,
            Refusal::NotRegister
            | Refusal::EndedBeforeRegister
            | Refusal::RegisterTwice
            | Refusal::EmptyAgentName
            | Refusal::BadAgentName(_)
            | Refusal::BadEndpoint(_)
            | Refusal::EmptyUser => Code::InvalidArgument,
            Refusal::Stream(status) => status.code(),
            Refusal::OtherNode { .. } | Refusal::Uncertified => Code::PermissionDenied,
            Refusal::Superseded(_) => Code::Aborted,
            Refusal::Place(e) => e.code(),
            Refusal::UnknownAgent { .. } => Code::NotFound,
            Refusal::Prestart(e) => match e {
                PrestartError::Environment(e) => e.code(),
                PrestartError::Members(MembersError::UnknownGroup { .. }) => Code::NotFound,
                PrestartError::Members(
                    MembersError::NoUsersFile(_) | MembersError::Read { .. },
                ) => Code::FailedPrecondition,
                PrestartError::Members(MembersError::BadGroup(_))
                | PrestartError::NoUsers
                | PrestartError::Concurrency(_) => Code::InvalidArgument,
            },
        }
    }
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            // A placement error carries its variant for the proxies to read back.
            Refusal::Place(e) => e.into(),
            Refusal::Stream(status) => status,
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_code_and_message() {
        let cases = [
            (Refusal::RegisterTimeout, Code::DeadlineExceeded),
            (Refusal::NotRegister, Code::InvalidArgument),
            (Refusal::Uncertified, Code::PermissionDenied),
            (Refusal::Superseded(Superseded("a".into())), Code::Aborted),
            (Refusal::Place(PlaceError::AllFull), Code::ResourceExhausted),
            (Refusal::Place(PlaceError::NoLiveAgents), Code::Unavailable),
        ];
        for (refusal, code) in cases {
            let message = refusal.to_string();
            let status = Status::from(refusal);
            assert_eq!((status.code(), status.message()), (code, message.as_str()));
        }
        let unknown = Status::from(Refusal::UnknownAgent {
            agent: "x".into(),
            known: Vec::new(),
        });
        assert_eq!(unknown.code(), Code::NotFound);
        assert_eq!(unknown.message(), "unknown agent 'x'; known agents: none");
        // A placement error keeps what the proxies read back from it.
        let full = Status::from(Refusal::Place(PlaceError::AllFull));
        assert_eq!(PlaceError::from_status(&full), Some(PlaceError::AllFull));
    }
}
