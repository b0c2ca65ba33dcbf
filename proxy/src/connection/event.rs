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
    /// `x11-req` (`ssh -X`, `ssh -Y`) on a session channel: the reply is whether
    /// the channel's display listens in the container.
    X11Request {
        /// The channel it came on.
        channel: ChannelId,
        /// What the client asked for.
        request: X11Request,
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

/// An `x11-req`, as the client sent it.
#[derive(Debug, Clone)]
pub(crate) struct X11Request {
    /// Only one X connection is to be forwarded.
    pub single_connection: bool,
    /// The authorisation protocol, e.g. `MIT-MAGIC-COOKIE-1`.
    pub protocol: String,
    /// The (fake) cookie, in hex; the client swaps in the real one.
    pub cookie: String,
    /// The screen number.
    pub screen: u32,
}

impl X11Request {
    /// Why the request cannot be served, or `None`: OpenSSH's clients only ever
    /// send MIT-MAGIC-COOKIE-1 with a 16-byte cookie in hex, and what is passed
    /// to the container must be no more than that.
    pub fn problem(&self) -> Option<&'static str> {
        if self.protocol != "MIT-MAGIC-COOKIE-1" {
            return Some("only the MIT-MAGIC-COOKIE-1 protocol is supported");
        }
        let hex = self.cookie.len().is_multiple_of(2)
            && (2..=256).contains(&self.cookie.len())
            && self.cookie.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return Some("the cookie is not hex");
        }
        if self.screen > 1000 {
            return Some("the screen number is out of range");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(protocol: &str, cookie: &str, screen: u32) -> X11Request {
        X11Request {
            single_connection: false,
            protocol: protocol.to_owned(),
            cookie: cookie.to_owned(),
            screen,
        }
    }

    #[test]
    fn only_a_hex_mit_magic_cookie_is_taken() {
        let cookie = "0123456789abcdef0123456789ABCDEF";
        assert_eq!(request("MIT-MAGIC-COOKIE-1", cookie, 0).problem(), None);
        assert!(request("XDM-AUTHORIZATION-1", cookie, 0)
            .problem()
            .is_some());
        for bad in ["", "abc", "zz", "-- --", &"a".repeat(258)] {
            assert!(
                request("MIT-MAGIC-COOKIE-1", bad, 0).problem().is_some(),
                "{bad}"
            );
        }
        assert!(request("MIT-MAGIC-COOKIE-1", cookie, 5000)
            .problem()
            .is_some());
    }
}
