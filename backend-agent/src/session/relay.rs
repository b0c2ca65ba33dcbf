//! Moving bytes between a Session stream and a running process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use labssh_proto::pb;
use pb::session_input::Msg as In;
use pb::session_output::Msg as Out;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::backend::{Output, Process, ProcessControl, Stdin};
use crate::lifecycle::activity::Ending;
use crate::limits::cgroup::LimitWatch;

/// Sends session output to the proxy; bounded, so a slow proxy slows the process down.
pub type OutputSender = crate::stream::Sender<pb::SessionOutput>;

/// Stdin chunks queued for the process; beyond this the proxy's stream is not read.
const STDIN_BUFFER: usize = 16;
/// Time a process gets to exit after HUP before it is killed.
const HANGUP_GRACE: Duration = Duration::from_secs(2);

enum StdinOp {
    Data(Bytes),
    Eof,
}

/// Why relaying stopped.
enum Ended {
    /// The process closed its output; report its exit.
    OutputClosed,
    /// The proxy went away (stream error, response dropped).
    ProxyGone,
    /// The agent is shutting down.
    Shutdown,
    /// An operator or the student acted on the container: tell the student why.
    Action(String),
}

/// What tells the student, as the session's process ends, which of the container's
/// limits ended it.
pub struct LimitNotes {
    /// The container's counters as the session started.
    pub watch: LimitWatch,
    /// How a line ends on the student's terminal: `\r\n` with a pty.
    pub newline: &'static str,
}

/// Relays until the process ends (then sends its exit status, after a stderr line
/// naming the limit that ended it, if one did) or the proxy or agent goes away (then
/// hangs the process up).
pub async fn relay<S>(
    process: Process,
    inbound: S,
    tx: OutputSender,
    shutdown: &CancellationToken,
    ending: &Ending,
    limits: Option<LimitNotes>,
) where
    S: Stream<Item = Result<pb::SessionInput, Status>> + Send + Unpin + 'static,
{
    let Process {
        stdin,
        mut output,
        control,
        ..
    } = process;
    let gone = CancellationToken::new();
    let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_BUFFER);
    let _writer = AbortOnDrop(tokio::spawn(write_stdin(stdin, stdin_rx)));
    let _reader = AbortOnDrop(tokio::spawn(read_input(
        inbound,
        stdin_tx,
        control.clone(),
        gone.clone(),
    )));

    let ended = loop {
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => break Ended::Shutdown,
            why = ending.ended() => break Ended::Action(why.to_owned()),
            _ = gone.cancelled() => break Ended::ProxyGone,
            _ = tx.closed() => break Ended::ProxyGone,
            chunk = output.next() => chunk,
        };
        let msg = match chunk {
            Some(Output::Stdout(b)) => Out::Stdout(b),
            Some(Output::Stderr(b)) => Out::Stderr(b),
            None => break Ended::OutputClosed,
        };
        let sent = tokio::select! {
            _ = shutdown.cancelled() => break Ended::Shutdown,
            why = ending.ended() => break Ended::Action(why.to_owned()),
            _ = gone.cancelled() => break Ended::ProxyGone,
            sent = tx.send(Ok(pb::SessionOutput { msg: Some(msg) })) => sent,
        };
        if sent.is_err() {
            break Ended::ProxyGone;
        }
    };
    drop(output);

    if let Ended::OutputClosed = ended {
        if report_exit(&control, &tx, shutdown, &gone, limits.as_ref()).await {
            control.release().await;
            return;
        }
    }
    let shutting_down = matches!(ended, Ended::Shutdown) || shutdown.is_cancelled();
    if shutting_down && control.kept() {
        // labssh-init keeps the process for the agent that comes next; the proxy,
        // its stream ended, asks that one to re-attach it.
        tracing::debug!("agent shutting down: leaving the session to labssh-init");
        return;
    }
    let reason = match &ended {
        Ended::Shutdown => "shutdown",
        Ended::Action(_) => "container action",
        _ => "proxy gone",
    };
    tracing::debug!(reason, "hanging up session");
    if let Ended::Action(why) = ended {
        let line = Out::Error(pb::SessionError { message: why });
        let _ = tx.send(Ok(pb::SessionOutput { msg: Some(line) })).await;
    }
    drop(tx); // end the stream now; the clean-up below may take a moment
    hang_up(control).await;
}

