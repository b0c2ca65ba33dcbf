//! `ssh -R`: one Listen call binds inside the student's container (a TCP address, or a
//! unix socket the student owns), then announces every connection it accepts until
//! the proxy ends the call; the proxy attaches each with a Forward stream.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use labssh_proto::pb;
use pb::listen_event::Msg as Event;
use tokio::net::TcpListener;

use super::pending::Accepted;
use super::policy::Policy;
use super::refusal::ForwardError;
use crate::backend::{BackendError, Duplex, Ensured, RunAs, SocketListener};
use crate::lifecycle::activity::Active;
use crate::limits::caps::{Held, Kind};
use crate::state::Shared;

/// Sends listen events to the proxy.
pub type EventSender = crate::stream::Sender<pb::ListenEvent>;

/// Events buffered per Listen call: each is one accepted connection the proxy
/// attaches at once.
pub const EVENT_BUFFER: usize = 16;
/// X11 display N listens on TCP port 6000 + N.
const X11_BASE_PORT: u16 = 6000;
/// The first display number tried, as sshd's default `X11DisplayOffset`.
const X11_DISPLAY_OFFSET: u16 = 10;
/// Displays tried; a student holds at most `max_listeners_per_user` of them.
const X11_DISPLAYS: u16 = 64;
/// Pause after a failed accept (EMFILE and the like), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A listening socket inside a student's container.
enum Bound {
    /// `ssh -R [ADDR:]PORT:...`.
    Tcp(TcpListener),
    /// `ssh -R /PATH:...`; its socket file goes when this is dropped.
    Unix(SocketListener),
}

impl Bound {
    /// The next connection and who made it: its peer's address (TCP), or the pid
    /// of the process that connected, in this agent's namespace (a unix socket).
    async fn accept(&self) -> io::Result<(Box<dyn Duplex>, Peer)> {
        match self {
            Bound::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Box::new(stream), Peer::Address(peer)))
            }
            Bound::Unix(socket) => {
                let (stream, _) = socket.listener.accept().await?;
                let pid = stream.peer_cred().ok().and_then(|c| c.pid());
                Ok((Box::new(stream), Peer::Process(pid)))
            }
        }
    }
}

/// Who connected to a listener.
enum Peer {
    /// From this address.
    Address(SocketAddr),
    /// The process of this pid, if the kernel could tell.
    Process(Option<i32>),
}

/// A listener inside a student's container, and whose it is.
struct Listening {
    /// The request it serves.
    request: pb::ListenRequest,
    /// The container it listens in.
    ensured: Ensured,
    /// Where it listens, for logs: the address bound, or the socket's path.
    place: String,
    /// The TCP port it got; 0 for a unix socket.
    port: u16,
    /// Keeps the container awake while it listens; ends it on a container action.
    active: Active,
}

/// Runs one Listen call to its end.
pub async fn listen(shared: std::sync::Arc<Shared>, request: pb::ListenRequest, tx: EventSender) {
    let (listener, listening, _held) = match bind(&shared, request).await {
        Ok(bound) => bound,
        Err(e) => {
            let event = Event::Error(e.into());
            let _ = tx.send(Ok(pb::ListenEvent { msg: Some(event) })).await;
            return;
        }
    };
    let Listening {
        request,
        ensured,
        place,
        port,
        ..
    } = &listening;
    tracing::info!(user = %request.user, container = %ensured.name, %place, port, "remote forward listening");
    let event = Event::Listening(pb::Listening {
        port: (*port).into(),
        container: ensured.name.clone(),
    });
    if tx
        .send(Ok(pb::ListenEvent { msg: Some(event) }))
        .await
        .is_err()
    {
        return;
    }
    accept_loop(&shared, &listener, &listening, &tx).await;
    tracing::info!(user = %request.user, container = %ensured.name, %place, port, "remote forward closed");
}

/// Counts the listener, ensures the container and binds where policy says; the
/// [`Held`] lasts as long as the listener.
async fn bind(
    shared: &Shared,
    request: pb::ListenRequest,
) -> Result<(Bound, Listening, Held), ForwardError> {
    let held = shared
        .limits
        .caps
        .admit(&request.user, Kind::Listener, "remote forward")?;
    let active = shared.lifecycle.hold(&request.user, &request.environment);
    let (env, ensured) = shared
        .ensure(
            &request.user,
            &request.environment,
            request.identity.as_ref(),
        )
        .await?;
    let container = &ensured.container_id;
    let (bound, place, port) = if request.x11 {
        if let Err(r) = Policy::of(&env).check_x11() {
            tracing::info!(user = %request.user, "X11 forwarding refused: {}", r.0);
            return Err(r.into());
        }
        let listener = x11_display(shared, container).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| BackendError::ListenFailed {
                address: "127.0.0.1".to_owned(),
                message: e.to_string(),
            })?;
        (Bound::Tcp(listener), addr.to_string(), addr.port())
    } else if request.socket_path.is_empty() {
        let own: Vec<IpAddr> = shared
            .backend
            .container_addresses(container)
            .await
            .unwrap_or_default();
        let addr = Policy::of(&env).listen_address(&own, &request.host, request.port)?;
        let listener = shared.backend.listen_tcp(container, addr).await?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        (Bound::Tcp(listener), addr.to_string(), port)
    } else {
        let path = &request.socket_path;
        let policy = Policy::of(&env);
        let checked = if request.agent {
            policy.check_agent_socket(path)
        } else {
            policy.check_remote_socket(path)
        };
        if let Err(r) = checked {
            tracing::info!(user = %request.user, %path, "remote forward refused: {}", r.0);
            return Err(r.into());
        }
        let run_as = RunAs::student(&request.user, &env);
        let socket = shared.backend.listen_unix(container, path, run_as).await?;
        (Bound::Unix(socket), path.clone(), 0)
    };
    let listening = Listening {
        request,
        ensured,
        place,
        port,
        active,
    };
    Ok((bound, listening, held))
}

