//! `ssh -R`: one Listen call binds inside the student's container, then announces
//! every connection it accepts until the proxy ends the call; the proxy attaches each
//! with a Forward stream.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use labssh_proto::pb;
use pb::listen_event::Msg as Event;
use tokio::net::TcpListener;

use super::pending::Accepted;
use super::policy::Policy;
use super::refusal::ForwardError;
use crate::backend::Ensured;
use crate::lifecycle::activity::Active;
use crate::limits::caps::{Held, Kind};
use crate::state::Shared;

/// Sends listen events to the proxy.
pub type EventSender = crate::stream::Sender<pb::ListenEvent>;

/// Events buffered per Listen call: each is one accepted connection the proxy
/// attaches at once.
pub const EVENT_BUFFER: usize = 16;
/// Pause after a failed accept (EMFILE and the like), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A listener inside a student's container, and whose it is.
struct Listening {
    /// The request it serves.
    request: pb::ListenRequest,
    /// The container it listens in.
    ensured: Ensured,
    /// The address it was bound to.
    addr: SocketAddr,
    /// The port it got.
    port: u16,
    /// Keeps the container awake while it listens.
    _active: Active,
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
        addr,
        port,
        ..
    } = &listening;
    tracing::info!(user = %request.user, container = %ensured.name, %addr, port, "remote forward listening");
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
    tracing::info!(user = %request.user, container = %ensured.name, port, "remote forward closed");
}

/// Counts the listener, ensures the container and binds where policy says; the
/// [`Held`] lasts as long as the listener.
async fn bind(
    shared: &Shared,
    request: pb::ListenRequest,
) -> Result<(TcpListener, Listening, Held), ForwardError> {
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
    let own: Vec<IpAddr> = shared
        .backend
        .container_addresses(&ensured.container_id)
        .await
        .unwrap_or_default();
    let addr = Policy::of(&env).listen_address(&own, &request.host, request.port)?;
    let listener = shared
        .backend
        .listen_tcp(&ensured.container_id, addr)
        .await?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let listening = Listening {
        request,
        ensured,
        addr,
        port,
        _active: active,
    };
    Ok((listener, listening, held))
}

/// Parks and announces every accepted connection until the agent shuts down or the
/// proxy ends the call.
async fn accept_loop(
    shared: &Shared,
    listener: &TcpListener,
    listening: &Listening,
    tx: &EventSender,
) {
    let Listening {
        request,
        ensured,
        port,
        ..
    } = listening;
    // Set while connections are being refused over a cap, so one burst logs once.
    let mut over_cap = false;
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tx.closed() => break,
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
    let _ = accepted.stream.set_nodelay(true);
    let peer: SocketAddr = accepted.peer;
    let container = accepted.container.clone();
    let Some(connection) = shared.pending.park(accepted) else {
        tracing::warn!(container = %container, "too many connections waiting to be attached; closed one");
        return true;
    };
    let event = Event::Accepted(pb::Accepted {
        connection,
        originator_address: peer.ip().to_string(),
        originator_port: peer.port().into(),
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
