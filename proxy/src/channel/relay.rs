//! The `Relaying` phase: bytes both ways until the process ends or either
//! side goes away.
//!
//! Client → agent and agent → client run side by side, so a process that is
//! blocked writing output can never stall delivery of its input, and vice
//! versa. Towards the client, output is written only within its SSH window.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component, Direction, Phase};
use pb::session_input::Msg as In;
use pb::session_output::Msg as Out;
use tokio::sync::mpsc;

use super::close::{Closing, Ended, Ending};
use super::queue::Input;
use super::resume::{reconnect, Resumable, SentInput};
use super::session::Session;
use super::start::Started;
use crate::live::Tap;
use crate::recording::{Meta, Mode, Recording};
use crate::upstream::Placement;

/// After the client closes, how long to wait for the process's exit report.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The agent's message for one input from the client.
fn to_agent(input: Input) -> In {
    match input {
        Input::Data(data) => In::Stdin(data),
        Input::Eof => In::Eof(pb::Eof {}),
        Input::WindowChange(size) => In::Resize(size),
        Input::Signal(name) => In::Signal(name),
    }
}

/// Runs the phase until the session ends; `accepted` ends the student's login
/// time for the connection's first channel.
pub(crate) async fn run(
    session: &Session,
    started: Started,
    inputs: &mut mpsc::Receiver<Input>,
    accepted: Option<Instant>,
) -> Closing {
    let started_at = Instant::now();
    if let Some(accepted) = accepted {
        telemetry::login(started_at.duration_since(accepted));
    }
    let active = telemetry::forwarding_started("session");
    let (placement, span) = (started.placement, started.span);
    let first_byte = tracing::info_span!(parent: &span, "first_byte");
    tracing::info!(
        conn = session.ctx.conn,
        user = %session.ctx.login.user,
        environment = %placement.environment,
        agent = %placement.agent,
        container = %started.started.container,
        container_started = started.started.container_started,
        "session started"
    );
    let ctx = &session.ctx;
    let listed = ctx.shared.live.session(
        ctx.conn,
        session.id,
        pb::SessionInfo {
            user: ctx.login.user.clone(),
            environment: placement.environment.clone(),
            client: ctx.peer.clone(),
            agent: placement.agent.clone(),
            kind: started.kind.to_owned(),
            started_unix_ms: chrono::Utc::now().timestamp_millis(),
            container: started.started.container.clone(),
            ..Default::default()
        },
        started.pty.as_ref(),
    );
    ctx.shared.audit.record(
        "session_start",
        serde_json::json!({
            "conn": ctx.conn,
            "channel": u32::from(session.id),
            "client": ctx.peer,
            "user": ctx.login.user,
            "environment": placement.environment,
            "agent": placement.agent,
            "container": started.started.container,
            "kind": started.kind,
        }),
    );
    let to_client = Counter {
        tap: listed.tap(),
        first_byte: Mutex::new(Some((first_byte, started_at))),
    };
    let recording = record(session, &placement, started.pty.as_ref()).map(Mutex::new);
    // SFTP's changes to files, for the audit log.
    let tap = (started.kind == "subsystem" && ctx.shared.audit.enabled()).then(|| {
        (
            crate::audit::sftp::Tap::default(),
            placement.environment.clone(),
        )
    });
    let (tx, outputs) = (started.tx, started.outputs);
    let ending = splice(
        session,
        &placement,
        started.resumable.as_ref(),
        started.newline,
        inputs,
        tx,
        outputs,
        &to_client,
        recording.as_ref(),
        tap,
    )
    .await;
    drop(recording);
    Closing::Ended(Box::new(Ended {
        ending,
        span,
        placement,
        newline: started.newline,
        kind: started.kind,
        started_at,
        to_container: listed.tap().to_container(),
        to_client: listed.tap().to_client(),
        _active: active,
    }))
}

/// The session's recording, when its environment asks for one and it has a
/// terminal (commands without one are not screens to replay).
fn record(
    session: &Session,
    placement: &Placement,
    pty: Option<&pb::PtyRequest>,
) -> Option<Recording> {
    let mode = Mode::parse(&placement.record)?;
    let pty = pty?;
    let ctx = &session.ctx;
    let recorder = &ctx.shared.recorder;
    if !recorder.enabled() {
        telemetry::error(Component::Proxy, "recording_unconfigured");
        tracing::error!(conn = ctx.conn, environment = %placement.environment, "environment {} asks for session recording, but this proxy has no [recording] dir: not recorded", placement.environment);
        return None;
    }
    let meta = Meta {
        user: &ctx.login.user,
        environment: &placement.environment,
        conn: ctx.conn,
        channel: u32::from(session.id),
        cols: pty.cols,
        rows: pty.rows,
        term: &pty.term,
    };
    let recording = recorder.start(mode, meta)?;
    tracing::info!(conn = ctx.conn, path = %recording.path().display(), "recording the session");
    Some(recording)
}

