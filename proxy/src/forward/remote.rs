//! `ssh -R`: listeners in the container (`tcpip-forward`, and
//! `streamlocal-forward@openssh.com` for unix sockets), and each connection they
//! accept announced to the client as a `forwarded-tcpip` (or
//! `forwarded-streamlocal@openssh.com`) channel; and the connection's agent socket
//! (`auth-agent-req@openssh.com`, `ssh -A`), whose connections become
//! `auth-agent@openssh.com` channels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component};
use pb::agent_client::AgentClient;
use pb::forward_input::Msg as In;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel as GrpcChannel;

use super::open::{open_failure, open_stream, placed_agent};
use super::splice::splice;
use crate::state::Context;
use crate::upstream::{first_answer, UpstreamError};

/// How long an `ssh -R` listener may take to come up (it may create the container).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the client may take to confirm a `forwarded-tcpip` channel. OpenSSH
/// answers at once (it only connects locally first); one that has not answered in
/// this long is not going to, and the connection accepted in the container would
/// hold an agent stream and socket for ever.
const CLIENT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a listener whose agent stream broke (the agent restarted) is asked for
/// again: the agent's default `reattach_grace`, as long as sessions wait for it.
const RELISTEN_FOR: Duration = Duration::from_secs(60);
/// First pause between those attempts; doubles up to [`RELISTEN_MAX_PAUSE`].
const RELISTEN_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between them.
const RELISTEN_MAX_PAUSE: Duration = Duration::from_millis(500);

/// What an `ssh -R` listens on, as the client names it (and cancels it by).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Bind {
    /// `tcpip-forward`: an address and port in the container (0: any port).
    Tcp {
        /// The bind address the client asked for.
        address: String,
        /// The port asked for, or the one bound when it asked for 0.
        port: u32,
    },
    /// `streamlocal-forward@openssh.com`: a unix socket's path in the container.
    Socket(String),
    /// `auth-agent-req@openssh.com`: the connection's agent socket, at a path the
    /// proxy chose. The client cannot cancel it; it goes with the connection.
    Agent(String),
    /// `x11-req`: a session channel's X11 display on the container's loopback,
    /// the agent's choice of port. It goes with the channel; with `single`, after
    /// its first connection.
    X11 {
        /// The session channel it serves.
        channel: u32,
        /// `single-connection` was asked for.
        single: bool,
    },
}

/// X11 display N listens on TCP port 6000 + N.
pub(crate) const X11_BASE_PORT: u32 = 6000;

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Tcp { address, port } => write!(f, "{address}:{port}"),
            Bind::Socket(path) => f.write_str(path),
            Bind::Agent(path) => write!(f, "agent socket {path}"),
            Bind::X11 { channel, .. } => write!(f, "X11 display of channel {channel}"),
        }
    }
}

/// The `ssh -R` listeners of one SSH connection, TCP and unix sockets alike, by what
/// the client asked for; cancelled on `cancel-tcpip-forward` /
/// `cancel-streamlocal-forward@openssh.com` and when the connection ends.
#[derive(Default)]
pub(crate) struct RemoteForwards {
    listeners: Mutex<HashMap<Bind, CancellationToken>>,
}

impl RemoteForwards {
    /// How many listeners there are.
    fn len(&self) -> usize {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Keeps a listener's token, to cancel it by.
    fn insert(&self, bind: Bind, token: CancellationToken) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(bind, token);
    }

    /// Stops one listener; false when there was none.
    pub fn cancel(&self, bind: &Bind) -> bool {
        let token = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(bind);
        token.map(|t| t.cancel()).is_some()
    }

    /// Stops the X11 display of session channel `channel`, if it has one.
    pub fn cancel_x11(&self, channel: russh::ChannelId) {
        let channel = u32::from(channel);
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|bind, token| match bind {
                Bind::X11 { channel: c, .. } if *c == channel => {
                    token.cancel();
                    false
                }
                _ => true,
            });
    }

    /// How many listeners one connection may hold.
    const MAX: usize = 32;
}

impl Drop for RemoteForwards {
    fn drop(&mut self) {
        for token in self
            .listeners
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            token.cancel();
        }
    }
}

