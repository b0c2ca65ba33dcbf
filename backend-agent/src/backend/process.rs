//! A started process as every backend hands it over: its stdin, its output, a handle
//! to resize, signal and wait for it, and the way it was started.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use labssh_proto::pb;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::error::BackendError;

/// How a process is started in a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnPath {
    /// Through labssh-init's socket.
    Helper,
    /// With Docker exec.
    Exec,
}

impl SpawnPath {
    /// The name used in logs, metrics and the `labssh.spawn` label.
    pub fn name(self) -> &'static str {
        match self {
            SpawnPath::Helper => "helper",
            SpawnPath::Exec => "exec",
        }
    }
}

/// A started process: its stdin, its output and a handle to control it.
pub struct Process {
    /// The process's stdin; `shutdown()` delivers EOF, as does dropping it.
    pub stdin: Stdin,
    /// Output in the order it was produced; ends when the process closes its output
    /// (normally when it exits). With a pty everything arrives as stdout.
    pub output: BoxStream<'static, Output>,
    /// Resize, signal and wait; shareable between tasks.
    pub control: Arc<dyn ProcessControl>,
    /// How it was started: the backend says, so metrics never guess.
    pub path: SpawnPath,
}

/// A process's stdin. Writes take [`Bytes`], so a backend can pass what the proxy sent
/// on to the process without copying it (the helper writes it to its socket as is).
pub struct Stdin(Box<dyn StdinSink>);

/// Where a [`Stdin`] writes. Dropping a sink without `shutdown` must still deliver EOF.
#[async_trait]
pub trait StdinSink: Send {
    /// Writes all of `data`, waiting while the process does not read.
    async fn write(&mut self, data: Bytes) -> std::io::Result<()>;
    /// Delivers EOF.
    async fn shutdown(&mut self) -> std::io::Result<()>;
}

impl Stdin {
    /// A stdin writing to `sink`.
    pub fn new(sink: impl StdinSink + 'static) -> Stdin {
        Stdin(Box::new(sink))
    }

    /// A stdin writing to a byte stream (Docker exec's attached connection, say).
    pub fn from_writer(writer: impl AsyncWrite + Send + 'static) -> Stdin {
        Stdin::new(WriterSink(Box::pin(writer)))
    }

    /// Writes all of `data`, handing it on without a copy where the backend can.
    pub async fn send(&mut self, data: Bytes) -> std::io::Result<()> {
        self.0.write(data).await
    }

    /// Writes a copy of all of `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write(Bytes::copy_from_slice(data)).await
    }

    /// Delivers EOF.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.0.shutdown().await
    }
}

/// A [`StdinSink`] over a byte stream.
struct WriterSink(Pin<Box<dyn AsyncWrite + Send>>);

#[async_trait]
impl StdinSink for WriterSink {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.0.write_all(&data).await
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.0.shutdown().await
    }
}

/// One chunk of process output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes written to stdout (or to the terminal).
    Stdout(Bytes),
    /// Bytes written to stderr.
    Stderr(Bytes),
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal (SSH name, without "SIG").
    Signal(String),
}

impl From<ExitStatus> for pb::ExitStatus {
    fn from(status: ExitStatus) -> Self {
        let status = match status {
            ExitStatus::Code(code) => pb::exit_status::Status::Code(code),
            ExitStatus::Signal(name) => pb::exit_status::Status::Signal(name),
        };
        pb::ExitStatus {
            status: Some(status),
            core_dumped: false,
        }
    }
}

/// Controls a running process.
#[async_trait]
pub trait ProcessControl: Send + Sync {
    /// Changes the terminal size; a no-op without a pty.
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), BackendError>;
    /// Sends a signal by SSH name ("INT", "HUP", ...); does nothing once it has exited.
    async fn signal(&self, name: &str) -> Result<(), BackendError>;
    /// Waits for the process to exit. Call it after the output has ended.
    async fn wait(&self) -> Result<ExitStatus, BackendError>;
    /// Its pid in the container's pid namespace, where the runtime knows it.
    fn pid_in_container(&self) -> Option<u32> {
        None
    }
    /// It outlives the agent: labssh-init keeps it for a re-attach when this agent's
    /// connection to it breaks (it was started with a `keep`, or re-attached).
    fn kept(&self) -> bool {
        false
    }
    /// The session is over for the agent: a kept process is then hung up, not kept,
    /// when the connection closes. Nothing for one not kept.
    async fn release(&self) {}
    /// Its stdin goes through labssh-init, which counts it (a re-attach then says
    /// how much arrived); false when the agent writes the process's pipe itself.
    fn counts_input(&self) -> bool {
        false
    }
}
