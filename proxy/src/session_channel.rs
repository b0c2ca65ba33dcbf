//! One SSH session channel, from its requests to its exit status.
//!
//! Phases: gather requests (pty, env) until `shell` or `exec` → place the
//! user → open the agent stream and wait for the process to start →
//! splice bytes both ways → report exit status or signal and close.
//! Every failure a student can cause or suffer ends here as one line on
//! stderr and exit status 255, never as a silently dropped channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use labssh_proto::pb;
use pb::session_input::Msg as In;
use pb::session_output::Msg as Out;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, Sig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::login_name::LoginName;
use crate::server::Shared;
use crate::upstream::Placement;

/// Exit status for failures of the gateway itself, as ssh uses for its own.
const GATEWAY_FAILURE_STATUS: u32 = 255;
/// Inputs queued towards the agent; beyond this the client is back-pressured.
const INPUT_QUEUE: usize = 32;
/// After the client closes, how long to wait for the process's exit report.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What a channel task needs from its connection.
pub(crate) struct ChannelContext {
    /// Replica-wide state.
    pub shared: Arc<Shared>,
    /// The authenticated login.
    pub login: LoginName,
    /// Connection number, for logs.
    pub conn: u64,
    /// Connection handle, for exit-signal.
    pub handle: Handle,
}

/// The pieces of the `start` message gathered from channel requests.
#[derive(Default)]
struct StartRequest {
    pty: Option<pb::PtyRequest>,
    env: HashMap<String, String>,
}

pub(crate) async fn run(channel: Channel<Msg>, ctx: ChannelContext) {
    let id = channel.id();
    let (mut read, write) = channel.split();
    let mut req = StartRequest::default();
    let command = loop {
        match read.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                ..
            }) => {
                req.pty = Some(pb::PtyRequest {
                    term,
                    cols: col_width,
                    rows: row_height,
                    width_px: pix_width,
                    height_px: pix_height,
                });
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                if ctx.shared.config.env_allowed(&variable_name) {
                    req.env.insert(variable_name, variable_value);
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break String::new(),
            Some(ChannelMsg::Exec { command, .. }) => {
                break String::from_utf8_lossy(&command).into_owned()
            }
            Some(ChannelMsg::Close) | None => return,
            Some(_) => {}
        }
    };
    let newline = if req.pty.is_some() { "\r\n" } else { "\n" };
    let fail = |message: String| {
        let write = &write;
        async move {
            let text = format!("labssh: {message}{newline}");
            let _ = write.extended_data_bytes(1, Bytes::from(text)).await;
            let _ = write.exit_status(GATEWAY_FAILURE_STATUS).await;
            let _ = write.eof().await;
            let _ = write.close().await;
        }
    };

    let user = ctx.login.user.clone();
    let requested_env = ctx.login.environment.clone().unwrap_or_default();
    let start = pb::Start {
        user: user.clone(),
        environment: String::new(),
        command,
        argv: Vec::new(),
        env: req.env,
        pty: req.pty,
    };
    let Opened {
        tx,
        mut outputs,
        started,
        placement,
    } = match open(&ctx, &requested_env, start).await {
        Ok(o) => o,
        Err(message) => return fail(message).await,
    };
    tracing::info!(
        conn = ctx.conn,
        %user,
        environment = %placement.environment,
        agent = %placement.agent,
        container = %started.container,
        container_started = started.container_started,
        "session started"
    );

    // Client → agent. Runs on its own so a process that is blocked writing
    // output can never stall delivery of its input, and vice versa.
    let upstream = async move {
        while let Some(msg) = read.wait().await {
            let input = match msg {
                ChannelMsg::Data { data } => In::Stdin(data.to_vec()),
                ChannelMsg::Eof => In::Eof(pb::Eof {}),
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                } => In::Resize(pb::WindowSize {
                    cols: col_width,
                    rows: row_height,
                    width_px: pix_width,
                    height_px: pix_height,
                }),
                ChannelMsg::Signal { signal } => In::Signal(signal_name(&signal)),
                ChannelMsg::Close => break,
                _ => continue,
            };
            if tx
                .send(pb::SessionInput { msg: Some(input) })
                .await
                .is_err()
            {
                break;
            }
        }
        // Dropping `tx` ends the agent's input stream: it hangs up the process.
    };

    // Agent → client, honouring the client's SSH window.
    let write = &write;
    let downstream = async {
        while let Some(item) = outputs.next().await {
            match item {
                Ok(pb::SessionOutput { msg: Some(msg) }) => match msg {
                    Out::Stdout(b) => {
                        if write.data_bytes(Bytes::from(b)).await.is_err() {
                            return Ending::ClientGone;
                        }
                    }
                    Out::Stderr(b) => {
                        if write.extended_data_bytes(1, Bytes::from(b)).await.is_err() {
                            return Ending::ClientGone;
                        }
                    }
                    Out::Exit(status) => return Ending::Exited(status),
                    Out::Error(e) => return Ending::Failed(e.message),
                    Out::Started(_) => {}
                },
                Ok(pb::SessionOutput { msg: None }) => {}
                Err(status) => {
                    return Ending::Failed(format!(
                        "lost the connection to your container: {}",
                        status.message()
                    ))
                }
            }
        }
        Ending::Failed("lost the connection to your container".into())
    };

    tokio::pin!(upstream);
    tokio::pin!(downstream);
    let ending = tokio::select! {
        ending = &mut downstream => ending,
        _ = &mut upstream => {
            tokio::time::timeout(CLOSE_GRACE, &mut downstream)
                .await
                .unwrap_or(Ending::ClientGone)
        }
    };

    match ending {
        Ending::Exited(status) => {
            let _ = write.eof().await;
            match status.status {
                Some(pb::exit_status::Status::Signal(name)) => {
                    let _ = ctx
                        .handle
                        .exit_signal_request(
                            write.id(),
                            sig_from_name(&name),
                            status.core_dumped,
                            String::new(),
                            String::new(),
                        )
                        .await;
                }
                Some(pb::exit_status::Status::Code(code)) => {
                    let _ = write.exit_status(code as u32).await;
                }
                None => {
                    let _ = write.exit_status(GATEWAY_FAILURE_STATUS).await;
                }
            }
            let _ = write.close().await;
        }
        Ending::Failed(message) => {
            tracing::warn!(conn = ctx.conn, %user, agent = %placement.agent, "session failed: {message}");
            ctx.shared.upstream.forget_placement(&user, &requested_env);
            fail(message).await;
        }
        Ending::ClientGone => {
            let _ = write.close().await;
        }
    }
    tracing::debug!(conn = ctx.conn, channel = ?id, "channel closed");
}