/// Waits for the process's exit and tells the proxy how it ended; false when the
/// proxy or the agent went away first (the process is then hung up).
async fn report_exit(
    control: &Arc<dyn ProcessControl>,
    tx: &OutputSender,
    shutdown: &CancellationToken,
    gone: &CancellationToken,
    limits: Option<&LimitNotes>,
) -> bool {
    let status = tokio::select! {
        _ = shutdown.cancelled() => return false,
        _ = gone.cancelled() => return false,
        _ = tx.closed() => return false,
        status = control.wait() => status,
    };
    let note = match (&status, limits) {
        (Ok(status), Some(limits)) => limits
            .watch
            .at_exit(status)
            .map(|note| format!("labssh: {note}{}", limits.newline)),
        _ => None,
    };
    if let Some(note) = note {
        tracing::info!("session ended at a limit: {}", note.trim_end());
        let line = Out::Stderr(Bytes::from(note));
        let _ = tx.send(Ok(pb::SessionOutput { msg: Some(line) })).await;
    }
    let msg = match status {
        Ok(status) => Out::Exit(status.into()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read exit status");
            Out::Error(pb::SessionError {
                message: e.to_string(),
            })
        }
    };
    let _ = tx.send(Ok(pb::SessionOutput { msg: Some(msg) })).await;
    true
}

/// Sends HUP, and KILL if the process outlives the grace period; a kept process is
/// released first, so nothing keeps it once this agent lets go.
pub async fn hang_up(control: Arc<dyn ProcessControl>) {
    control.release().await;
    if let Err(e) = control.signal("HUP").await {
        tracing::debug!(error = %e, "cannot send HUP");
    }
    if tokio::time::timeout(HANGUP_GRACE, control.wait())
        .await
        .is_err()
    {
        if let Err(e) = control.signal("KILL").await {
            tracing::warn!(error = %e, "cannot kill hung-up process");
        }
    }
}

/// Reads the proxy's messages: stdin to the writer, resize and signal to the process.
/// Cancels `gone` when the stream fails; a clean end counts as EOF on stdin.
async fn read_input<S>(
    mut inbound: S,
    stdin: mpsc::Sender<StdinOp>,
    control: Arc<dyn ProcessControl>,
    gone: CancellationToken,
) where
    S: Stream<Item = Result<pb::SessionInput, Status>> + Unpin,
{
    loop {
        let msg = match inbound.next().await {
            Some(Ok(input)) => input.msg,
            Some(Err(status)) => {
                tracing::debug!(%status, "session input failed");
                gone.cancel();
                return;
            }
            None => {
                let _ = stdin.send(StdinOp::Eof).await;
                return;
            }
        };
        match msg {
            // A writer that stopped (process closed stdin) makes sends fail; the data is
            // dropped, as a pipe's reader would never see it either.
            Some(In::Stdin(data)) => {
                let _ = stdin.send(StdinOp::Data(data)).await;
            }
            Some(In::Eof(_)) => {
                let _ = stdin.send(StdinOp::Eof).await;
            }
            Some(In::Resize(size)) if size.cols > 0 && size.rows > 0 => {
                if let Err(e) = control.resize(clamp(size.cols), clamp(size.rows)).await {
                    tracing::debug!(error = %e, "resize failed");
                }
            }
            Some(In::Signal(name)) => {
                if let Err(e) = control.signal(&name).await {
                    tracing::debug!(error = %e, "signal failed");
                }
            }
            Some(In::Start(_) | In::Resume(_)) => tracing::debug!("ignoring a second start"),
            Some(In::Resize(_)) | None => {}
        }
    }
}

/// Writes stdin in order; EOF (or the channel closing) half-closes it.
async fn write_stdin(mut stdin: Stdin, mut ops: mpsc::Receiver<StdinOp>) {
    while let Some(op) = ops.recv().await {
        match op {
            StdinOp::Data(data) => {
                if stdin.send(data).await.is_err() {
                    return;
                }
            }
            StdinOp::Eof => break,
        }
    }
    let _ = stdin.shutdown().await;
}

/// Aborts a helper task when the session ends by any path.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Terminal sizes arrive as u32; anything beyond u16 is nonsense anyway.
pub fn clamp(v: u32) -> u16 {
    v.min(u16::MAX as u32) as u16
}
