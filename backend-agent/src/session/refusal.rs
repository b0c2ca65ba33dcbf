//! Why a session did not start: one error, whose message the student reads (the proxy
//! prints it and exits 255) and whose variant names the failure in the metrics.

use crate::backend::BackendError;
use crate::limits::caps::OverCap;
use crate::limits::disk_quota::OverQuota;
use crate::state::EnsureError;

/// Why a session did not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The proxy opened with something other than `start`.
    #[error("the first message of a session must be start")]
    NotStart,
    /// The student holds as many sessions on this node as they may.
    #[error(transparent)]
    OverCap(#[from] OverCap),
    /// The student's home or container is over its disk quota (shells and commands
    /// wait; SFTP stays open to delete files).
    #[error(transparent)]
    OverQuota(#[from] OverQuota),
    /// The container could not be ensured.
    #[error(transparent)]
    Ensure(#[from] EnsureError),
    /// A subsystem other than SFTP.
    #[error("unknown subsystem '{0}'; only sftp is offered")]
    UnknownSubsystem(String),
    /// Neither the image nor labssh has an SFTP server in this container.
    #[error("this container has no SFTP server (the image has no sftp-server, and the container predates labssh's built-in one; it gets one when recreated)")]
    NoSftpServer,
    /// Looking for the SFTP server in the container failed.
    #[error(transparent)]
    FindServer(BackendError),
    /// The process did not start.
    #[error(transparent)]
    Spawn(BackendError),
    /// A required login hook failed: its line for the student.
    #[error("{0}")]
    Hook(String),
    /// The process did not start because the container holds as many processes as
    /// it may; says so, with the limit.
    #[error("{0}")]
    ProcessLimit(String),
    /// A session could not be re-attached: why, for the student.
    #[error("{0}")]
    Resume(String),
}

impl SessionError {
    /// The `kind` of `labssh_errors_total{component="agent"}` this counts as, if any:
    /// what operators act on, not what students ask for.
    pub fn metric_kind(&self) -> Option<&'static str> {
        match self {
            SessionError::OverCap(_) => Some("user_cap"),
            SessionError::Ensure(EnsureError::Backend(BackendError::Busy { .. })) => {
                Some("start_queue_full")
            }
            // Nobody is left to tell, and nothing failed.
            SessionError::Ensure(EnsureError::Backend(BackendError::LeftQueue)) => None,
            // The student's groups or account, not a failure.
            SessionError::Ensure(EnsureError::Identity(_)) => None,
            SessionError::Ensure(_) => Some("ensure_failed"),
            SessionError::Spawn(_) => Some("spawn_failed"),
            SessionError::ProcessLimit(_) => Some("process_limit"),
            SessionError::Resume(_) => Some("resume_failed"),
            SessionError::NotStart
            | SessionError::OverQuota(_)
            | SessionError::UnknownSubsystem(_)
            | SessionError::NoSftpServer
            | SessionError::FindServer(_)
            | SessionError::Hook(_) => None,
        }
    }
}
