//! One SSH session channel, from its requests to its exit status.
//!
//! Phases: gather requests (pty, env) until `shell` or `exec` → place the
//! user → open the agent stream and wait for the process to start →
//! splice bytes both ways → report exit status or signal and close.
//! Every failure a student can cause or suffer ends here as one line on
//! stderr and exit status 255, never as a silently dropped channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component, Direction, Phase};
use pb::session_input::Msg as In;
use pb::session_output::Msg as Out;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, Sig};
use tokio::sync::mpsc;
use labssh_proto::pb::agent_client::AgentClient;
use tonic::transport::Channel as GrpcChannel;
use tracing::field::Empty;
use tracing::Instrument;

use crate::state::Context;
use crate::set_env::EnvRequests;
use crate::upstream::{first_answer, with_first, Placement, UpstreamError};

/// Exit status for failures of the gateway itself, as ssh uses for its own.
const GATEWAY_FAILURE_STATUS: u32 = 255;
/// Inputs queued towards the agent; beyond this the client is back-pressured.
const INPUT_QUEUE: usize = 32;
/// After the client closes, how long to wait for the process's exit report.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a channel may wait for its `shell`, `exec` or `subsystem` request.
/// Clients send it right after the channel opens; one that has not in this long
/// only holds a channel slot.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a gateway message (a notice, an error) waits for room in the
/// client's window; a client that never opens it must not keep the channel from
/// closing.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The pieces of the `start` message gathered from channel requests.
#[derive(Default)]
struct StartRequest {
    pty: Option<pb::PtyRequest>,
    env: HashMap<String, String>,
}

