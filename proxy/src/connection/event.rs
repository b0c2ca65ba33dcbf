//! What the russh handler hands the connection task: one event per callback.

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelId};
use tokio::sync::oneshot;

use crate::auth::{Attempt, Outcome};
use crate::channel::{Input, Request};
use crate::forward::{Bind, Destination};

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
    /// A `direct-tcpip` channel (`ssh -L`, `ssh -D`) or a
    /// `direct-streamlocal@openssh.com` one (`ssh -L PORT:/PATH`) was opened.
    Direct {
        /// The channel.
        channel: Channel<Msg>,
        /// Its open reply.
        reply: ChannelOpenHandle,
        /// Where to connect, as the client named it.
        destination: Destination,
        /// Where the connection came from on the client's side, for logs.
        originator: String,
    },
    /// `tcpip-forward` or `streamlocal-forward@openssh.com` (`ssh -R`): the reply
    /// is the port bound (0 for a unix socket), or `None`.
    RemoteForward {
        /// What to listen on, in the container.
        bind: Bind,
        /// The answer.
        reply: oneshot::Sender<Option<u32>>,
    },
    /// `auth-agent-req@openssh.com` (`ssh -A`) on a session channel: the reply is
    /// whether the connection's agent socket listens.
    AgentRequest {
        /// The channel it came on, for logs.
        channel: ChannelId,
        /// The answer.
        reply: oneshot::Sender<bool>,
    },
    /// `cancel-tcpip-forward` or `cancel-streamlocal-forward@openssh.com`: the
    /// reply says whether there was such a listener.
    CancelRemoteForward {
        /// What the listener was asked for.
        bind: Bind,
        /// The answer.
        reply: oneshot::Sender<bool>,
    },
}
