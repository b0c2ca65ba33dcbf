//! The russh `Handler`: a thin adapter. Authentication decisions are made
//! here; each accepted session channel is handed to its own task
//! ([`crate::session_channel`]) which owns that channel's whole life.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use labssh_telemetry::metrics::{self as telemetry, Phase};
use russh::keys::PublicKey;
use russh::server::{
    Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, Pty};
use tracing::field::Empty;
use tracing::Instrument;

use crate::credential_cache::Lookup;
use crate::forwarding::{self, RemoteForwards};
use crate::login_name::LoginName;
use crate::rate_limit::Verdict;
use crate::session_channel;
use crate::state::{Context, Shared};
use crate::set_env::EnvRequests;

/// Most clients try a handful of keys; more than this per connection is
/// someone scanning.
const MAX_SESSION_CHANNELS: usize = 64;
/// Forwarded connections (`ssh -L`, `-D`, and those accepted for `ssh -R`) open
/// at once on one SSH connection; a browser behind `ssh -D` opens a few dozen.
const MAX_FORWARDS: usize = 256;

/// One SSH connection.
pub(crate) struct Connection {
    /// Replica-wide state.
    shared: Arc<Shared>,
    /// The client's address, for logs.
    peer: String,
    /// The client's IP (from the PROXY header when behind a balancer), for
    /// brute-force limits.
    ip: Option<std::net::IpAddr>,
    /// Connection number, for logs.
    id: u64,
    /// Set once authentication succeeds.
    login: Option<LoginName>,
    /// Session channels opened so far.
    channels: usize,
    /// The `env` requests of each open session channel (at most
    /// [`MAX_SESSION_CHANNELS`]); an entry goes when its channel closes.
    env: HashMap<ChannelId, EnvRequests>,
    /// The connection's trace (`ssh`, see [`connection_span`]); every phase
    /// span is its child. Lives as long as the connection.
    span: tracing::Span,
    /// When the connection was accepted: start of the accept phase and of
    /// the login time.
    accepted: Instant,
    /// The accept phase (version and key exchange), closed at the first
    /// authentication request.
    accept_phase: Option<tracing::Span>,
    /// Slots for forwarded connections open at once.
    forward_slots: Arc<tokio::sync::Semaphore>,
    /// `ssh -R` listeners; dropping the connection closes them.
    remote: Arc<RemoteForwards>,
    /// Client-to-container bytes the forwards may hold in the proxy.
    forward_budget: Arc<tokio::sync::Semaphore>,
    /// Set once a login succeeds; the connection's task disconnects a client
    /// that has not logged in within the login grace.
    logged_in: tokio::sync::watch::Sender<bool>,
    /// Counts the connection as open until it is dropped.
    _open: telemetry::Active,
}

