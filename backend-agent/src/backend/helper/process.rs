//! A process the helper started, as a [`Process`]. Relayed (a terminal, or an older
//! helper): output and exit come from a reader task, stdin is written straight to the
//! connection within the helper's credit. Handed over (SPAWN_PIPES): the agent writes
//! the process's stdin pipe and reads its stdout and stderr pipes itself, and the
//! connection carries only signals one way and the exit the other.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{pipe, OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch, Mutex, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use crate::backend::{
    BackendError, ExitStatus, Output, Process, ProcessControl, SpawnPath, Stdin, StdinSink,
};
use crate::signal;
use labssh_helper_proto::wire::{self, kind};

/// Output chunks buffered between the reader task and the session; beyond this the
/// socket is not read and the helper stops reading the process.
const OUTPUT_BUFFER: usize = 8;
/// Largest stdin frame.
const STDIN_CHUNK: usize = 64 * 1024;
/// One read from the socket (or a handed-over pipe).
const READ_CHUNK: usize = 64 * 1024;
/// A pipe read this small is copied out of its buffer rather than keeping 64 KiB
/// alive for a few bytes (a keystroke's echo, a line of output).
const SMALL_READ: usize = 4 * 1024;

/// How the process ended, as far as the agent knows: `None` while it runs.
type Outcome = Option<Result<ExitStatus, BackendError>>;

/// Wraps a connection on which the helper answered STARTED (or ATTACHED). `buf`
/// holds bytes read past that answer; `kept` says the helper keeps the process when
/// the connection breaks.
pub fn start(stream: UnixStream, buf: BytesMut, pid: u32, tty: bool, kept: bool) -> Process {
    let (read, write) = stream.into_split();
    let write = Arc::new(Mutex::new(write));
    let credit = Arc::new(Semaphore::new(wire::STDIN_WINDOW as usize));
    let (output_tx, output_rx) = mpsc::channel(OUTPUT_BUFFER);
    let (outcome_tx, outcome_rx) = watch::channel(None);
    tokio::spawn(read_frames(
        read,
        buf,
        Some((output_tx, credit.clone())),
        outcome_tx,
    ));
    let stdin = HelperStdin {
        write: write.clone(),
        credit,
        ended: false,
        kept,
    };
    Process {
        stdin: Stdin::new(stdin),
        output: ReceiverStream::new(output_rx).boxed(),
        control: Arc::new(HelperProcess {
            pid,
            tty,
            kept,
            relayed: true,
            write,
            outcome: outcome_rx,
        }),
        path: SpawnPath::Helper,
    }
}

/// The process's own pipes, as the helper handed them over with STARTED.
pub struct Pipes {
    /// The write end of its stdin.
    pub stdin: pipe::Sender,
    /// The read end of its stdout.
    pub stdout: pipe::Receiver,
    /// The read end of its stderr.
    pub stderr: pipe::Receiver,
}

/// Wraps a connection on which the helper answered STARTED with the process's pipes:
/// `buf` holds bytes read past that answer (an EXIT already, perhaps). A kept
/// process's helper holds copies of the pipes, so its stdin ends with an EOF frame.
pub fn start_with_pipes(
    stream: UnixStream,
    buf: BytesMut,
    pid: u32,
    pipes: Pipes,
    kept: bool,
) -> Process {
    let (read, write) = stream.into_split();
    let write = Arc::new(Mutex::new(write));
    let (outcome_tx, outcome_rx) = watch::channel(None);
    tokio::spawn(read_frames(read, buf, None, outcome_tx));
    Process {
        stdin: Stdin::new(PipeStdin {
            pipe: Some(pipes.stdin),
            eof_frame: kept.then(|| write.clone()),
        }),
        output: PipeOutput {
            stdout: Some(pipes.stdout),
            stderr: Some(pipes.stderr),
            stderr_first: false,
        }
        .boxed(),
        control: Arc::new(HelperProcess {
            pid,
            tty: false,
            kept,
            relayed: false,
            write,
            outcome: outcome_rx,
        }),
        path: SpawnPath::Helper,
    }
}

/// Control handle of one helper-spawned process.
struct HelperProcess {
    /// Its pid inside the container, for logs.
    pid: u32,
    /// It has a terminal (resizes matter).
    tty: bool,
    /// The helper keeps it for a re-attach until RELEASE.
    kept: bool,
    /// Its bytes go through the helper (not handed over).
    relayed: bool,
    /// The connection's write half, shared with the stdin writer; frames are written
    /// whole under the lock.
    write: Arc<Mutex<OwnedWriteHalf>>,
    /// Set by the reader task when the process ended or the helper went away.
    outcome: watch::Receiver<Outcome>,
}

impl HelperProcess {
    async fn send(&self, frame_kind: u8, payload: &[u8]) -> Result<(), BackendError> {
        send_frame(&self.write, frame_kind, Bytes::copy_from_slice(payload))
            .await
            .map_err(|e| BackendError::Runtime {
                action: "talking to the helper",
                message: e.to_string(),
            })
    }