/// A started process and the stream to it.
struct Opened {
    /// Input towards the agent (stdin, resize, signals, EOF).
    tx: mpsc::Sender<pb::SessionInput>,
    /// Output from the agent.
    outputs: tonic::Streaming<pb::SessionOutput>,
    /// The agent's start report.
    started: pb::Started,
    /// Where it runs.
    placement: Placement,
}

/// Why opening the agent stream failed.
enum StartFailure {
    /// The agent could not be reached: worth one retry with a fresh placement
    /// (the cached one may name an agent that just died).
    Unreachable(String),
    /// The agent answered with an error the student must read.
    Refused(String),
}

/// Places the user and starts the process, retrying once on a fresh
/// placement when the agent is unreachable. Errors are student-facing.
async fn open(
    ctx: &ChannelContext,
    requested_env: &str,
    mut start: pb::Start,
) -> Result<Opened, String> {
    let user = &ctx.login.user;
    let upstream = &ctx.shared.upstream;
    let timeout = ctx.shared.config.session_start_timeout();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let placement = upstream.place(user, requested_env).await.map_err(|e| {
            tracing::warn!(conn = ctx.conn, %user, environment = %requested_env, "placement failed: {e}");
            e.to_string()
        })?;
        let mut agent = upstream.agent(&placement.endpoint)?;
        start.environment = placement.environment.clone();
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let _ = tx
            .send(pb::SessionInput {
                msg: Some(In::Start(start.clone())),
            })
            .await;
        let opened = tokio::time::timeout(timeout, async {
            let mut outputs = agent
                .session(ReceiverStream::new(rx))
                .await
                .map_err(|s| StartFailure::Unreachable(s.message().to_string()))?
                .into_inner();
            match outputs.next().await {
                Some(Ok(pb::SessionOutput {
                    msg: Some(Out::Started(started)),
                })) => Ok((outputs, started)),
                Some(Ok(pb::SessionOutput {
                    msg: Some(Out::Error(e)),
                })) => Err(StartFailure::Refused(e.message)),
                Some(Ok(_)) => Err(StartFailure::Refused(
                    "unexpected reply from the container's node".into(),
                )),
                Some(Err(s)) => Err(StartFailure::Unreachable(s.message().to_string())),
                None => Err(StartFailure::Unreachable(
                    "the container's node closed the session".into(),
                )),
            }
        })
        .await;
        match opened {
            Ok(Ok((outputs, started))) => {
                return Ok(Opened {
                    tx,
                    outputs,
                    started,
                    placement,
                })
            }
            Ok(Err(StartFailure::Unreachable(message))) if attempt == 1 => {
                tracing::warn!(conn = ctx.conn, %user, agent = %placement.agent, "agent unreachable, placing again: {message}");
                upstream.forget_placement(user, requested_env);
            }
            Ok(Err(StartFailure::Unreachable(message) | StartFailure::Refused(message))) => {
                tracing::warn!(conn = ctx.conn, %user, agent = %placement.agent, "session start failed: {message}");
                upstream.forget_placement(user, requested_env);
                return Err(format!("could not start your session: {message}"));
            }
            Err(_) => {
                tracing::warn!(conn = ctx.conn, %user, agent = %placement.agent, "session start timed out");
                upstream.forget_placement(user, requested_env);
                return Err(format!(
                    "your container did not start within {} s; please try again",
                    timeout.as_secs()
                ));
            }
        }
    }
}

enum Ending {
    /// The process ended; report its status.
    Exited(pb::ExitStatus),
    /// The agent reported an error or vanished; tell the student.
    Failed(String),
    /// The client went away; nothing to report.
    ClientGone,
}

/// SSH signal names are POSIX names without "SIG".
fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name.as_str(),
    }
    .to_string()
}

fn sig_from_name(name: &str) -> Sig {
    match name {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_round_trip() {
        for name in ["INT", "TERM", "HUP", "KILL", "USR2", "WINCH"] {
            assert_eq!(signal_name(&sig_from_name(name)), name);
        }
    }
}