/// Runs one session channel; `accepted` (when the connection was accepted) is
/// given for the connection's first channel only: its start ends the student's
/// login time.
pub(crate) async fn run(channel: Channel<Msg>, ctx: Context, accepted: Option<Instant>) {
    let id = channel.id();
    let (mut read, write) = channel.split();
    let mut req = StartRequest::default();
    // The handler answered each env request by the same rule.
    let mut env_requests = EnvRequests::default();
    let mut subsystem = String::new();
    let gathered = tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
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
                    if env_requests
                        .offer(&ctx.shared.config, &variable_name, &variable_value)
                        .is_ok()
                    {
                        req.env.insert(variable_name, variable_value);
                    }
                }
                Some(ChannelMsg::RequestShell { .. }) => return Some(String::new()),
                Some(ChannelMsg::Exec { command, .. }) => {
                    return Some(String::from_utf8_lossy(&command).into_owned())
                }
                // The handler already refused anything but sftp.
                Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => {
                    subsystem = name;
                    return Some(String::new());
                }
                Some(ChannelMsg::Close) | None => return None,
                Some(_) => {}
            }
        }
    })
    .await;
    let command = match gathered {
        Ok(Some(command)) => command,
        Ok(None) => return,
        Err(_) => {
            tracing::info!(conn = ctx.conn, channel = ?id, "no shell, exec or subsystem request within {REQUEST_TIMEOUT:?}; channel closed");
            telemetry::error(Component::Proxy, "channel_request_timeout");
            let _ = write.close().await;
            return;
        }
    };
    let newline = if req.pty.is_some() { "\r\n" } else { "\n" };
    let session_span = tracing::info_span!(
        parent: &ctx.span,
        "session",
        channel = ?id,
        kind = if !subsystem.is_empty() {
            "subsystem"
        } else if command.is_empty() {
            "shell"
        } else {
            "exec"
        },
        pty = req.pty.is_some()
    );
    let fail = |message: String| {
        let write = &write;
        async move {
            let text = format!("labssh: {message}{newline}");
            let _ = tokio::time::timeout(
                CLIENT_WRITE_TIMEOUT,
                write.extended_data_bytes(1, Bytes::from(text)),
            )
            .await;
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
        subsystem,
        env: req.env,
        pty: req.pty,
    };
    let Opened {
        tx,
        mut outputs,
        started,
        placement,
    } = match open(&ctx, &requested_env, start)
        .instrument(session_span.clone())
        .await
    {
        Ok(o) => o,
        Err(error) => return fail(student_message(&error)).await,
    };
    if !placement.notice.is_empty() {
        let text = format!("labssh: {}{newline}", placement.notice);
        let _ = tokio::time::timeout(
            CLIENT_WRITE_TIMEOUT,
            write.extended_data_bytes(1, Bytes::from(text)),
        )
        .await;
    }
    let started_at = Instant::now();
    if let Some(accepted) = accepted {
        telemetry::login(started_at.duration_since(accepted));
    }
    let _forwarding = telemetry::forwarding_started("session");
    let first_byte = Mutex::new(Some(
        tracing::info_span!(parent: &session_span, "first_byte"),
    ));
    let to_container = AtomicU64::new(0);
    let to_client = AtomicU64::new(0);
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
    let counted = &to_container;
    let upstream = async move {
        while let Some(msg) = read.wait().await {
            let input = match msg {
                ChannelMsg::Data { data } => {
                    counted.fetch_add(data.len() as u64, Ordering::Relaxed);
                    telemetry::forwarded_bytes(Direction::ToContainer, data.len());
                    In::Stdin(Bytes::copy_from_slice(&data))
                }
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
    let sent = |n: usize| {
        if let Some(span) = first_byte.lock().unwrap_or_else(|e| e.into_inner()).take() {
            telemetry::setup_phase(Phase::FirstByte, started_at.elapsed());
            drop(span);
        }
        to_client.fetch_add(n as u64, Ordering::Relaxed);
        telemetry::forwarded_bytes(Direction::ToClient, n);
    };
    let downstream = async {
        while let Some(item) = outputs.next().await {
            match item {
                Ok(pb::SessionOutput { msg: Some(msg) }) => match msg {
                    Out::Stdout(b) => {
                        sent(b.len());
                        if write.data_bytes(b).await.is_err() {
                            return Ending::ClientGone;
                        }
                    }
                    Out::Stderr(b) => {
                        sent(b.len());
                        if write.extended_data_bytes(1, b).await.is_err() {
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

    let close_span = tracing::info_span!(
        parent: &session_span,
        "close",
        ending = ending.as_str(),
        exit_status = Empty,
        exit_signal = Empty,
        bytes_to_container = to_container.load(Ordering::Relaxed),
        bytes_to_client = to_client.load(Ordering::Relaxed)
    );
    match &ending {
        Ending::Exited(pb::ExitStatus {
            status: Some(pb::exit_status::Status::Code(code)),
            ..
        }) => {
            close_span.record("exit_status", code);
        }
        Ending::Exited(pb::ExitStatus {
            status: Some(pb::exit_status::Status::Signal(name)),
            ..
        }) => {
            close_span.record("exit_signal", name.as_str());
        }
        Ending::Failed(_) => telemetry::error(Component::Proxy, "session_lost"),
        _ => {}
    }
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
    drop(close_span);
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

/// How many times a session start is tried: once more after the agent could
/// not be reached, on a fresh placement (the cached one may name an agent that
/// just died). Anything else the agent says is its answer.
const START_ATTEMPTS: u32 = 2;
/// Pause before that second try: none, the fresh placement is the remedy.
const RETRY_PAUSE: Duration = Duration::ZERO;

/// After attempt number `attempt` failed with `error`: how long to wait
/// before the next one, or `None` to give up.
fn retry_after(attempt: u32, error: &UpstreamError) -> Option<Duration> {
    (error.agent_unreachable() && attempt < START_ATTEMPTS).then_some(RETRY_PAUSE)
}

/// Why a start failed, as the log and the student's line say it.
fn reason(error: &UpstreamError) -> String {
    match error {
        UpstreamError::AgentUnreachable(status) | UpstreamError::AgentLost(status) => {
            status.message().to_owned()
        }
        other => other.to_string(),
    }
}

/// The line a student reads when their session could not start.
fn student_message(error: &UpstreamError) -> String {
    match error {
        UpstreamError::AgentUnreachable(_)
        | UpstreamError::AgentLost(_)
        | UpstreamError::AgentClosed(_)
        | UpstreamError::Unexpected
        | UpstreamError::Refused { .. } => {
            format!("could not start your session: {}", reason(error))
        }
        UpstreamError::TimedOut(timeout) => format!(
            "your container did not start within {} s; please try again",
            timeout.as_secs()
        ),
        // Placement and configuration errors say it themselves.
        other => other.to_string(),
    }
}

/// Counts a failure in `errors_total` under its kind.
fn count(error: &UpstreamError) {
    if let Some(kind) = error.kind() {
        telemetry::error(Component::Proxy, kind);
    }
}

/// Places the user and starts the process, trying again as [`retry_after`]
/// says.
async fn open(
    ctx: &Context,
    requested_env: &str,
    mut start: pb::Start,
) -> Result<Opened, UpstreamError> {
    let user = &ctx.login.user;
    let upstream = &ctx.shared.upstream;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let placement = place(ctx, requested_env, attempt).await?;
        let mut agent = upstream.agent(&placement)?;
        start.environment = placement.environment.clone();
        let error = match start_once(ctx, &mut agent, &placement, &start, attempt).await {
            Ok((tx, outputs, started)) => {
                return Ok(Opened {
                    tx,
                    outputs,
                    started,
                    placement,
                })
            }
            Err(error) => error,
        };
        upstream.forget_placement(user, requested_env);
        let Some(pause) = retry_after(attempt, &error) else {
            match &error {
                UpstreamError::TimedOut(_) => {
                    tracing::warn!(conn = ctx.conn, %user, agent = %placement.agent, "session start timed out")
                }
                other => {
                    tracing::warn!(conn = ctx.conn, %user, agent = %placement.agent, "session start failed: {}", reason(other))
                }
            }
            return Err(error);
        };
        tracing::warn!(conn = ctx.conn, %user, agent = %placement.agent, "agent unreachable, placing again: {}", reason(&error));
        tokio::time::sleep(pause).await;
    }
}

/// Asks where the user's container lives, in a `place` span.
async fn place(
    ctx: &Context,
    requested_env: &str,
    attempt: u32,
) -> Result<Placement, UpstreamError> {
    let user = &ctx.login.user;
    let place_span = tracing::info_span!(
        "place",
        environment = %requested_env,
        attempt,
        cached = false,
        agent = Empty
    );
    let placing = Instant::now();
    let placement = ctx
        .shared
        .upstream
        .place(user, requested_env)
        .instrument(place_span.clone())
        .await
        .inspect_err(|e| {
            tracing::warn!(conn = ctx.conn, %user, environment = %requested_env, "placement failed: {e}");
            count(e);
        })?;
    telemetry::setup_phase(Phase::Place, placing.elapsed());
    place_span.record("agent", placement.agent.as_str());
    Ok(placement)
}

/// One try at starting the process on `placement`'s agent, in a `start` span.
async fn start_once(
    ctx: &Context,
    agent: &mut AgentClient<GrpcChannel>,
    placement: &Placement,
    start: &pb::Start,
    attempt: u32,
) -> Result<(mpsc::Sender<pb::SessionInput>, tonic::Streaming<pb::SessionOutput>, pb::Started), UpstreamError> {
    let start_span = tracing::info_span!(
        "start",
        agent = %placement.agent,
        attempt,
        container = Empty,
        container_started = Empty
    );
    let starting = Instant::now();
    let first = pb::SessionInput {
        msg: Some(In::Start(start.clone())),
    };
    let (tx, inputs) = with_first(first, INPUT_QUEUE);
    let timeout = ctx.shared.config.session_start_timeout();
    let call = agent.session(labssh_telemetry::grpc::request(inputs));
    match first_answer(timeout, call).instrument(start_span.clone()).await {
        Ok((outputs, started)) => {
            telemetry::setup_phase(Phase::Start, starting.elapsed());
            start_span.record("container", started.container.as_str());
            start_span.record("container_started", started.container_started);
            Ok((tx, outputs, started))
        }
        Err(error) => {
            count(&error);
            Err(error)
        }
    }
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