/// Bytes both ways (and, for watchers, the output), and the `first_byte` span
/// until the first output.
struct Counter<'a> {
    tap: &'a Tap,
    /// The open `first_byte` span and when the process started.
    first_byte: Mutex<Option<(tracing::Span, Instant)>>,
}

impl Counter<'_> {
    fn sent(&self, data: &bytes::Bytes) {
        let first = self
            .first_byte
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((span, started_at)) = first {
            telemetry::setup_phase(Phase::FirstByte, started_at.elapsed());
            drop(span);
        }
        self.tap.output(data);
        telemetry::forwarded_bytes(Direction::ToClient, data.len());
    }
}

/// What the student reads when the agent's stream breaks, or ends without the
/// process's exit: the node by name (as when it is down at login), nothing internal.
fn lost_node(agent: &str) -> String {
    format!(
        "lost the connection to node '{agent}', where your container runs; this session has ended"
    )
}

/// How one stream to the agent ended.
enum Leg {
    /// The session ended: report it.
    Ended(Ending),
    /// The stream broke (or ended without the process's exit): a kept session is
    /// resumed on a new one.
    Broken,
}

/// The client → agent half of one leg: the reason it stopped.
enum Upstream {
    /// The client's side of the channel is gone.
    ClientDone,
    /// The agent's stream no longer takes input.
    AgentGone,
}

/// Both directions, until the agent's stream ends, or the client's side ends
/// and the exit report has had [`CLOSE_GRACE`] to arrive. When the stream breaks
/// and the session is kept, it is resumed on a new stream to the same agent, and
/// relaying goes on.
#[allow(clippy::too_many_arguments)]
async fn splice(
    session: &Session,
    placement: &Placement,
    resumable: Option<&Resumable>,
    newline: &str,
    inputs: &mut mpsc::Receiver<Input>,
    mut tx: mpsc::Sender<pb::SessionInput>,
    mut outputs: tonic::Streaming<pb::SessionOutput>,
    counter: &Counter<'_>,
    recording: Option<&Mutex<Recording>>,
    mut tap: Option<(crate::audit::sftp::Tap, String)>,
) -> Ending {
    let ctx = &session.ctx;
    let agent = placement.agent.as_str();
    let mut sent = SentInput::new(resumable.is_some_and(|r| r.input_counted));
    let mut received = 0u64;
    loop {
        let leg = relay_leg(
            session,
            agent,
            inputs,
            tx,
            &mut outputs,
            counter,
            recording,
            &mut tap,
            &mut sent,
            &mut received,
        );
        let client_done = match leg.await {
            (Leg::Ended(ending), _) => return ending,
            (Leg::Broken, client_done) => client_done,
        };
        let Some(resumable) = resumable.filter(|_| !client_done) else {
            return match client_done {
                true => Ending::ClientGone,
                false => Ending::Failed(lost_node(agent)),
            };
        };
        let broke = Instant::now();
        session
            .tell("reconnecting to your container…", newline)
            .await;
        let (new_tx, new_outputs, resumed) =
            match reconnect(ctx, placement, resumable, received, broke).await {
                Ok(reattached) => reattached,
                Err(message) => return Ending::Failed(message),
            };
        telemetry::setup_phase(Phase::Resume, broke.elapsed());
        if resumed.lost_bytes > 0 {
            let lost = format!(
                "{} bytes of output were lost while your session was reconnecting",
                resumed.lost_bytes
            );
            session.tell(&lost, newline).await;
        }
        let (again, gone) = sent.replay(resumed.input_counted.then_some(resumed.input_offset));
        if gone > 0 {
            tracing::warn!(conn = ctx.conn, gone, "input lost across the re-attach");
        }
        for msg in again {
            let _ = new_tx.send(pb::SessionInput { msg: Some(msg) }).await;
        }
        (tx, outputs) = (new_tx, new_outputs);
    }
}

