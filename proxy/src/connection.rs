//! One SSH connection's task. It owns the connection's state — the login,
//! its session channels, its forwards — and handles, one at a time and in
//! order, every [`Event`] the russh handler ([`handler`]) turns a callback
//! into. Authentication is decided by [`crate::auth`], each session channel
//! runs as its own task ([`crate::channel`]), each forward too
//! ([`crate::forward`]).
//!
//! The handler waits while an event is queued, and for the answer where russh
//! needs one inside the callback; so nothing this task waits on may need the
//! connection's russh loop. It waits only on authentication (Redis, argon2)
//! and on a session channel's input queue, which that channel drains without
//! the loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Phase};
use russh::server::{ChannelOpenHandle, Handle, Msg};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::field::Empty;

use crate::auth::identity::Identity;
use crate::auth::{self, Attempt, Outcome};
use crate::channel;
use crate::forward::{self, RemoteForwards};
use crate::login_name::LoginName;
use crate::preauth::{Reason, Unauthenticated};
use crate::state::{Context, Shared};

mod event;
mod handler;

use event::{Event, X11Request};
pub(crate) use handler::Handler;

/// Events queued from the handler to the task; the handler waits for room,
/// which holds the client's connection back as russh's own loop would.
const EVENT_QUEUE: usize = 32;
/// Session channels (shells, commands, SFTP) open at once on one SSH connection;
/// a ControlMaster's or VS Code's opens a few dozen, and any number over its life.
const MAX_SESSION_CHANNELS: usize = 64;
/// Forwarded connections (`ssh -L`, `-D`, and those accepted for `ssh -R`) open
/// at once on one SSH connection; a browser behind `ssh -D` opens a few dozen.
const MAX_FORWARDS: usize = 256;

/// The root span of one SSH connection: one connection, one trace.
pub(crate) fn span(socket_peer: SocketAddr) -> tracing::Span {
    tracing::info_span!(
        "ssh",
        socket_peer = %socket_peer,
        peer = Empty,
        conn = Empty,
        user = Empty,
        environment = Empty,
        method = Empty
    )
}

/// One SSH connection's state; lives as long as its task.
pub(crate) struct Connection {
    /// Replica-wide state.
    shared: Arc<Shared>,
    /// Who is connected, for authentication, logs and spans.
    client: auth::Client,
    /// The handler's events.
    events: mpsc::Receiver<Event>,
    /// Set once authentication succeeds.
    login: Option<(LoginName, Arc<Identity>)>,
    /// Failed authentication attempts so far; at `max_auth_tries` the
    /// connection is disconnected.
    failures: u32,
    /// Session channels opened so far (the first one's start is the login time).
    channels: usize,
    /// The queues of each open session channel (at most
    /// [`MAX_SESSION_CHANNELS`]); an entry goes when its channel closes.
    sessions: HashMap<ChannelId, channel::Sender>,
    /// When the connection was accepted: start of the accept phase and of
    /// the login time.
    accepted: Instant,
    /// The accept phase (version and key exchange), closed at the first
    /// authentication request.
    accept_phase: Option<tracing::Span>,
    /// Slots for forwarded connections open at once.
    forward_slots: Arc<Semaphore>,
    /// `ssh -R` listeners and the agent socket; dropping the connection closes them.
    remote: Arc<RemoteForwards>,
    /// The agent socket's path once it listens (`ssh -A`).
    agent_socket: Arc<std::sync::OnceLock<String>>,
    /// Session channels' X11 displays (`ssh -X`), until their start takes them.
    x11: crate::state::X11Displays,
    /// Client-to-container bytes the forwards may hold in the proxy.
    forward_budget: Arc<Semaphore>,
    /// Set once a login succeeds; the accept loop disconnects a client that
    /// has not logged in within the login grace.
    logged_in: watch::Sender<bool>,
    /// Counts the connection as unauthenticated until its login.
    unauthenticated: Unauthenticated,
    /// Counts the connection as open until it is dropped.
    _open: telemetry::Active,
    /// In the replica's table of logged-in connections (for operators' kicks).
    live: Option<crate::live::ConnectionEntry>,
    /// Cancelled when the connection is gone: its forwards still opening give up
    /// (an agent's start queue loses a waiter nobody waits for).
    closed: tokio_util::sync::CancellationToken,
    /// Cancels `closed` when dropped.
    _closing: tokio_util::sync::DropGuard,
}

