//! The russh `Handler`: it only translates. Each callback becomes an
//! [`Event`] for the connection's task; where russh needs an answer inside
//! the callback (an authentication result, `channel_success`, the port a
//! `tcpip-forward` bound) the event carries a oneshot and the callback waits
//! for it. russh runs these callbacks one at a time on the connection's loop,
//! so the task never waits on anything that needs that loop.

use std::borrow::Cow;

use bytes::Bytes;
use labssh_proto::pb;
use russh::server::{
    Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, Pty, Sig};
use tokio::sync::{mpsc, oneshot};

use super::event::{Event, X11Request};
use crate::auth::{Attempt, Credential, Outcome};
use crate::channel::{signal, Input, Request};
use crate::forward::{Bind, Destination};

/// Why the handler ended the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandlerError {
    /// The SSH protocol failed.
    #[error(transparent)]
    Ssh(#[from] russh::Error),
    /// The connection's task has ended, so nothing can be answered.
    #[error("the connection's task has ended")]
    TaskGone,
}

impl HandlerError {
    /// Whether the client stopped answering keepalives
    /// (`client_alive_count_max` in a row).
    pub(crate) fn is_keepalive_timeout(&self) -> bool {
        matches!(self, HandlerError::Ssh(russh::Error::KeepaliveTimeout))
    }
}

/// One SSH connection's callbacks, sent to its task.
pub(crate) struct Handler {
    /// The connection task's queue.
    events: mpsc::Sender<Event>,
}

impl Handler {
    pub(crate) fn new(events: mpsc::Sender<Event>) -> Self {
        Handler { events }
    }

    async fn send(&self, event: Event) -> Result<(), HandlerError> {
        self.events
            .send(event)
            .await
            .map_err(|_| HandlerError::TaskGone)
    }

    /// Sends the event `make` builds around a reply, and waits for the reply;
    /// `None` when the task dropped it unanswered.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Event,
    ) -> Result<Option<T>, HandlerError> {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply)).await?;
        Ok(answer.await.ok())
    }

    async fn auth(&self, user: &str, credential: Credential) -> Result<Auth, HandlerError> {
        let attempt = Attempt {
            user: user.to_owned(),
            credential,
        };
        let outcome = self.ask(|reply| Event::Auth(attempt, reply)).await?;
        Ok(outcome.map(reply).unwrap_or_else(Auth::reject))
    }

    /// Asks the channel about `request` and answers the client.
    async fn request(
        &self,
        channel: ChannelId,
        request: Request,
        session: &mut Session,
    ) -> Result<(), HandlerError> {
        let answer = self.ask(|reply| Event::Request {
            channel,
            request,
            reply,
        });
        if answer.await?.unwrap_or(false) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    /// Asks for an `ssh -R` listener: the port bound (0 for a unix socket), or
    /// `None` when it was refused.
    async fn remote_forward(&self, bind: Bind) -> Result<Option<u32>, HandlerError> {
        let bound = self
            .ask(|reply| Event::RemoteForward { bind, reply })
            .await?;
        Ok(bound.flatten())
    }

    /// Cancels an `ssh -R` listener; false when there was none.
    async fn cancel_remote_forward(&self, bind: Bind) -> Result<bool, HandlerError> {
        let cancelled = self
            .ask(|reply| Event::CancelRemoteForward { bind, reply })
            .await?;
        Ok(cancelled.unwrap_or(false))
    }

    async fn input(&self, channel: ChannelId, input: Input) -> Result<(), HandlerError> {
        self.send(Event::Input { channel, input }).await
    }
}

/// russh's reply for an authentication outcome.
fn reply(outcome: Outcome) -> Auth {
    match outcome {
        Outcome::LoggedIn(..) | Outcome::KeyAcceptable => Auth::Accept,
        Outcome::Rejected | Outcome::Unavailable => Auth::reject(),
        Outcome::AskPassword => Auth::Partial {
            name: Cow::Borrowed(""),
            instructions: Cow::Borrowed(""),
            prompts: Cow::Owned(vec![(Cow::Borrowed("Password: "), false)]),
        },
        Outcome::Explain(text) => Auth::Partial {
            name: Cow::Borrowed("labssh"),
            instructions: Cow::Owned(text),
            prompts: Cow::Borrowed(&[]),
        },
    }
}