    fn ended(&self) -> bool {
        self.outcome.borrow().is_some()
    }
}

#[async_trait]
impl ProcessControl for HelperProcess {
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), BackendError> {
        if !self.tty || self.ended() {
            return Ok(());
        }
        let mut payload = cols.to_be_bytes().to_vec();
        payload.extend_from_slice(&rows.to_be_bytes());
        self.send(kind::RESIZE, &payload).await
    }

    async fn signal(&self, name: &str) -> Result<(), BackendError> {
        let number =
            signal::number(name).ok_or_else(|| BackendError::UnknownSignal(name.to_owned()))?;
        if self.ended() {
            return Ok(()); // the helper reaped it; its pid may already be someone else's
        }
        tracing::debug!(
            pid = self.pid,
            signal = name,
            "signalling through the helper"
        );
        self.send(kind::SIGNAL, &[number as u8]).await
    }

    async fn wait(&self) -> Result<ExitStatus, BackendError> {
        let mut outcome = self.outcome.clone();
        let ended = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| BackendError::Runtime {
                action: "waiting for the process",
                message: "the helper connection ended".to_owned(),
            })?;
        ended.clone().expect("waited for Some")
    }

    fn pid_in_container(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn kept(&self) -> bool {
        self.kept
    }

    fn counts_input(&self) -> bool {
        self.relayed
    }

    async fn release(&self) {
        if self.kept {
            // Gone already, the helper hangs up anyway (or the grace does).
            let _ = self.send(kind::RELEASE, &[]).await;
        }
    }
}

/// Reads the helper's frames until EXIT or the end of the connection: when relayed
/// (`relay`), output to the session (dropped if the session stopped listening) and
/// credit to the stdin writer.
async fn read_frames(
    mut read: OwnedReadHalf,
    mut buf: BytesMut,
    relay: Option<(mpsc::Sender<Output>, Arc<Semaphore>)>,
    outcome: watch::Sender<Outcome>,
) {
    let gone = |message: String| {
        Err(BackendError::Runtime {
            action: "waiting for the process",
            message,
        })
    };
    let result = loop {
        let frame = match wire::split_frame(&buf) {
            Ok(Some((k, _, used))) => {
                // Split off, not copied: the payload is handed on as it lies.
                let frame = buf.split_to(used).freeze();
                (k, frame.slice(wire::HEADER_LEN..))
            }
            Ok(None) => {
                if buf.is_empty() {
                    // Between frames: an idle session holds no buffer while it waits
                    // (what was split off lives on in the frames handed on).
                    buf = BytesMut::new();
                    if let Err(e) = read.readable().await {
                        break gone(format!("reading from the helper: {e}"));
                    }
                }
                buf.reserve(READ_CHUNK);
                match read.read_buf(&mut buf).await {
                    Ok(0) => {
                        break gone("the helper went away (was the container stopped?)".into())
                    }
                    Ok(_) => continue,
                    Err(e) => break gone(format!("reading from the helper: {e}")),
                }
            }
            Err(e) => break gone(format!("bad frame from the helper: {e}")),
        };
        match (frame, &relay) {
            ((kind::STDOUT, data), Some((output, _))) => {
                let _ = output.send(Output::Stdout(data)).await;
            }
            ((kind::STDERR, data), Some((output, _))) => {
                let _ = output.send(Output::Stderr(data)).await;
            }
            ((kind::WINDOW, data), Some((_, credit))) => {
                let n = wire::Reader(&data).u32().unwrap_or(0) as usize;
                credit.add_permits(n.min(Semaphore::MAX_PERMITS - credit.available_permits()));
            }
            ((kind::EXIT, data), _) => break decode_exit(&data),
            ((kind::ERROR, data), _) => break gone(String::from_utf8_lossy(&data).into_owned()),
            ((other, _), _) => tracing::debug!(kind = other, "ignoring a frame from the helper"),
        }
    };
    if let Some((output, credit)) = relay {
        // Output ends before the exit is known, as with Docker exec.
        drop(output);
        credit.close(); // the writer stops waiting for credit that will never come
    }
    let _ = outcome.send(Some(result));
}

fn decode_exit(payload: &[u8]) -> Result<ExitStatus, BackendError> {
    let exit = wire::Exit::decode(payload).map_err(|message| BackendError::Runtime {
        action: "reading the exit status",
        message,
    })?;
    Ok(match exit {
        wire::Exit::Code(code) => ExitStatus::Code(code),
        // Signals SSH has no name for are reported as a shell would.
        wire::Exit::Signal { signo, .. } => match signal::name(signo) {
            Some(name) => ExitStatus::Signal(name.to_owned()),
            None => ExitStatus::Code(128 + signo),
        },
    })
}

