//! The `Closing` phase: report how the session ended — the process's exit
//! status or signal, or one line saying what failed and exit status 255 — and
//! close the channel.

use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component};
use tracing::field::Empty;

use super::session::Session;
use super::signal;
use crate::upstream::Placement;

/// Exit status for failures of the gateway itself, as ssh uses for its own.
pub(crate) const GATEWAY_FAILURE_STATUS: u32 = 255;

/// How a started session ended.
pub(crate) enum Ending {
    /// The process ended; report its status.
    Exited(pb::ExitStatus),
    /// The agent reported an error or vanished; tell the student.
    Failed(String),
    /// The client went away; nothing to report.
    ClientGone,
}

impl Ending {
    /// How the channel ended, for its `close` span.
    fn as_str(&self) -> &'static str {
        match self {
            Ending::Exited(_) => "exited",
            Ending::Failed(_) => "failed",
            Ending::ClientGone => "client_gone",
        }
    }
}

/// A started session that ended, with what its `close` span reports.
pub(crate) struct Ended {
    /// How.
    pub ending: Ending,
    /// The channel's `session` span.
    pub span: tracing::Span,
    /// Where it ran.
    pub placement: Placement,
    /// How the gateway's lines end on this channel.
    pub newline: &'static str,
    /// What it ran: shell, exec or subsystem.
    pub kind: &'static str,
    /// When it started.
    pub started_at: std::time::Instant,
    /// Bytes from the client to the process.
    pub to_container: u64,
    /// Bytes from the process to the client.
    pub to_client: u64,
    /// Counts the session as forwarding until it is closed.
    pub _active: telemetry::Active,
}

/// What the phase closes.
pub(crate) enum Closing {
    /// The session never started; the message says why.
    NotStarted {
        /// For the student.
        message: String,
        /// How the line ends.
        newline: &'static str,
    },
    /// A started session ended.
    Ended(Box<Ended>),
    /// The proxy answered the channel itself (the self-service login): its
    /// output is written; report `status`.
    Answered {
        /// The exit status.
        status: u32,
    },
}

/// How an exit is reported to the client.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    /// `exit-status`.
    Status(u32),
    /// `exit-signal`.
    Signal {
        /// The signal's POSIX name without "SIG".
        name: String,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

/// The report for the agent's exit status; one without a status is the
/// gateway's failure.
fn exit_report(status: pb::ExitStatus) -> Exit {
    match status.status {
        Some(pb::exit_status::Status::Signal(name)) => Exit::Signal {
            name,
            core_dumped: status.core_dumped,
        },
        Some(pb::exit_status::Status::Code(code)) => Exit::Status(code as u32),
        None => Exit::Status(GATEWAY_FAILURE_STATUS),
    }
}

/// Runs the phase.
pub(crate) async fn run(session: &Session, closing: Closing) {
    let ended = match closing {
        Closing::NotStarted { message, newline } => return fail(session, &message, newline).await,
        Closing::Answered { status } => {
            let write = &session.write;
            let _ = write.exit_status(status).await;
            let _ = write.eof().await;
            let _ = write.close().await;
            return;
        }
        Closing::Ended(ended) => *ended,
    };
    let close_span = tracing::info_span!(
        parent: &ended.span,
        "close",
        ending = ended.ending.as_str(),
        exit_status = Empty,
        exit_signal = Empty,
        bytes_to_container = ended.to_container,
        bytes_to_client = ended.to_client
    );
    audit_end(session, &ended);
    let write = &session.write;
    match ended.ending {
        Ending::Exited(status) => {
            match &status.status {
                Some(pb::exit_status::Status::Code(code)) => {
                    close_span.record("exit_status", code);
                }
                Some(pb::exit_status::Status::Signal(name)) => {
                    close_span.record("exit_signal", name.as_str());
                }
                None => {}
            }
            let _ = write.eof().await;
            match exit_report(status) {
                Exit::Signal { name, core_dumped } => {
                    let signal = signal::from_name(&name);
                    let (message, language) = (String::new(), String::new());
                    let _ = session
                        .ctx
                        .handle
                        .exit_signal_request(write.id(), signal, core_dumped, message, language)
                        .await;
                }
                Exit::Status(code) => {
                    let _ = write.exit_status(code).await;
                }
            }
            let _ = write.close().await;
        }
        Ending::Failed(message) => {
            telemetry::error(Component::Proxy, "session_lost");
            let ctx = &session.ctx;
            let (user, agent) = (&ctx.login.user, &ended.placement.agent);
            tracing::warn!(conn = ctx.conn, %user, %agent, "session failed: {message}");
            ctx.shared
                .upstream
                .forget_placement(user, &ctx.environment());
            fail(session, &message, ended.newline).await;
        }
        Ending::ClientGone => {
            let _ = write.close().await;
        }
    }
    drop(close_span);
}

/// The session's end in the audit log: how, its status, its bytes.
fn audit_end(session: &Session, ended: &Ended) {
    let ctx = &session.ctx;
    let mut line = serde_json::json!({
        "conn": ctx.conn,
        "channel": u32::from(session.id),
        "client": ctx.peer,
        "user": ctx.login.user,
        "environment": ended.placement.environment,
        "agent": ended.placement.agent,
        "kind": ended.kind,
        "ending": ended.ending.as_str(),
        "seconds": (ended.started_at.elapsed().as_millis() as f64) / 1000.0,
        "bytes_to_container": ended.to_container,
        "bytes_to_client": ended.to_client,
    });
    if let Ending::Exited(status) = &ended.ending {
        match &status.status {
            Some(pb::exit_status::Status::Code(code)) => line["exit_status"] = (*code).into(),
            Some(pb::exit_status::Status::Signal(name)) => {
                line["exit_signal"] = name.as_str().into()
            }
            None => line["exit_status"] = GATEWAY_FAILURE_STATUS.into(),
        }
    }
    if let Ending::Failed(message) = &ended.ending {
        line["exit_status"] = GATEWAY_FAILURE_STATUS.into();
        line["failure"] = message.as_str().into();
    }
    ctx.shared.audit.record("session_end", line);
}

/// Tells the student what failed, with the gateway's exit status, and closes.
async fn fail(session: &Session, message: &str, newline: &str) {
    session.tell(message, newline).await;
    let write = &session.write;
    let _ = write.exit_status(GATEWAY_FAILURE_STATUS).await;
    let _ = write.eof().await;
    let _ = write.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_reported_as_ssh_does() {
        let code = pb::ExitStatus {
            status: Some(pb::exit_status::Status::Code(3)),
            core_dumped: false,
        };
        assert_eq!(exit_report(code), Exit::Status(3));
        let killed = pb::ExitStatus {
            status: Some(pb::exit_status::Status::Signal("KILL".into())),
            core_dumped: true,
        };
        assert_eq!(
            exit_report(killed),
            Exit::Signal {
                name: "KILL".into(),
                core_dumped: true
            }
        );
        assert_eq!(
            exit_report(pb::ExitStatus::default()),
            Exit::Status(GATEWAY_FAILURE_STATUS)
        );
    }

    #[test]
    fn endings_name_themselves_for_the_close_span() {
        assert_eq!(Ending::ClientGone.as_str(), "client_gone");
        assert_eq!(Ending::Failed("x".into()).as_str(), "failed");
        assert_eq!(Ending::Exited(pb::ExitStatus::default()).as_str(), "exited");
    }
}