/// Why an `ssh -R` listener was not opened; logged, the client hears only "no".
#[derive(Debug, thiserror::Error)]
pub(crate) enum ListenError {
    /// The connection holds [`RemoteForwards::MAX`] listeners already.
    #[error("too many remote forwards on one connection")]
    TooMany,
    /// The login's certificate lacks `permit-port-forwarding`.
    #[error("the certificate does not permit port forwarding")]
    NotPermitted,
    /// The login's certificate lacks `permit-agent-forwarding`.
    #[error("the certificate does not permit agent forwarding")]
    AgentNotPermitted,
    /// The login's certificate lacks `permit-X11-forwarding`.
    #[error("the certificate does not permit X11 forwarding")]
    X11NotPermitted,
    /// Placing the student or asking the agent failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// `ssh -R`: asks the agent to listen in the container; on success returns the port
/// bound (0 for a unix socket) and keeps announcing accepted connections as
/// forwarded channels.
pub(crate) async fn remote_forward(
    ctx: Context,
    forwards: Arc<RemoteForwards>,
    bind: Bind,
) -> Result<u32, ListenError> {
    let restrictions = &ctx.identity.restrictions;
    match bind {
        Bind::Agent(_) if restrictions.no_agent_forwarding => {
            return Err(ListenError::AgentNotPermitted)
        }
        Bind::Tcp { .. } | Bind::Socket(_) if restrictions.no_port_forwarding => {
            return Err(ListenError::NotPermitted)
        }
        Bind::X11 { .. } if restrictions.no_x11_forwarding => {
            return Err(ListenError::X11NotPermitted)
        }
        _ => {}
    }
    if forwards.len() >= RemoteForwards::MAX {
        return Err(ListenError::TooMany);
    }
    let (placement, mut agent) = placed_agent(&ctx).await?;
    let (host, port, socket_path) = match &bind {
        Bind::Tcp { address, port } => (address.clone(), *port, String::new()),
        Bind::Socket(path) | Bind::Agent(path) => (String::new(), 0, path.clone()),
        Bind::X11 { .. } => (String::new(), 0, String::new()),
    };
    let request = pb::ListenRequest {
        user: ctx.login.user.clone(),
        environment: placement.environment.clone(),
        host,
        port,
        identity: Some(crate::upstream::wire_identity(&ctx.identity)),
        socket_path,
        agent: matches!(bind, Bind::Agent(_)),
        x11: matches!(bind, Bind::X11 { .. }),
    };
    let call = agent.listen(labssh_telemetry::grpc::request(request.clone()));
    let (events, listening) = first_answer(LISTEN_TIMEOUT, call).await?;
    let bound = listening.port;
    let token = CancellationToken::new();
    // OpenSSH matches forwarded channels by the port it asked for, or the one it was
    // told when it asked for 0.
    let key = match bind {
        Bind::Tcp { address, port: 0 } => Bind::Tcp {
            address,
            port: bound,
        },
        other => other,
    };
    forwards.insert(key.clone(), token.clone());
    tracing::info!(conn = ctx.conn, user = %ctx.login.user, listen = %key, port = bound, "remote forward listening");
    // Asked for again after an agent restart, as the port the client knows.
    let again = pb::ListenRequest {
        port: bound,
        ..request
    };
    let listener = Listener {
        ctx,
        agent,
        environment: placement.environment,
        key,
        request: again,
    };
    tokio::spawn(listener.announce(events, token));
    Ok(bound)
}

/// Where in the container a connection's agent socket goes: a fresh path in `/tmp`,
/// its name 96 random bits from the OS, so it cannot be guessed in advance nor
/// taken by someone who creates it first (the helper then refuses to listen).
pub(crate) fn agent_socket_path() -> String {
    use rand::RngCore;
    let mut random = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("/tmp/labssh-agent.{name}.sock")
}

/// One `ssh -R` listener in the container, once it is up.
struct Listener {
    /// The connection's context.
    ctx: Context,
    /// The agent holding the container.
    agent: AgentClient<GrpcChannel>,
    /// The environment placed.
    environment: String,
    /// What the client knows the listener by (the port bound, where it asked for 0).
    key: Bind,
    /// How to ask for the same listener again.
    request: pb::ListenRequest,
}

impl Listener {
    /// Announces each accepted connection until the listener is cancelled or
    /// the agent ends it. When the agent's stream breaks (the agent restarted), the
    /// same listener is asked for again for up to [`RELISTEN_FOR`]; connections
    /// accepted meanwhile are the dead agent's and are lost.
    async fn announce(
        mut self,
        mut events: tonic::Streaming<pb::ListenEvent>,
        token: CancellationToken,
    ) {
        let (ctx, key) = (&self.ctx, &self.key);
        // Logged once per listener, not per connection: a loop in the container
        // could otherwise fill the log.
        let mut full_logged = false;
        let mut accepted = 0u64;
        loop {
            let event = tokio::select! {
                _ = token.cancelled() => break,
                e = events.next() => e,
            };
            let a = match event {
                Some(Ok(pb::ListenEvent {
                    msg: Some(pb::listen_event::Msg::Accepted(a)),
                })) => a,
                Some(Ok(pb::ListenEvent {
                    msg: Some(pb::listen_event::Msg::Error(e)),
                })) => {
                    tracing::info!(conn = ctx.conn, listen = %key, "remote forward ended by the container's node: {}", e.message);
                    break;
                }
                _ => {
                    // An X11 display is the agent's choice, named in the session's
                    // DISPLAY: it cannot be asked for again as it was.
                    if matches!(key, Bind::X11 { .. }) {
                        tracing::info!(conn = ctx.conn, listen = %key, "remote forward ended by the container's node");
                        break;
                    }
                    tracing::warn!(conn = ctx.conn, listen = %key, "the container's node dropped the remote forward; asking for it again");
                    match relisten(&self.ctx, &mut self.agent, &self.request, &token).await {
                        Some(again) => {
                            tracing::info!(conn = ctx.conn, listen = %key, "remote forward listening again");
                            events = again;
                            continue;
                        }
                        None => break,
                    }
                }
            };
            accepted += 1;
            // `single-connection`: the display takes no more.
            let last = matches!(key, Bind::X11 { single: true, .. });
            // Not attached, the agent closes it after its attach timeout.
            let Ok(slot) = ctx.slots.clone().try_acquire_owned() else {
                telemetry::error(Component::Proxy, "forward_limit");
                if !std::mem::replace(&mut full_logged, true) {
                    tracing::warn!(conn = ctx.conn, listen = %key, "too many forwarded connections; accepted ones are closed until some end");
                }
                continue;
            };
            let attach = In::Attach(pb::ForwardAttach {
                user: ctx.login.user.clone(),
                environment: self.environment.clone(),
                connection: a.connection,
            });
            let (ctx, mut agent) = (ctx.clone(), self.agent.clone());
            let key = key.clone();
            tokio::spawn(async move {
                forwarded(ctx, &mut agent, attach, key, a).await;
                drop(slot);
            });
            if last {
                break;
            }
        }
        tracing::debug!(accepted, "remote forward stopped");
    }
}

/// Asks for `request`'s listener again, with backoff, until it listens, the agent
/// refuses it, [`RELISTEN_FOR`] has passed or `token` is cancelled.
async fn relisten(
    ctx: &Context,
    agent: &mut AgentClient<GrpcChannel>,
    request: &pb::ListenRequest,
    token: &CancellationToken,
) -> Option<tonic::Streaming<pb::ListenEvent>> {
    let deadline = tokio::time::Instant::now() + RELISTEN_FOR;
    let mut pause = RELISTEN_PAUSE;
    loop {
        let call = agent.listen(labssh_telemetry::grpc::request(request.clone()));
        let answer = tokio::select! {
            _ = token.cancelled() => return None,
            answer = first_answer(LISTEN_TIMEOUT, call) => answer,
        };
        match answer {
            Ok((events, _)) => return Some(events),
            Err(e) if e.agent_unreachable() => {}
            Err(e) => {
                tracing::warn!(conn = ctx.conn, "remote forward not listening again: {e}");
                return None;
            }
        }
        if tokio::time::Instant::now() + pause >= deadline {
            tracing::warn!(
                conn = ctx.conn,
                "remote forward given up: its node did not come back"
            );
            return None;
        }
        tokio::select! {
            _ = token.cancelled() => return None,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RELISTEN_MAX_PAUSE);
    }
}

/// One connection accepted in the container for `ssh -R`: attached to a Forward
/// stream, then announced to the client as a `forwarded-tcpip` (or
/// `forwarded-streamlocal@openssh.com`) channel.
async fn forwarded(
    ctx: Context,
    agent: &mut AgentClient<GrpcChannel>,
    attach: In,
    key: Bind,
    accepted: pb::Accepted,
) {
    let timeout = ctx.shared.config.session_start_timeout();
    let stream = match open_stream(agent, attach, timeout).await {
        Ok((stream, _)) => stream,
        Err(e) => {
            tracing::warn!(
                conn = ctx.conn,
                "accepted connection lost: {}",
                open_failure(&e).description()
            );
            return;
        }
    };
    let originator = format!(
        "{}:{}",
        accepted.originator_address, accepted.originator_port
    );
    let (kind, opening) = match &key {
        Bind::Tcp { address, port } => (
            "forwarded-tcpip",
            ctx.handle
                .channel_open_forwarded_tcpip(
                    address.clone(),
                    *port,
                    accepted.originator_address,
                    accepted.originator_port,
                )
                .boxed(),
        ),
        Bind::Socket(path) => (
            "forwarded-streamlocal",
            ctx.handle
                .channel_open_forwarded_streamlocal(path.clone())
                .boxed(),
        ),
        Bind::Agent(_) => ("auth-agent", ctx.handle.channel_open_agent().boxed()),
        Bind::X11 { .. } => (
            "x11",
            ctx.handle
                .channel_open_x11(accepted.originator_address, accepted.originator_port)
                .boxed(),
        ),
    };
    let channel = tokio::time::timeout(CLIENT_CONFIRM_TIMEOUT, opening).await;
    // Dropping the stream closes the container's side.
    match channel {
        Err(_) => {
            telemetry::error(Component::Proxy, "forward_open_timeout");
            tracing::warn!(
                conn = ctx.conn,
                listen = %key,
                "the client did not confirm a forwarded connection within {CLIENT_CONFIRM_TIMEOUT:?}; closed it"
            );
        }
        Ok(Err(e)) => tracing::info!(
            conn = ctx.conn,
            "client refused a forwarded connection: {e}"
        ),
        Ok(Ok(channel)) => {
            let fields = serde_json::json!({
                "conn": ctx.conn,
                "client": ctx.peer,
                "user": ctx.login.user,
                "environment": ctx.environment(),
                "kind": kind,
                "listen": key.to_string(),
                "originator": originator,
            });
            ctx.shared.audit.record("forward_open", fields.clone());
            splice(channel, stream, kind, ctx.budget.clone()).await;
            ctx.shared.audit.record("forward_close", fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_and_tcp_listeners_share_one_table_and_its_limit() {
        let forwards = RemoteForwards::default();
        let tcp = Bind::Tcp {
            address: "localhost".into(),
            port: 9000,
        };
        let socket = Bind::Socket("/tmp/app.sock".into());
        let (tcp_token, socket_token) = (CancellationToken::new(), CancellationToken::new());
        forwards.insert(tcp.clone(), tcp_token.clone());
        forwards.insert(socket.clone(), socket_token.clone());
        // Both count against RemoteForwards::MAX.
        assert_eq!(forwards.len(), 2);
        assert!(!forwards.cancel(&Bind::Socket("/tmp/other.sock".into())));
        assert!(forwards.cancel(&socket));
        assert!(socket_token.is_cancelled() && !tcp_token.is_cancelled());
        assert!(!forwards.cancel(&socket));
        assert_eq!(forwards.len(), 1);
        // The connection's end cancels the rest.
        drop(forwards);
        assert!(tcp_token.is_cancelled());
    }

    #[test]
    fn agent_socket_paths_are_fresh_and_fit_a_socket_address() {
        let (a, b) = (agent_socket_path(), agent_socket_path());
        assert_ne!(a, b);
        assert!(
            a.starts_with("/tmp/labssh-agent.") && a.ends_with(".sock"),
            "{a}"
        );
        assert_eq!(a.len(), "/tmp/labssh-agent.".len() + 24 + ".sock".len());
        assert!(a.len() < 104);
    }

    #[test]
    fn the_agent_socket_cannot_be_cancelled_by_the_client() {
        let forwards = RemoteForwards::default();
        let path = "/tmp/labssh-agent.x.sock";
        let token = CancellationToken::new();
        forwards.insert(Bind::Agent(path.into()), token.clone());
        // `cancel-streamlocal-forward` names a socket, never the agent's.
        assert!(!forwards.cancel(&Bind::Socket(path.into())));
        assert!(!token.is_cancelled());
        drop(forwards);
        assert!(token.is_cancelled());
    }
}
