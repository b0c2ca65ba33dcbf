//! One SSH session channel, from its requests to its exit status, as an
//! explicit state machine with one module per phase:
//!
//! ```text
//! Gathering ──shell/exec/subsystem──▶ Starting ──Started──▶ Relaying ──▶ Closing
//!     │ (close, timeout)                 │ (failed)                         ▲
//!     ▼                                  └──────────────────────────────────┘
//!   done
//! ```
//!
//! - [`gather`]: pty and env requests are answered until `shell`, `exec` or
//!   `subsystem` forms the one `Start`; this is the only place the proxy
//!   applies the env allow-list and the subsystem check.
//! - [`start`]: places the user and starts the process, with retry.
//! - [`relay`]: splices bytes both ways until the process ends or either side
//!   goes away.
//! - [`close`]: reports the exit status or signal, or the failure, and closes.
//!
//! The connection task feeds the channel two queues, both in the client's
//! order: requests that want an answer (pty, env, shell, exec, subsystem), and
//! everything else (data, EOF, window changes, signals). Every failure a
//! student can cause or suffer ends as one line on stderr and exit status 255,
//! never as a silently dropped channel.

use std::time::Instant;

use russh::server::Msg;
use russh::ChannelWriteHalf;
use tokio::sync::mpsc;

use crate::state::Context;

mod close;
mod gather;
mod helpdesk;
mod queue;
mod relay;
mod resume;
mod session;
mod set_env;
pub(crate) mod signal;
mod start;

use queue::{Inbox, Pending};
use session::Session;

pub(crate) use queue::{queues, Input, Request, Sender};

/// Where a session channel is in its life.
enum Phase {
    /// Answering requests until one starts a process.
    Gathering,
    /// The `Start` is formed; placing the user and starting the process.
    Starting(gather::Gathered),
    /// Bytes flow both ways.
    Relaying(Box<start::Started>),
    /// Reporting how it ended, and closing.
    Closing(close::Closing),
}

/// Runs one session channel. `accepted` (when the connection was accepted)
/// is given for the connection's first channel only: its start ends the
/// student's login time.
pub(crate) async fn run(
    write: ChannelWriteHalf<Msg>,
    mut inbox: Inbox,
    ctx: Context,
    accepted: Option<Instant>,
) {
    let session = Session {
        id: write.id(),
        ctx,
        write,
    };
    let mut phase = Phase::Gathering;
    loop {
        phase = match phase {
            Phase::Gathering => match gather::run(&session, &mut inbox).await {
                Some(gathered) => Phase::Starting(gathered),
                None => break,
            },
            Phase::Starting(gathered) if session.ctx.login.helpdesk => {
                match unless_gone(&mut inbox.requests, helpdesk::run(&session, gathered)).await {
                    Some(closing) => Phase::Closing(closing),
                    None => break,
                }
            }
            Phase::Starting(gathered) => {
                match unless_gone(&mut inbox.requests, start::run(&session, gathered)).await {
                    Some(Ok(started)) => Phase::Relaying(Box::new(started)),
                    Some(Err(failed)) => Phase::Closing(failed),
                    // The client is gone: the agent's stream is dropped, so a start
                    // waiting in its queue leaves it.
                    None => break,
                }
            }
            Phase::Relaying(started) => {
                let Inbox { requests, inputs } = &mut inbox;
                let relay = relay::run(&session, *started, inputs, accepted);
                Phase::Closing(refusing(requests, relay).await)
            }
            Phase::Closing(closing) => {
                // Nothing more is read: the connection must never wait on us.
                drop(inbox);
                close::run(&session, closing).await;
                break;
            }
        };
    }
    tracing::debug!(conn = session.ctx.conn, channel = ?session.id, "channel closed");
}

/// Runs `phase` to its end, refusing every request that arrives meanwhile:
/// once a process is starting, the channel takes no more (a second `exec`,
/// a late `env`).
async fn refusing<T>(
    requests: &mut mpsc::UnboundedReceiver<Pending>,
    phase: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(phase);
    loop {
        tokio::select! {
            done = &mut phase => return done,
            Some((_, reply)) = requests.recv() => {
                let _ = reply.send(false);
            }
        }
    }
}

/// [`refusing`], but `None` as soon as the client is gone (the connection dropped
/// the channel's queues): `phase` is dropped then.
async fn unless_gone<T>(
    requests: &mut mpsc::UnboundedReceiver<Pending>,
    phase: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(phase);
    loop {
        tokio::select! {
            done = &mut phase => return Some(done),
            request = requests.recv() => match request {
                Some((_, reply)) => {
                    let _ = reply.send(false);
                }
                None => return None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test]
    async fn requests_after_the_start_are_refused() {
        let (sender, mut inbox) = queues();
        let (reply, answer) = oneshot::channel();
        sender.request(Request::Exec("second".into()), reply);
        let (finish, finished) = oneshot::channel::<()>();
        let phase = async {
            // The phase is still running when the request is answered.
            let _ = finished.await;
            "done"
        };
        let answered = async {
            let accepted = answer.await.unwrap();
            let _ = finish.send(());
            accepted
        };
        let (done, accepted) = tokio::join!(refusing(&mut inbox.requests, phase), answered);
        assert_eq!(done, "done");
        assert!(!accepted, "a second exec is refused");
    }
}