impl russh::server::Handler for Handler {
    type Error = HandlerError;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        self.auth(user, Credential::None).await
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let password = Credential::Password(password.to_owned());
        self.auth(user, password).await
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let key = Credential::KeyOffered(offer.public_key.clone());
        self.auth(user, key).await
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let key = Credential::Key(key.public_key.clone());
        self.auth(user, key).await
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        let cert = Credential::Certificate(Box::new(certificate.clone()));
        self.auth(user, cert).await
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let answer = match response.map(|mut answers| answers.next()) {
            None => None,
            Some(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
            // No answer at all: the client acknowledging instructions shown
            // with no prompt (a refused name, the login service being
            // unavailable). That is no password, not an empty one: refused,
            // uncounted, so the client moves on instead of being asked again
            // and again.
            Some(None) => return self.auth(user, Credential::None).await,
        };
        self.auth(user, Credential::KeyboardInteractive(answer))
            .await
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(Event::SessionOpened { channel, reply }).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        width_px: u32,
        height_px: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let pty = pb::PtyRequest {
            term: term.to_owned(),
            cols,
            rows,
            width_px,
            height_px,
        };
        self.request(channel, Request::Pty(pty), session).await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = Request::Env {
            name: name.to_owned(),
            value: value.to_owned(),
        };
        self.request(channel, request, session).await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.request(channel, Request::Shell, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.request(channel, Request::Exec(command), session).await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = Request::Subsystem(name.to_owned());
        self.request(channel, request, session).await
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let data = Bytes::copy_from_slice(data);
        self.input(channel, Input::Data(data)).await
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.input(channel, Input::Eof).await
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        cols: u32,
        rows: u32,
        width_px: u32,
        height_px: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = pb::WindowSize {
            cols,
            rows,
            width_px,
            height_px,
        };
        self.input(channel, Input::WindowChange(size)).await
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.input(channel, Input::Signal(signal::name(&signal)))
            .await
    }

    /// `ssh -A`. Answered once the socket listens (or could not), so the `shell` or
    /// `exec` that follows on the loop finds `SSH_AUTH_SOCK` set. OpenSSH asks without
    /// wanting a reply, so a refusal only means no `SSH_AUTH_SOCK`.
    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let listening = self
            .ask(|reply| Event::AgentRequest { channel, reply })
            .await?;
        Ok(listening.unwrap_or(false))
    }

    /// `ssh -X` / `ssh -Y`. Answered once the display listens (or could not), so
    /// the `shell` or `exec` that follows finds DISPLAY set; OpenSSH prints
    /// "X11 forwarding request failed" on a refusal and goes on without it.
    async fn x11_request(
        &mut self,
        channel: ChannelId,
        single_connection: bool,
        x11_auth_protocol: &str,
        x11_auth_cookie: &str,
        x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = X11Request {
            single_connection,
            protocol: x11_auth_protocol.to_owned(),
            cookie: x11_auth_cookie.to_owned(),
            screen: x11_screen_number,
        };
        let listening = self
            .ask(|reply| Event::X11Request {
                channel,
                request,
                reply,
            })
            .await?;
        if listening.unwrap_or(false) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(Event::Closed(channel)).await
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(Event::Direct {
            channel,
            reply,
            destination: Destination::Tcp {
                host: host_to_connect.to_owned(),
                port: port_to_connect,
            },
            originator: format!("{originator_address}:{originator_port}"),
        })
        .await
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.send(Event::Direct {
            channel,
            reply,
            destination: Destination::Socket(socket_path.to_owned()),
            // The client's side of a streamlocal channel has no address.
            originator: "ssh client".to_owned(),
        })
        .await
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let bind = Bind::Tcp {
            address: address.to_owned(),
            port: *port,
        };
        let bound = self.remote_forward(bind).await?;
        if let Some(bound) = bound {
            *port = bound;
        }
        Ok(bound.is_some())
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let bind = Bind::Tcp {
            address: address.to_owned(),
            port,
        };
        self.cancel_remote_forward(bind).await
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let bind = Bind::Socket(socket_path.to_owned());
        Ok(self.remote_forward(bind).await?.is_some())
    }

    async fn cancel_streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.cancel_remote_forward(Bind::Socket(socket_path.to_owned()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_become_russh_replies() {
        assert_eq!(reply(Outcome::KeyAcceptable), Auth::Accept);
        assert_eq!(reply(Outcome::Rejected), Auth::reject());
        let Auth::Partial { prompts, .. } = reply(Outcome::AskPassword) else {
            panic!("a prompt");
        };
        assert_eq!(&prompts[..], &[(Cow::Borrowed("Password: "), false)]);
        let Auth::Partial {
            name, instructions, ..
        } = reply(Outcome::Explain("labssh: invalid username".into()))
        else {
            panic!("instructions");
        };
        assert_eq!(
            (&*name, &*instructions),
            ("labssh", "labssh: invalid username")
        );
    }
}
