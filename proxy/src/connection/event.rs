//! What the russh handler hands the connection task: one event per callback.

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelId};
use tokio::sync::oneshot;

use crate::auth::{Attempt, Outcome};
use crate::channel::{Input, Request};

/// A russh callback, as the connection task handles it.
pub(crate) enum Event {
    /// An authentication request; the reply is what to tell the client.
    Auth(Attempt, oneshot::Sender<Outcome>),
    /// A session channel was opened; accept or reject it through `reply`.
    SessionOpened {
        /// The channel.
        channel: Channel<Msg>,
        /// Its open reply.
        reply: ChannelOpenHandle,
    },
    /// A request on a session channel; the reply is success or failure.
    Request {
        /// The channel.
        channel: ChannelId,
        /// What it asks for.
        request: Request,
        /// The answer.
        reply: oneshot::Sender<bool>,
    },
    /// Data, EOF, a window change or a signal on a channel.
    Input {
        /// The channel.
        channel: ChannelId,
        /// What came.
        input: Input,
    },
    /// The client closed a channel.
    Closed(ChannelId),
    /// A `direct-tcpip` channel (`ssh -L`, `ssh -D`) was opened.
    DirectTcpip {
        /// The channel.
        channel: Channel<Msg>,
        /// Its open reply.
        reply: ChannelOpenHandle,
        /// Where to connect, as the client named it.
        host: String,
        /// The port there.
        port: u32,
        /// `address:port` the connection came from on the client's side.
        originator: String,
    },
    /// `tcpip-forward` (`ssh -R`): the reply is the port bound, or `None`.
    TcpipForward {
        /// The address to listen on, in the container.
        address: String,
        /// The port asked for; 0 lets the container choose.
        port: u32,
        /// The answer.
        reply: oneshot::Sender<Option<u32>>,
    },
    /// `cancel-tcpip-forward`: the reply says whether there was such a
    /// listener.
    CancelTcpipForward {
        /// The address the listener was asked for.
        address: String,
        /// Its port.
        port: u32,
        /// The answer.
        reply: oneshot::Sender<bool>,
    },
}