impl Connection {
    /// The state of a connection just accepted, inside its `ssh` span, and
    /// the handler to give russh. `login` is what a login ends: the wait of
    /// the accept loop's grace, and the count as unauthenticated.
    pub fn new(
        shared: Arc<Shared>,
        client: Option<SocketAddr>,
        id: u64,
        login: (watch::Sender<bool>, Unauthenticated),
    ) -> (Connection, Handler) {
        let (logged_in, unauthenticated) = login;
        let peer = client.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        tracing::debug!(conn = id, %peer, "connection accepted");
        // The accept loop runs this inside the connection's `ssh` span.
        let span = tracing::Span::current();
        span.record("peer", peer.as_str());
        span.record("conn", id);
        let accept_phase = Some(tracing::info_span!(parent: &span, "accept"));
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let closed = tokio_util::sync::CancellationToken::new();
        let audit = shared.audit.clone();
        let connection = Connection {
            _closing: closed.clone().drop_guard(),
            closed,
            shared,
            client: auth::Client {
                conn: id,
                peer,
                ip: client.map(|c| c.ip()),
                span,
                unavailable: Default::default(),
                audit,
            },
            events,
            login: None,
            failures: 0,
            channels: 0,
            sessions: HashMap::new(),
            accepted: Instant::now(),
            accept_phase,
            forward_slots: Arc::new(Semaphore::new(MAX_FORWARDS)),
            remote: Arc::default(),
            agent_socket: Arc::default(),
            x11: Arc::default(),
            forward_budget: Arc::new(Semaphore::new(forward::CONNECTION_BUDGET_KIB)),
            logged_in,
            unauthenticated,
            _open: telemetry::connection_opened(),
            live: None,
        };
        (connection, Handler::new(events_tx))
    }

    /// Handles events until the handler is dropped (the connection ended).
    pub async fn run(mut self, handle: Handle) {
        while let Some(event) = self.events.recv().await {
            self.handle(event, &handle).await;
        }
    }

