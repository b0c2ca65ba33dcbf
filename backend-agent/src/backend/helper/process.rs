//! A process the helper started, as a [`Process`]: output and exit come from a reader
//! task, stdin is written straight to the connection within the helper's credit.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
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
/// One read from the socket.
const READ_CHUNK: usize = 64 * 1024;

/// How the process ended, as far as the agent knows: `None` while it runs.
type Outcome = Option<Result<ExitStatus, BackendError>>;

/// Wraps a connection on which the helper answered STARTED. `buf` holds bytes read
/// past that answer.
pub fn start(stream: UnixStream, buf: BytesMut, pid: u32, tty: bool) -> Process {
    let (read, write) = stream.into_split();
    let write = Arc::new(Mutex::new(write));
    let credit = Arc::new(Semaphore::new(wire::STDIN_WINDOW as usize));
    let (output_tx, output_rx) = mpsc::channel(OUTPUT_BUFFER);
    let (outcome_tx, outcome_rx) = watch::channel(None);
    tokio::spawn(read_frames(
        read,
        buf,
        output_tx,
        credit.clone(),
        outcome_tx,
    ));
    let stdin = HelperStdin {
        write: write.clone(),
        credit,
        ended: false,
    };
    Process {
        stdin: Stdin::new(stdin),
        output: ReceiverStream::new(output_rx).boxed(),
        control: Arc::new(HelperProcess {
            pid,
            tty,
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
}

/// Reads the helper's frames until EXIT or the end of the connection: output to the
/// session (dropped if the session stopped listening), credit to the stdin writer.
async fn read_frames(
    mut read: OwnedReadHalf,
    mut buf: BytesMut,
    output: mpsc::Sender<Output>,
    credit: Arc<Semaphore>,
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
        match frame {
            (kind::STDOUT, data) => {
                let _ = output.send(Output::Stdout(data)).await;
            }
            (kind::STDERR, data) => {
                let _ = output.send(Output::Stderr(data)).await;
            }
            (kind::WINDOW, data) => {
                let n = wire::Reader(&data).u32().unwrap_or(0) as usize;
                credit.add_permits(n.min(Semaphore::MAX_PERMITS - credit.available_permits()));
            }
            (kind::EXIT, data) => break decode_exit(&data),
            (kind::ERROR, data) => break gone(String::from_utf8_lossy(&data).into_owned()),
            (other, _) => tracing::debug!(kind = other, "ignoring a frame from the helper"),
        }
    };
    // Output ends before the exit is known, as with Docker exec.
    drop(output);
    credit.close(); // the writer stops waiting for credit that will never come
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
        if self.ended {
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
