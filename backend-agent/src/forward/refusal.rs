//! Why a forward did not open: one error, whose message the student's client prints
//! (`open failed: ...`), and whose variant says whether it was refused by policy
//! (`administratively prohibited`) or failed, and what the metrics count.

use crate::backend::BackendError;
use crate::limits::caps::OverCap;
use crate::state::EnsureError;

use super::policy::Refused;

/// Why a forward was refused or failed before any byte moved.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The proxy opened with something other than open or attach.
    #[error("the first message of a forward must be open or attach")]
    NotOpen,
    /// The student holds as many forwards (or listeners) on this node as they may.
    #[error(transparent)]
    OverCap(#[from] OverCap),
    /// The environment's forwarding policy or the agent's guard refuses it.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The container could not be ensured.
    #[error(transparent)]
    Ensure(#[from] EnsureError),
    /// The port asked for does not fit TCP.
    #[error("port {0} is not a TCP port")]
    BadPort(u32),
    /// The agent's resolver failed for a name an allow rule gives.
    #[error("{target}: cannot resolve the name: {source}")]
    Resolve {
        /// `host:port` as asked.
        target: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The agent's resolver took too long.
    #[error("{target}: the name did not resolve within {secs} s")]
    ResolveTimeout {
        /// `host:port` as asked.
        target: String,
        /// The limit, in seconds.
        secs: u64,
    },
    /// The name resolves to nothing.
    #[error("{0}: the name resolves to no address")]
    NoAddress(String),
    /// The runtime could not resolve, connect or listen inside the container.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An accepted `ssh -R` connection that is no longer waiting.
    #[error("that connection is gone (closed, or not attached in time)")]
    Gone,
    /// An accepted `ssh -R` connection of another student or environment.
    #[error("that connection belongs to another session")]
    NotTheirs,
    /// A reader's forward to a container that does not run (nothing is started for
    /// a reader).
    #[error("{0}'s container for {1} is not running")]
    NotRunning(String, String),
}

impl ForwardError {
    /// Refused by a rule rather than failed: the client hears "administratively
    /// prohibited", and nothing is counted as an error.
    pub fn prohibited(&self) -> bool {
        matches!(
            self,
            ForwardError::OverCap(_)
                | ForwardError::Refused(_)
                | ForwardError::Ensure(EnsureError::Identity(_))
        )
    }

    /// The `kind` of `labssh_errors_total{component="agent"}` a failed forward counts
    /// as; refusals are not failures.
    pub fn metric_kind(&self) -> Option<&'static str> {
        (!self.prohibited()).then_some("forward_failed")
    }
}

impl From<ForwardError> for labssh_proto::pb::ForwardError {
    fn from(e: ForwardError) -> Self {
        labssh_proto::pb::ForwardError {
            prohibited: e.prohibited(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::caps::Kind;

    #[test]
    fn refusals_are_prohibited_and_failures_are_counted() {
        let over = ForwardError::OverCap(OverCap {
            kind: Kind::Forward,
            user: "alice".into(),
            cap: 2,
        });
        let refused = ForwardError::Refused(Refused("not allowed".into()));
        for e in [over, refused] {
            assert!(e.prohibited());
            assert_eq!(e.metric_kind(), None);
        }
        let gone = labssh_proto::pb::ForwardError::from(ForwardError::Gone);
        assert!(!gone.prohibited);
        assert_eq!(
            gone.message,
            "that connection is gone (closed, or not attached in time)"
        );
        assert_eq!(
            ForwardError::BadPort(70000).metric_kind(),
            Some("forward_failed")
        );
        assert_eq!(
            ForwardError::BadPort(70000).to_string(),
            "port 70000 is not a TCP port"
        );
    }
}
