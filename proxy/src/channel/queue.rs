//! A session channel's two queues from the connection task, both in the
//! client's order: requests that want an answer (pty, env, shell, exec,
//! subsystem), and everything else (data, EOF, window changes, signals).

use bytes::Bytes;
use labssh_proto::pb;
use tokio::sync::{mpsc, oneshot};

/// Inputs (data, window changes, …) queued towards one session channel;
/// beyond this the client's connection is back-pressured, as russh's own
/// channel buffer would.
const INPUT_QUEUE: usize = 32;

/// A channel request the client wants answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// `pty-req`.
    Pty(pb::PtyRequest),
    /// `env`.
    Env {
        /// The variable's name.
        name: String,
        /// Its value.
        value: String,
    },
    /// `shell`.
    Shell,
    /// `exec`, with the command.
    Exec(String),
    /// `subsystem`, with its name.
    Subsystem(String),
}

/// What else the client sends on a session channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Bytes for the process's stdin.
    Data(Bytes),
    /// The client will send no more data.
    Eof,
    /// The client's terminal changed size.
    WindowChange(pb::WindowSize),
    /// A signal for the process, by its POSIX name without "SIG".
    Signal(String),
}

/// A request with the way to answer it: true for success.
pub(crate) type Pending = (Request, oneshot::Sender<bool>);

/// The connection's end of a session channel's queues. Dropping it is the
/// client closing the channel.
pub(crate) struct Sender {
    /// Requests; one at most is waiting at a time (the handler waits for each
    /// answer).
    requests: mpsc::UnboundedSender<Pending>,
    /// Everything else, bounded by [`INPUT_QUEUE`].
    inputs: mpsc::Sender<Input>,
}

impl Sender {
    /// Hands a request to the channel; an ended channel refuses it (the
    /// dropped `reply` reads as failure).
    pub fn request(&self, request: Request, reply: oneshot::Sender<bool>) {
        let _ = self.requests.send((request, reply));
    }

    /// Hands an input to the channel, waiting for room; an ended channel
    /// drops it.
    pub async fn input(&self, input: Input) {
        let _ = self.inputs.send(input).await;
    }
}

/// The channel task's end of its queues.
pub(crate) struct Inbox {
    /// Requests, each to be answered.
    pub(crate) requests: mpsc::UnboundedReceiver<Pending>,
    /// Everything else.
    pub(crate) inputs: mpsc::Receiver<Input>,
}

/// The two ends of a new session channel's queues.
pub(crate) fn queues() -> (Sender, Inbox) {
    let (requests_tx, requests) = mpsc::unbounded_channel();
    let (inputs_tx, inputs) = mpsc::channel(INPUT_QUEUE);
    (
        Sender {
            requests: requests_tx,
            inputs: inputs_tx,
        },
        Inbox { requests, inputs },
    )
}