/// The root span of one SSH connection: one connection, one trace.
pub(crate) fn connection_span(socket_peer: SocketAddr) -> tracing::Span {
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

impl Connection {
    pub(crate) fn new(
        shared: Arc<Shared>,
        client: Option<SocketAddr>,
        id: u64,
        logged_in: tokio::sync::watch::Sender<bool>,
    ) -> Self {
        let peer = client.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let ip = client.map(|c| c.ip());
        tracing::debug!(conn = id, %peer, "connection accepted");
        // The accept loop runs this inside the connection's `ssh` span.
        let span = tracing::Span::current();
        span.record("peer", peer.as_str());
        span.record("conn", id);
        let accept_phase = Some(tracing::info_span!(parent: &span, "accept"));
        Connection {
            shared,
            peer,
            ip,
            id,
            login: None,
            channels: 0,
            env: HashMap::new(),
            span,
            accepted: Instant::now(),
            accept_phase,
            forward_slots: Arc::new(tokio::sync::Semaphore::new(MAX_FORWARDS)),
            remote: Arc::default(),
            forward_budget: Arc::new(tokio::sync::Semaphore::new(
                forwarding::CONNECTION_BUDGET_KIB,
            )),
            logged_in,
            _open: telemetry::connection_opened(),
        }
    }

    /// The first authentication request ends the accept phase.
    fn auth_requested(&mut self) {
        if let Some(span) = self.accept_phase.take() {
            telemetry::setup_phase(Phase::Accept, self.accepted.elapsed());
            drop(span);
        }
    }

    /// The span of one authentication attempt.
    fn auth_span(&self, method: &'static str, user: &str) -> tracing::Span {
        tracing::info_span!(
            parent: &self.span,
            "auth",
            method,
            user,
            cache = Empty,
            delay_ms = Empty,
            authenticator_seconds = Empty,
            result = Empty
        )
    }

    fn parse_login(&self, login: &str, method: &str) -> Option<LoginName> {
        match LoginName::parse(login) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(conn = self.id, peer = %self.peer, method, login = %login.escape_debug(), "login refused: {e}");
                None
            }
        }
    }

    fn accept(
        &mut self,
        login: LoginName,
        method: &'static str,
        cache: &str,
        started: Instant,
    ) -> Auth {
        telemetry::auth_attempt(method, true);
        telemetry::setup_phase(Phase::Auth, started.elapsed());
        tracing::Span::current().record("result", "accepted");
        self.span.record("user", login.user.as_str());
        self.span
            .record("environment", login.environment.as_deref().unwrap_or(""));
        self.span.record("method", method);
        tracing::info!(
            conn = self.id,
            peer = %self.peer,
            user = %login.user,
            environment = login.environment.as_deref().unwrap_or("(default)"),
            method,
            cache,
            auth_ms = started.elapsed().as_millis() as u64,
            "authenticated"
        );
        self.login = Some(login);
        self.logged_in.send_replace(true);
        Auth::Accept
    }

    fn reject(&self, login: &LoginName, method: &'static str, why: &str) -> Auth {
        telemetry::auth_attempt(method, false);
        tracing::Span::current().record("result", "rejected");
        // The reason stays in the log; the client learns only "denied".
        tracing::warn!(conn = self.id, peer = %self.peer, user = %login.user, method, "authentication failed: {why}");
        Auth::reject()
    }

    /// What channel and forwarding tasks need, once authenticated.
    fn context(&self, session: &Session) -> Option<Context> {
        Some(Context {
            shared: self.shared.clone(),
            login: self.login.clone()?,
            conn: self.id,
            handle: session.handle(),
            span: self.span.clone(),
            budget: self.forward_budget.clone(),
            slots: self.forward_slots.clone(),
        })
    }

    fn key_allowed(&self, user: &str, key: &PublicKey) -> bool {
        self.shared
            .users
            .current()
            .get(user)
            .is_some_and(|u| u.keys.iter().any(|k| k.key_data() == key.key_data()))
    }

    /// Runs inside the attempt's `auth` span.
    async fn check_password(
        &mut self,
        login: LoginName,
        password: &str,
        method: &'static str,
    ) -> Auth {
        let started = Instant::now();
        let limiter = &self.shared.limiter;
        let (delay, failures) = match limiter.check(self.ip, &login.user).await {
            Verdict::Allowed { delay, failures } => (delay, failures),
            // Not counted: knocking while blocked must not prolong the block.
            Verdict::Blocked(why) => {
                return self.reject(&login, method, &format!("blocked before checking: {why}"))
            }
        };
        if !delay.is_zero() {
            tracing::Span::current().record("delay_ms", delay.as_millis() as u64);
            tokio::time::sleep(delay).await;
        }
        let users = self.shared.users.current();
        let stored = users.get(&login.user).and_then(|u| u.password_hash.clone());
        // An unknown user, or one without a password, takes the same steps as a
        // wrong password (cache lookup, one argon2 verification) against a dummy
        // hash, so the time taken does not tell which accounts exist.
        let checked = stored
            .clone()
            .or_else(|| crate::users::dummy_hash().map(str::to_owned));
        let lookup = match &checked {
            Some(hash) => self.shared.cache.lookup(&login.user, password, hash).await,
            None => Lookup::Miss,
        };
        telemetry::auth_cache_lookup(lookup.as_str());
        tracing::Span::current().record("cache", lookup.as_str());
        if let (Lookup::Hit, Some(_)) = (lookup, &stored) {
            if failures {
                limiter.success(self.ip, &login.user).await;
            }
            return self.accept(login, method, lookup.as_str(), started);
        }
        let (pw, h) = (password.to_string(), stored.clone());
        let verifying = Instant::now();
        let ok =
            tokio::task::spawn_blocking(move || crate::users::password_matches(h.as_deref(), &pw))
                .await
                .unwrap_or(false);
        tracing::Span::current().record("authenticator_seconds", verifying.elapsed().as_secs_f64());
        let known = stored.is_some();
        let Some(hash) = stored.filter(|_| ok) else {
            limiter.failure(self.ip, &login.user).await;
            let why = if known {
                "wrong password"
            } else {
                "no such user or no password set"
            };
            return self.reject(&login, method, why);
        };
        if failures {
            limiter.success(self.ip, &login.user).await;
        }
        self.shared.cache.store(&login.user, password, &hash).await;
        self.accept(login, method, lookup.as_str(), started)
    }
}