    async fn handle(&mut self, event: Event, handle: &Handle) {
        match event {
            Event::Auth(attempt, reply) => {
                let outcome = self.authenticate(attempt, handle).await;
                let _ = reply.send(outcome);
            }
            Event::SessionOpened { channel, reply } => {
                self.session_opened(channel, reply, handle).await
            }
            Event::Request {
                channel,
                request,
                reply,
            } => {
                // A request on no session channel of ours is refused by the
                // dropped reply.
                if let Some(session) = self.sessions.get(&channel) {
                    session.request(request, reply);
                }
            }
            Event::Input { channel, input } => {
                // Forwarded channels read their own data from russh.
                if let Some(session) = self.sessions.get(&channel) {
                    session.input(input).await;
                }
            }
            Event::Closed(channel) => {
                self.sessions.remove(&channel);
                // Its display goes with it (sshd's does with the session).
                self.x11
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&channel);
                self.remote.cancel_x11(channel);
            }
            Event::Direct {
                channel,
                reply,
                destination,
                originator,
            } => {
                self.direct(channel, reply, destination, originator, handle)
                    .await
            }
            Event::RemoteForward { bind, reply } => self.remote_forward(bind, reply, handle),
            Event::AgentRequest { channel, reply } => self.agent_request(channel, reply, handle),
            Event::X11Request {
                channel,
                request,
                reply,
            } => self.x11_request(channel, request, reply, handle),
            Event::CancelRemoteForward { bind, reply } => {
                let _ = reply.send(self.remote.cancel(&bind));
            }
        }
    }

    /// Decides an authentication attempt; the first one ends the accept
    /// phase. The `max_auth_tries`-th failure disconnects the client, as
    /// OpenSSH does, before it can try again.
    async fn authenticate(&mut self, attempt: Attempt, handle: &Handle) -> Outcome {
        if let Some(span) = self.accept_phase.take() {
            telemetry::setup_phase(Phase::Accept, self.accepted.elapsed());
            drop(span);
        }
        let max_tries = self.shared.config.max_auth_tries;
        if self.failures >= max_tries {
            // Already disconnecting: nothing more is checked.
            return Outcome::Rejected;
        }
        let counted = attempt.credential.counts_as_failure();
        let outcome = self.client.decide(&self.shared, attempt).await;
        match &outcome {
            Outcome::LoggedIn(login, identity) => {
                self.login = Some((login.clone(), Arc::new(identity.clone())));
                self.live = Some(self.shared.live.connection(
                    self.client.conn,
                    &login.user,
                    handle.clone(),
                ));
                // Before russh answers the client, so a connection that is in
                // never counts as waiting.
                self.unauthenticated.end();
                self.logged_in.send_replace(true);
            }
            Outcome::Rejected if counted => {
                self.failures += 1;
                if self.failures >= max_tries {
                    self.too_many_failures(handle);
                }
            }
            _ => {}
        }
        outcome
    }

    /// Disconnects the client after its last allowed failure. The message is
    /// queued before the rejection is answered, so russh sends it right after
    /// the rejection and reads no further attempt.
    fn too_many_failures(&self, handle: &Handle) {
        let max_tries = self.shared.config.max_auth_tries;
        if let Some(ip) = self.client.ip {
            self.shared
                .refusals
                .refuse(Reason::MaxAuthTries, ip, max_tries);
        }
        let disconnect = |handle: Handle| async move {
            let _ = handle
                .disconnect(
                    russh::Disconnect::NoMoreAuthMethodsAvailable,
                    "Too many authentication failures".into(),
                    String::new(),
                )
                .await;
        };
        // Before a login nothing else is queued to russh, so there is room
        // now; if not, the message follows as soon as there is.
        let mut now = Box::pin(disconnect(handle.clone()));
        if (&mut now).now_or_never().is_none() {
            tokio::spawn(now);
        }
    }

    /// What channel and forwarding tasks need, once authenticated.
    fn context(&self, handle: &Handle) -> Option<Context> {
        Some(Context {
            shared: self.shared.clone(),
            login: self.login.as_ref()?.0.clone(),
            identity: self.login.as_ref()?.1.clone(),
            conn: self.client.conn,
            peer: self.client.peer.clone(),
            handle: handle.clone(),
            span: self.client.span.clone(),
            budget: self.forward_budget.clone(),
            slots: self.forward_slots.clone(),
            agent_socket: self.agent_socket.clone(),
            x11: self.x11.clone(),
        })
    }

    /// The context for a channel the client opens and what `take` takes for
    /// it, or `None` once the channel is refused: before a login as
    /// "administratively prohibited", over a limit as "resource shortage" with
    /// the limit `take` names, which OpenSSH prints.
    async fn admit<T>(
        &self,
        handle: &Handle,
        reply: ChannelOpenHandle,
        take: impl FnOnce(&Context) -> Result<T, String>,
    ) -> Option<(Context, ChannelOpenHandle, T)> {
        let Some(ctx) = self.context(handle) else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return None;
        };
        match take(&ctx) {
            Ok(taken) => Some((ctx, reply, taken)),
            Err(limit) => {
                reply.reject(over_limit(&limit)).await;
                None
            }
        }
    }

    async fn session_opened(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        handle: &Handle,
    ) {
        let room = |ctx: &Context| {
            // Open ones: a ControlMaster connection opens many over its life.
            if self.sessions.len() < MAX_SESSION_CHANNELS {
                return Ok(());
            }
            tracing::warn!(conn = ctx.conn, user = %ctx.login.user, "too many session channels");
            Err(format!(
                "too many sessions on one SSH connection ({MAX_SESSION_CHANNELS}); close some and try again"
            ))
        };
        let Some((ctx, reply, ())) = self.admit(handle, reply, room).await else {
            return;
        };
        self.channels += 1;
        // Requests and data come as events; russh's copy of them is not read.
        let (_, write) = channel.split();
        let (sender, inbox) = channel::queues();
        self.sessions.insert(write.id(), sender);
        // Login time is measured to the connection's first process only.
        let accepted = (self.channels == 1).then_some(self.accepted);
        reply.accept().await;
        tokio::spawn(channel::run(write, inbox, ctx, accepted));
    }

    async fn direct(
        &self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        destination: forward::Destination,
        originator: String,
        handle: &Handle,
    ) {
        let slot = |ctx: &Context| {
            self.forward_slots.clone().try_acquire_owned().map_err(|_| {
                tracing::warn!(conn = ctx.conn, "too many forwarded connections");
                format!(
                    "too many forwarded connections on one SSH connection ({MAX_FORWARDS}); close some and try again"
                )
            })
        };
        let Some((ctx, reply, slot)) = self.admit(handle, reply, slot).await else {
            return;
        };
        let closed = self.closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = closed.cancelled() => {}
                _ = forward::direct(ctx, channel, reply, destination, originator) => {}
            }
            drop(slot);
        });
    }

    /// `ssh -A`: listens on a fresh agent socket in the container, once per
    /// connection; later requests (more channels of a ControlMaster) share it.
    /// The path is set before the reply, so a start that follows the request sees it.
    fn agent_request(&self, channel: ChannelId, reply: oneshot::Sender<bool>, handle: &Handle) {
        if self.agent_socket.get().is_some() {
            let _ = reply.send(true);
            return;
        }
        let Some(ctx) = self.context(handle) else {
            let _ = reply.send(false);
            return;
        };
        let (remote, socket) = (self.remote.clone(), self.agent_socket.clone());
        tokio::spawn(async move {
            let conn = ctx.conn;
            let path = forward::agent_socket_path();
            match forward::remote_forward(ctx, remote, forward::Bind::Agent(path.clone())).await {
                Ok(_) => {
                    tracing::info!(conn, ?channel, %path, "agent forwarding on");
                    let _ = socket.set(path);
                    let _ = reply.send(true);
                }
                Err(e) => {
                    tracing::info!(conn, ?channel, "agent forwarding refused: {e}");
                    let _ = reply.send(false);
                }
            }
        });
    }

    /// `ssh -X`: listens on a free display on the container's loopback for this
    /// session channel; its start gets DISPLAY and the cookie. The display is set
    /// before the reply, so the start that follows sees it.
    fn x11_request(
        &self,
        channel: ChannelId,
        request: X11Request,
        reply: oneshot::Sender<bool>,
        handle: &Handle,
    ) {
        let Some(ctx) = self.context(handle) else {
            let _ = reply.send(false);
            return;
        };
        if let Some(problem) = request.problem() {
            tracing::info!(
                conn = ctx.conn,
                ?channel,
                "X11 forwarding refused: {problem}"
            );
            let _ = reply.send(false);
            return;
        }
        let already = self
            .x11
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&channel);
        if already || !self.sessions.contains_key(&channel) {
            let _ = reply.send(false);
            return;
        }
        let (remote, displays) = (self.remote.clone(), self.x11.clone());
        tokio::spawn(async move {
            let conn = ctx.conn;
            let bind = forward::Bind::X11 {
                channel: u32::from(channel),
                single: request.single_connection,
            };
            match forward::remote_forward(ctx, remote, bind).await {
                Ok(port) => {
                    let number = port.saturating_sub(forward::X11_BASE_PORT);
                    tracing::info!(
                        conn,
                        ?channel,
                        display = number,
                        single = request.single_connection,
                        "X11 forwarding on"
                    );
                    let auth = pb::X11Auth {
                        display: number,
                        screen: request.screen,
                        protocol: request.protocol,
                        cookie: request.cookie,
                    };
                    displays
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(channel, auth);
                    let _ = reply.send(true);
                }
                Err(e) => {
                    tracing::info!(conn, ?channel, "X11 forwarding refused: {e}");
                    let _ = reply.send(false);
                }
            }
        });
    }

    fn remote_forward(
        &self,
        bind: forward::Bind,
        reply: oneshot::Sender<Option<u32>>,
        handle: &Handle,
    ) {
        let Some(ctx) = self.context(handle) else {
            let _ = reply.send(None);
            return;
        };
        let remote = self.remote.clone();
        tokio::spawn(async move {
            let conn = ctx.conn;
            let listen = bind.to_string();
            match forward::remote_forward(ctx, remote, bind).await {
                Ok(bound) => {
                    let _ = reply.send(Some(bound));
                }
                Err(e) => {
                    tracing::info!(conn, %listen, "remote forward refused: {e}");
                    let _ = reply.send(None);
                }
            }
        });
    }
}

/// SSH's "resource shortage" with the limit in our words, which OpenSSH prints
/// (`channel 3: open failed: resource shortage: labssh: too many …`).
fn over_limit(limit: &str) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 4,
        reason: format!("labssh: {limit}"),
    }
}