/// The first free X11 display on the container's loopback from
/// [`X11_DISPLAY_OFFSET`] (sshd's `X11DisplayOffset`), as a listener on its port.
async fn x11_display(shared: &Shared, container: &str) -> Result<TcpListener, BackendError> {
    let mut last = None;
    for display in X11_DISPLAY_OFFSET..X11_DISPLAY_OFFSET + X11_DISPLAYS {
        let addr = SocketAddr::from(([127, 0, 0, 1], X11_BASE_PORT + display));
        match shared.backend.listen_tcp(container, addr).await {
            Ok(listener) => return Ok(listener),
            // Taken by another session's display (or anything else): the next one.
            Err(BackendError::ListenFailed { message, .. }) if message.contains("in use") => {
                last = Some(message)
            }
            Err(e) => return Err(e),
        }
    }
    Err(BackendError::ListenFailed {
        address: format!(
            "127.0.0.1:{}-{}",
            X11_BASE_PORT + X11_DISPLAY_OFFSET,
            X11_BASE_PORT + X11_DISPLAY_OFFSET + X11_DISPLAYS - 1
        ),
        message: format!(
            "no free X11 display ({})",
            last.unwrap_or_else(|| "all in use".to_owned())
        ),
    })
}

/// Parks and announces every accepted connection until the agent shuts down or the
/// proxy ends the call.
async fn accept_loop(shared: &Shared, listener: &Bound, listening: &Listening, tx: &EventSender) {
    let Listening {
        request,
        ensured,
        port,
        ..
    } = listening;
    // Set while connections are being refused over a cap, so one burst logs once.
    let mut over_cap = false;
    let ending = listening.active.ending();
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tx.closed() => break,
            // An action on the container (a reset, a stop): the listener goes with it,
            // and the proxy is told why.
            why = ending.ended() => {
                tracing::info!(user = %request.user, container = %ensured.name, port, "remote forward ended: {why}");
                let error = Event::Error(pb::ForwardError {
                    message: why.to_owned(),
                    prohibited: false,
                });
                let _ = tx.send(Ok(pb::ListenEvent { msg: Some(error) })).await;
                break;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(container = %ensured.name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let peer = match peer {
            Peer::Address(addr) => Some(addr),
            // The agent socket takes only its own connection's processes.
            Peer::Process(pid) if request.agent => {
                let path = &request.socket_path;
                if !shared
                    .agent_peers
                    .admits(&ensured.container_id, path, pid)
                    .await
                {
                    tracing::warn!(user = %request.user, container = %ensured.name, %path, ?pid, "agent socket: refused a process that is not of its SSH connection");
                    continue;
                }
                None
            }
            Peer::Process(_) => None,
        };
        let caps = &shared.limits.caps;
        let counted = caps
            .acquire(&request.user, Kind::Forward)
            .and_then(|f| Ok((f, caps.acquire(&request.user, Kind::PendingRemote)?)));
        let (forward, waiting) = match counted {
            Ok(held) => {
                over_cap = false;
                held
            }
            Err(over) => {
                // Closing it tells the client in the container at once.
                if !over_cap {
                    tracing::warn!(user = %request.user, container = %ensured.name, port, "closing accepted connections: {over}");
                    over_cap = true;
                }
                continue;
            }
        };
        let accepted = Accepted {
            user: request.user.clone(),
            environment: request.environment.clone(),
            container: ensured.name.clone(),
            stream,
            peer,
            forward,
            waiting,
        };
        if !announce(shared, accepted, tx).await {
            break;
        }
    }
}

/// Parks an accepted connection and tells the proxy; false once the proxy is gone.
async fn announce(shared: &Shared, accepted: Accepted, tx: &EventSender) -> bool {
    let peer = accepted.peer;
    let container = accepted.container.clone();
    let Some(connection) = shared.pending.park(accepted) else {
        tracing::warn!(container = %container, "too many connections waiting to be attached; closed one");
        return true;
    };
    let event = Event::Accepted(pb::Accepted {
        connection,
        originator_address: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        originator_port: peer.map_or(0, |p| p.port().into()),
    });
    if tx
        .send(Ok(pb::ListenEvent { msg: Some(event) }))
        .await
        .is_err()
    {
        shared.pending.take(connection);
        return false;
    }
    true
}
