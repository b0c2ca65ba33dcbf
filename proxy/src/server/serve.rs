//! One connection's task: its PROXY header, its place among the unauthenticated
//! connections, the SSH handshake, and then watching it until it ends, under the
//! login grace until a login and until shutdown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use labssh_telemetry::metrics::{self as telemetry, Component};
use russh::server::{Handle, RunningSession};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::roll;
use crate::connection::{Connection, Handler};
use crate::preauth::{Reason, Unauthenticated};
use crate::proxy_protocol::{Peer, Policy};
use crate::state::Shared;

/// What a connection task needs.
pub(super) struct Accepted {
    /// Replica-wide state.
    pub shared: Arc<Shared>,
    /// russh server configuration.
    pub ssh_config: Arc<russh::server::Config>,
    /// PROXY protocol policy.
    pub policy: Policy,
    /// Becomes true on shutdown.
    pub stop: watch::Receiver<bool>,
    /// When the connection was accepted: the login grace runs from here.
    pub accepted: Instant,
    /// Its place among the unauthenticated connections, if the accept loop
    /// already knew its client; behind a balancer, taken once the header names
    /// the client.
    pub admitted: Option<Unauthenticated>,
}

impl Accepted {
    pub(super) async fn serve(mut self, mut stream: TcpStream, socket_peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let grace = self.shared.config.login_grace();
        let grace_secs = format!("{} s", grace.as_secs());
        // The grace covers the PROXY header too: a balancer's client that
        // sends nothing is closed by then all the same.
        let deadline = self.accepted + grace;
        let header =
            tokio::time::timeout_at(deadline, self.policy.accept(&mut stream, socket_peer));
        let client = match header.await {
            Ok(Ok(Peer::Client(client))) => client,
            Ok(Err(e)) => {
                tracing::warn!("connection refused: {e}");
                return;
            }
            Err(_) => {
                let refusals = &self.shared.refusals;
                refusals.refuse(Reason::LoginGrace, socket_peer.ip(), grace_secs);
                return;
            }
        };
        let unauthenticated = match self.admitted.take() {
            Some(unauthenticated) => unauthenticated,
            // Behind a balancer: the client its header names, or the
            // balancer's own connection (not capped per address).
            None => match self.shared.gate.admit(
                Some(client.ip()).filter(|_| !self.policy.trusts(&client)),
                roll(),
            ) {
                Ok(unauthenticated) => unauthenticated,
                Err(reason) => {
                    let limit = self.shared.gate.limit(reason);
                    self.shared.refusals.refuse(reason, client.ip(), limit);
                    return;
                }
            },
        };
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (logged_in, login_seen) = watch::channel(false);
        let (connection, handler) = Connection::new(
            self.shared.clone(),
            Some(client),
            id,
            (logged_in, unauthenticated.clone()),
        );
        let started = russh::server::run_stream(self.ssh_config.clone(), stream, handler);
        // Held here, so the stream it owns closes only on return.
        let mut started = Box::pin(tokio::time::timeout_at(deadline, started));
        let session = match (&mut started).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(conn = id, %client, "ssh handshake failed: {e:#}");
                return;
            }
            Err(_) => {
                // It no longer counts before the client can see it closed.
                unauthenticated.end();
                let refusals = &self.shared.refusals;
                refusals.refuse(Reason::LoginGrace, client.ip(), grace_secs);
                return;
            }
        };
        let handle = session.handle();
        tokio::spawn(tracing::Instrument::in_current_span(
            connection.run(handle.clone()),
        ));
        let watched = Watched {
            id,
            client,
            deadline,
            login_seen,
            unauthenticated,
        };
        self.watch(session, handle, watched).await;
    }

    /// Waits for the connection to end, disconnecting it when the login
    /// grace passes without a login, or at shutdown.
    async fn watch(mut self, session: RunningSession<Handler>, handle: Handle, watched: Watched) {
        let Watched {
            id,
            client,
            deadline,
            mut login_seen,
            unauthenticated,
        } = watched;
        let grace = self.shared.config.login_grace();
        // Resolves only if the login grace passes without a login (the login
        // itself ends the connection's count as unauthenticated).
        let grace_over = async move {
            let seen = tokio::time::timeout_at(deadline, async {
                login_seen.wait_for(|done| *done).await.is_ok()
            });
            match seen.await {
                Ok(true) => std::future::pending::<()>().await,
                // The connection's task has ended: so will the session.
                Ok(false) => std::future::pending::<()>().await,
                Err(_) => {}
            }
        };
        tokio::select! {
            result = session => {
                match result {
                    Err(e) if e.is_keepalive_timeout() => {
                        telemetry::error(Component::Proxy, "client_alive_timeout");
                        tracing::info!(conn = id, %client, "client answered no keepalives; disconnected");
                    }
                    Err(e) => {
                        tracing::debug!(conn = id, %client, "ssh connection ended with error: {e:#}");
                    }
                    Ok(()) => {}
                }
            }
            _ = grace_over => {
                // It no longer counts before the client can see it closed.
                unauthenticated.end();
                let grace_secs = format!("{} s", grace.as_secs());
                self.shared.refusals.refuse(Reason::LoginGrace, client.ip(), grace_secs);
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        format!("labssh: no login within {} s", grace.as_secs()),
                        String::new(),
                    )
                    .await;
            }
            _ = async { let _ = self.stop.wait_for(|stop| *stop).await; } => {
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "labssh proxy is shutting down".into(),
                        String::new(),
                    )
                    .await;
            }
        }
    }
}

/// What [`Accepted::watch`] watches, besides the session.
struct Watched {
    /// Connection number, for logs.
    id: u64,
    /// The client's address.
    client: SocketAddr,
    /// End of the login grace.
    deadline: Instant,
    /// Becomes true at the login.
    login_seen: watch::Receiver<bool>,
    /// Counts the connection as unauthenticated until the login or the end
    /// of the grace.
    unauthenticated: Unauthenticated,
}