/// The process's stdin: what the session writes goes out as STDIN frames within the
/// credit the helper granted, the payload handed to the socket as it came (header and
/// payload in one vectored write, no copy). Shutdown, or drop, sends EOF.
struct HelperStdin {
    /// The connection's write half, shared with the control calls.
    write: Arc<Mutex<OwnedWriteHalf>>,
    /// Stdin bytes the helper will take.
    credit: Arc<Semaphore>,
    /// EOF was sent.
    ended: bool,
    /// The helper keeps the process for the next agent: dropping this (the agent
    /// shutting down) is no EOF.
    kept: bool,
}

#[async_trait]
impl StdinSink for HelperStdin {
    async fn write(&mut self, mut data: Bytes) -> io::Result<()> {
        if self.ended {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stdin was closed",
            ));
        }
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(STDIN_CHUNK));
            match self.credit.acquire_many(piece.len() as u32).await {
                Ok(permit) => permit.forget(),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the process ended",
                    ))
                }
            }
            send_frame(&self.write, kind::STDIN, piece).await?;
        }
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        if std::mem::replace(&mut self.ended, true) {
            return Ok(());
        }
        send_frame(&self.write, kind::EOF, Bytes::new()).await
    }
}

/// Writes one frame, header and payload in one vectored write, on a task of its own:
/// a caller that goes away mid-frame (a session ending) cannot leave half a frame on
/// the connection to garble the frames after it (the hang-up signal, say).
async fn send_frame(
    write: &Arc<Mutex<OwnedWriteHalf>>,
    frame_kind: u8,
    payload: Bytes,
) -> io::Result<()> {
    let write = write.clone();
    let header = Bytes::copy_from_slice(&wire::frame_header(frame_kind, payload.len()));
    tokio::spawn(async move {
        let mut frame = Buf::chain(header, payload);
        write.lock().await.write_all_buf(&mut frame).await
    })
    .await
    .unwrap_or_else(|e| Err(io::Error::other(e)))
}

impl Drop for HelperStdin {
    fn drop(&mut self) {
        if self.ended || self.kept {
            return;
        }
        // EOF on drop, as a pipe's writer closing; the write half may be busy.
        let write = self.write.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let frame = wire::frame_header(kind::EOF, 0);
                let _ = write.lock().await.write_all(&frame).await;
            });
        }
    }
}

/// A handed-over process's stdin: what the session writes goes to the pipe; shutdown
/// (or drop) closes the agent's end, the only one left, which is the process's EOF.
/// For a kept process the helper holds a second write end: an EOF frame closes it on
/// shutdown; a drop (the agent shutting down) leaves it, for the next agent.
struct PipeStdin {
    pipe: Option<pipe::Sender>,
    /// A kept process's connection, for the EOF frame.
    eof_frame: Option<Arc<Mutex<OwnedWriteHalf>>>,
}

#[async_trait]
impl StdinSink for PipeStdin {
    async fn write(&mut self, data: Bytes) -> io::Result<()> {
        match &mut self.pipe {
            Some(pipe) => pipe.write_all(&data).await,
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stdin was closed",
            )),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.pipe = None;
        match self.eof_frame.take() {
            Some(write) => send_frame(&write, kind::EOF, Bytes::new()).await,
            None => Ok(()),
        }
    }
}

/// A handed-over process's stdout and stderr, read as they become readable until both
/// end. A read buffer is taken only when a pipe has bytes; a full read is handed on as
/// it lies, a small one copied out so the buffer goes: a quiet session holds none.
struct PipeOutput {
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    /// Which pipe is looked at first next time, so a chatty one cannot starve the
    /// other.
    stderr_first: bool,
}

impl futures::Stream for PipeOutput {
    type Item = Output;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Output>> {
        let this = &mut *self;
        this.stderr_first = !this.stderr_first;
        for is_err in [this.stderr_first, !this.stderr_first] {
            let slot = if is_err {
                &mut this.stderr
            } else {
                &mut this.stdout
            };
            if let Some(data) = poll_pipe(slot, cx) {
                return Poll::Ready(Some(if is_err {
                    Output::Stderr(data)
                } else {
                    Output::Stdout(data)
                }));
            }
        }
        if this.stdout.is_none() && this.stderr.is_none() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

/// Bytes read from the pipe in `slot` if it has some now; at its end (or an error)
/// the slot is emptied. `None` also registers for the pipe's next readiness.
fn poll_pipe(slot: &mut Option<pipe::Receiver>, cx: &mut Context<'_>) -> Option<Bytes> {
    loop {
        let pipe = slot.as_mut()?;
        match pipe.poll_read_ready(cx) {
            Poll::Pending => return None,
            Poll::Ready(Err(_)) => {
                *slot = None;
                return None;
            }
            Poll::Ready(Ok(())) => {}
        }
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        match pipe.try_read_buf(&mut buf) {
            Ok(0) => {
                *slot = None;
                return None;
            }
            Ok(n) if n < SMALL_READ => return Some(Bytes::copy_from_slice(&buf)),
            Ok(_) => return Some(buf.freeze()),
            // Readiness was stale: poll again, which registers the waker.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                *slot = None;
                return None;
            }
        }
    }
}