impl russh::server::Handler for Connection {
    type Error = anyhow::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        self.auth_requested();
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        self.auth_requested();
        let Some(login) = self.parse_login(user, "password") else {
            return Ok(Auth::reject());
        };
        let span = self.auth_span("password", &login.user);
        Ok(self
            .check_password(login, password, "password")
            .instrument(span)
            .await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.auth_requested();
        let Ok(login) = LoginName::parse(user) else {
            return Ok(Auth::reject());
        };
        if self.key_allowed(&login.user, offer.public_key) {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.auth_requested();
        let started = Instant::now();
        let Some(login) = self.parse_login(user, "publickey") else {
            return Ok(Auth::reject());
        };
        let _span = self.auth_span("publickey", &login.user).entered();
        if self.key_allowed(&login.user, key.public_key) {
            Ok(self.accept(login, "publickey", "n/a", started))
        } else {
            Ok(self.reject(&login, "publickey", "key not authorized"))
        }
    }

    /// Keyboard-interactive asks for the password, and is also how a student
    /// with a malformed username gets told what is wrong with it: the SSH
    /// protocol has no other way to show text before authentication.
    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.auth_requested();
        let login = match LoginName::parse(user) {
            Ok(l) => l,
            Err(e) => {
                if response.is_some() {
                    return Ok(Auth::reject());
                }
                tracing::warn!(conn = self.id, peer = %self.peer, login = %user.escape_debug(), "login refused: {e}");
                return Ok(Auth::Partial {
                    name: Cow::Borrowed("labssh"),
                    instructions: Cow::Owned(format!("labssh: {e}")),
                    prompts: Cow::Borrowed(&[]),
                });
            }
        };
        match response {
            None => Ok(Auth::Partial {
                name: Cow::Borrowed(""),
                instructions: Cow::Borrowed(""),
                prompts: Cow::Owned(vec![(Cow::Borrowed("Password: "), false)]),
            }),
            Some(mut answers) => {
                let password = answers
                    .next()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let span = self.auth_span("keyboard-interactive", &login.user);
                Ok(self
                    .check_password(login, &password, "keyboard-interactive")
                    .instrument(span)
                    .await)
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(ctx) = self.context(session) else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        if self.channels >= MAX_SESSION_CHANNELS {
            tracing::warn!(conn = self.id, user = %ctx.login.user, "too many session channels");
            reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        }
        self.channels += 1;
        self.env.insert(channel.id(), EnvRequests::default());
        reply.accept().await;
        // Login time is measured to the connection's first process only.
        let accepted = (self.channels == 1).then_some(self.accepted);
        tokio::spawn(session_channel::run(channel, ctx, accepted));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _px_w: u32,
        _px_h: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The channel task applies the same rule to what it forwards.
        let Some(requests) = self.env.get_mut(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        match requests.offer(&self.shared.config, name, value) {
            Ok(()) => session.channel_success(channel)?,
            Err(refusal) => {
                if requests.first_to_log(refusal) {
                    tracing::warn!(
                        conn = self.id,
                        peer = %self.peer,
                        ?channel,
                        "env request refused ({refusal}); later ones on this channel are refused without a log line"
                    );
                }
                session.channel_failure(channel)?;
            }
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.env.remove(&channel);
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The channel task starts it; the agent picks the image's sftp-server or the
        // built-in one.
        if name == "sftp" {
            session.channel_success(channel)?;
        } else {
            tracing::info!(
                conn = self.id,
                subsystem = name,
                "unknown subsystem refused"
            );
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(ctx) = self.context(session) else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let Ok(slot) = self.forward_slots.clone().try_acquire_owned() else {
            tracing::warn!(conn = self.id, "too many forwarded connections");
            reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
            return Ok(());
        };
        let (host, originator) = (
            host_to_connect.to_owned(),
            format!("{originator_address}:{originator_port}"),
        );
        tokio::spawn(async move {
            forwarding::direct_tcpip(ctx, channel, reply, host, port_to_connect, originator).await;
            drop(slot);
        });
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(ctx) = self.context(session) else {
            return Ok(false);
        };
        // Runs on the connection's loop: the reply must carry the bound port.
        match forwarding::tcpip_forward(ctx, self.remote.clone(), address.to_owned(), *port).await {
            Ok(bound) => {
                *port = bound;
                Ok(true)
            }
            Err(message) => {
                tracing::info!(conn = self.id, %address, port = *port, "remote forward refused: {message}");
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.remote.cancel(address, port))
    }
}
