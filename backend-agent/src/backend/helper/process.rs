//! A process the helper started, as a [`Process`]: output and exit come from a reader
//! task, stdin goes through a writer task that respects the helper's credit.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch, Mutex, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use super::wire::{self, kind};
use crate::backend::{BackendError, ExitStatus, Output, Process, ProcessControl};
use crate::signal;

/// Output chunks buffered between the reader task and the session; beyond this the
/// socket is not read and the helper stops reading the process.
const OUTPUT_BUFFER: usize = 8;
/// Stdin bytes buffered between the session and the writer task.
const STDIN_PIPE: usize = 64 * 1024;
/// Largest stdin frame.
const STDIN_CHUNK: usize = 16 * 1024;
/// One read from the socket.
const READ_CHUNK: usize = 32 * 1024;

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
    let (stdin, stdin_rx) = tokio::io::duplex(STDIN_PIPE);
    tokio::spawn(write_stdin(stdin_rx, write.clone(), credit));
    Process {
        stdin: Box::pin(stdin),
        output: ReceiverStream::new(output_rx).boxed(),
        control: Arc::new(HelperProcess {
            pid,
            tty,
            write,
            outcome: outcome_rx,
        }),
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
        let mut frame = Vec::with_capacity(payload.len() + wire::HEADER_LEN);
        wire::put_frame(&mut frame, frame_kind, payload);
        self.write
            .lock()
            .await
            .write_all(&frame)
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
            Ok(Some((k, payload, used))) => {
                let frame = (k, Bytes::copy_from_slice(payload));
                buf.advance(used);
                frame
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

/// Sends what the session writes to stdin as STDIN frames within the granted credit;
/// its end (shutdown or drop) becomes EOF.
async fn write_stdin(
    mut stdin: DuplexStream,
    write: Arc<Mutex<OwnedWriteHalf>>,
    credit: Arc<Semaphore>,
) {
    let mut chunk = vec![0u8; STDIN_CHUNK];
    let mut frame = Vec::with_capacity(STDIN_CHUNK + wire::HEADER_LEN);
    loop {
        let n = match stdin.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match credit.acquire_many(n as u32).await {
            Ok(permit) => permit.forget(),
            Err(_) => return, // the process ended
        }
        frame.clear();
        wire::put_frame(&mut frame, kind::STDIN, &chunk[..n]);
        if write.lock().await.write_all(&frame).await.is_err() {
            return;
        }
    }
    frame.clear();
    wire::put_frame(&mut frame, kind::EOF, &[]);
    let _ = write.lock().await.write_all(&frame).await;
}