/// One stream's worth of [`splice`]: both directions until that stream ends or
/// breaks; true with it when the client's side is gone.
#[allow(clippy::too_many_arguments)]
async fn relay_leg(
    session: &Session,
    agent: &str,
    inputs: &mut mpsc::Receiver<Input>,
    tx: mpsc::Sender<pb::SessionInput>,
    outputs: &mut tonic::Streaming<pb::SessionOutput>,
    counter: &Counter<'_>,
    recording: Option<&Mutex<Recording>>,
    tap: &mut Option<(crate::audit::sftp::Tap, String)>,
    sent: &mut SentInput,
    received: &mut u64,
) -> (Leg, bool) {
    let ctx = &session.ctx;
    let recorded = |f: &dyn Fn(&mut Recording)| {
        // Sessions not recorded take no lock per chunk.
        if let Some(r) = recording {
            f(&mut r.lock().unwrap_or_else(|e| e.into_inner()));
        }
    };
    // Client → agent. Room is taken before an input is, so a leg that ends while
    // this waits loses nothing: the input stays queued for the next.
    let upstream = async move {
        loop {
            let Ok(permit) = tx.reserve().await else {
                return Upstream::AgentGone;
            };
            let Some(input) = inputs.recv().await else {
                // Dropping `tx` ends the agent's input stream: it hangs up the
                // process.
                return Upstream::ClientDone;
            };
            match &input {
                Input::Data(data) => {
                    counter.tap.input(data.len());
                    telemetry::forwarded_bytes(Direction::ToContainer, data.len());
                    recorded(&|r| r.input(data));
                    if let Some((tap, environment)) = tap {
                        for change in tap.feed(data) {
                            ctx.shared.audit.record(
                                "sftp",
                                serde_json::json!({
                                    "conn": ctx.conn,
                                    "client": ctx.peer,
                                    "user": ctx.login.user,
                                    "environment": environment,
                                    "op": change.op,
                                    "path": change.path,
                                    "to": change.to,
                                }),
                            );
                        }
                    }
                }
                Input::WindowChange(size) => {
                    counter.tap.resize(size);
                    recorded(&|r| r.resize(size.cols, size.rows));
                }
                _ => {}
            }
            sent.record(&input);
            permit.send(pb::SessionInput {
                msg: Some(to_agent(input)),
            });
        }
    };
    // Agent → client, honouring the client's SSH window.
    let write = &session.write;
    let downstream = async {
        while let Some(item) = outputs.next().await {
            let msg = match item {
                Ok(pb::SessionOutput { msg: Some(msg) }) => msg,
                Ok(pb::SessionOutput { msg: None }) => continue,
                Err(status) => {
                    // What broke is the operator's to read (an HTTP/2 or TLS error
                    // says nothing to a student).
                    tracing::warn!(
                        conn = ctx.conn,
                        agent,
                        code = ?status.code(),
                        "the agent's stream broke: {}",
                        status.message()
                    );
                    return Leg::Broken;
                }
            };
            let written = match msg {
                Out::Stdout(b) => {
                    *received += b.len() as u64;
                    counter.sent(&b);
                    recorded(&|r| r.output(&b));
                    write.data_bytes(b).await
                }
                Out::Stderr(b) => {
                    *received += b.len() as u64;
                    counter.sent(&b);
                    recorded(&|r| r.output(&b));
                    write.extended_data_bytes(1, b).await
                }
                Out::Exit(status) => return Leg::Ended(Ending::Exited(status)),
                Out::Error(e) => return Leg::Ended(Ending::Failed(e.message)),
                // Progress comes before Started only; a late one is not the output's.
                Out::Started(_) | Out::Progress(_) | Out::Resumed(_) => Ok(()),
            };
            if written.is_err() {
                return Leg::Ended(Ending::ClientGone);
            }
        }
        tracing::warn!(
            conn = ctx.conn,
            agent,
            "the agent's stream ended without an exit"
        );
        Leg::Broken
    };
    tokio::pin!(upstream);
    tokio::pin!(downstream);
    tokio::select! {
        leg = &mut downstream => (leg, false),
        why = &mut upstream => {
            let client_done = matches!(why, Upstream::ClientDone);
            let leg = tokio::time::timeout(CLOSE_GRACE, &mut downstream).await;
            match (leg, client_done) {
                (Ok(leg), _) => (leg, client_done),
                (Err(_), true) => (Leg::Ended(Ending::ClientGone), true),
                // The agent took no more input and said nothing: as broken.
                (Err(_), false) => (Leg::Broken, false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn inputs_go_to_the_agent_as_they_came() {
        assert_eq!(
            to_agent(Input::Data(Bytes::from_static(b"ls\n"))),
            In::Stdin(Bytes::from_static(b"ls\n"))
        );
        assert_eq!(to_agent(Input::Eof), In::Eof(pb::Eof {}));
        let size = pb::WindowSize {
            cols: 120,
            rows: 40,
            width_px: 0,
            height_px: 0,
        };
        assert_eq!(to_agent(Input::WindowChange(size)), In::Resize(size));
        assert_eq!(
            to_agent(Input::Signal("INT".into())),
            In::Signal("INT".into())
        );
    }
}
