//! The SSH client side: reaching a target, logging in, and turning russh
//! errors into failure kinds.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use russh::client::{self, DisconnectReason, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::Disconnect;

use crate::phases::{Failure, FailureKind, Phase, Timings};
use crate::target::{Credential, Target};

/// How a client proves who it is; loaded once and shared by every client.
pub enum Auth {
    Password(String),
    Key(Arc<PrivateKey>),
}

/// A target ready to be connected to, many times over.
pub struct Endpoint {
    pub target: Target,
    /// Resolved once so DNS is not part of the measurement.
    pub addr: SocketAddr,
    auth: Auth,
    config: Arc<client::Config>,
    /// Upper bound for each phase of each attempt.
    pub phase_timeout: Duration,
}

impl Endpoint {
    /// Resolves the address and loads the key; errors here stop the run
    /// before anything is measured.
    pub async fn prepare(target: &Target, phase_timeout: Duration) -> anyhow::Result<Endpoint> {
        let address = target.address();
        let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .with_context(|| format!("target {}: cannot resolve {address}", target.name))?
            .next()
            .with_context(|| format!("target {}: {address} has no address", target.name))?;
        let auth = match &target.credential {
            Credential::Password(password) => Auth::Password(password.clone()),
            Credential::Key(path) => {
                let key = russh::keys::load_secret_key(path, None).with_context(|| {
                    format!(
                        "target {}: cannot load the private key {} (it must be an unencrypted OpenSSH key)",
                        target.name,
                        path.display()
                    )
                })?;
                Auth::Key(Arc::new(key))
            }
        };
        let config = client::Config {
            // Small writes (keystrokes, exec requests) must not wait for Nagle.
            nodelay: true,
            ..Default::default()
        };
        Ok(Endpoint {
            target: target.clone(),
            addr,
            auth,
            config: Arc::new(config),
            phase_timeout,
        })
    }

    /// TCP connect, key exchange and authentication, each timed into `timings`.
    pub async fn login(&self, user: &str, timings: &mut Timings) -> Result<Session, Failure> {
        let stream = self
            .phase(Phase::TcpConnect, tokio::net::TcpStream::connect(self.addr))
            .await?
            .map_err(|e| io_failure(Phase::TcpConnect, &e))?;
        let _ = stream.set_nodelay(true);
        timings.lap(Phase::TcpConnect);

        let handler = Client::default();
        let said = handler.server_said.clone();
        let mut handle = self
            .phase(
                Phase::Kex,
                client::connect_stream(self.config.clone(), stream, handler),
            )
            .await?
            .map_err(|e| ssh_failure(Phase::Kex, &e, &said))?;
        timings.lap(Phase::Kex);

        let result = match &self.auth {
            Auth::Password(password) => {
                self.phase(Phase::Auth, handle.authenticate_password(user, password))
                    .await?
            }
            Auth::Key(key) => {
                let hash = if key.algorithm().is_rsa() {
                    self.phase(Phase::Auth, handle.best_supported_rsa_hash())
                        .await?
                        .map_err(|e| ssh_failure(Phase::Auth, &e, &said))?
                        .flatten()
                } else {
                    None
                };
                let key = PrivateKeyWithHashAlg::new(key.clone(), hash);
                self.phase(Phase::Auth, handle.authenticate_publickey(user, key))
                    .await?
            }
        }
        .map_err(|e| ssh_failure(Phase::Auth, &e, &said))?;
        if !result.success() {
            return Err(Failure::new(
                FailureKind::AuthFailed,
                Phase::Auth,
                format!("the server rejected the credentials for user '{user}'"),
            ));
        }
        timings.lap(Phase::Auth);
        Ok(Session { handle, said })
    }

    /// Runs one phase under the phase timeout.
    pub async fn phase<F: Future>(&self, phase: Phase, work: F) -> Result<F::Output, Failure> {
        tokio::time::timeout(self.phase_timeout, work)
            .await
            .map_err(|_| {
                Failure::new(
                    FailureKind::Timeout,
                    phase,
                    format!("no answer within {:?}", self.phase_timeout),
                )
            })
    }
}

/// An authenticated connection.
pub struct Session {
    pub handle: Handle<Client>,
    /// What the server gave as its reason if it disconnected us.
    said: Arc<Mutex<Option<String>>>,
}

impl Session {
    pub async fn open_channel(
        &self,
        endpoint: &Endpoint,
    ) -> Result<russh::Channel<client::Msg>, Failure> {
        endpoint
            .phase(Phase::ChannelOpen, self.handle.channel_open_session())
            .await?
            .map_err(|e| self.failure(Phase::ChannelOpen, &e))
    }

    pub fn failure(&self, phase: Phase, error: &russh::Error) -> Failure {
        ssh_failure(phase, error, &self.said)
    }

    /// Sends a disconnect and waits for the connection to end.
    pub async fn close(self, endpoint: &Endpoint) -> Result<(), Failure> {
        let Session { handle, said } = self;
        endpoint
            .phase(Phase::Close, async move {
                // Errors here mean the connection is already gone, which is the goal.
                let _ = handle.disconnect(Disconnect::ByApplication, "", "en").await;
                let _ = handle.await;
            })
            .await?;
        drop(said);
        Ok(())
    }
}

/// The russh handler: it accepts any host key (a load test measures, it
/// does not guard secrets) and remembers why the server hung up.
#[derive(Default)]
pub struct Client {
    server_said: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn disconnected(
        &mut self,
        reason: DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        match reason {
            DisconnectReason::ReceivedDisconnect(info) => {
                let text = format!(
                    "server disconnected: {:?} {}",
                    info.reason_code, info.message
                );
                if let Ok(mut said) = self.server_said.lock() {
                    *said = Some(text);
                }
                Ok(())
            }
            DisconnectReason::Error(e) => Err(e),
        }
    }
}

fn io_failure(phase: Phase, e: &std::io::Error) -> Failure {
    use std::io::ErrorKind::*;
    let kind = match e.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted => FailureKind::Refused,
        TimedOut => FailureKind::Timeout,
        // Unreachable networks and hosts: the target cannot be reached at all.
        _ if phase == Phase::TcpConnect => FailureKind::Refused,
        _ => FailureKind::Other,
    };
    Failure::new(kind, phase, e.to_string())
}

/// Classifies a russh error met in `phase`.
pub fn ssh_failure(phase: Phase, e: &russh::Error, said: &Mutex<Option<String>>) -> Failure {
    use russh::Error as E;
    let before_auth = matches!(phase, Phase::TcpConnect | Phase::Kex);
    let lost = |what: String| {
        let kind = if before_auth {
            FailureKind::Refused
        } else {
            FailureKind::Disconnected
        };
        Failure::new(kind, phase, what)
    };
    let server_said = said.lock().ok().and_then(|s| s.clone());
    match e {
        E::IO(io) => match io.kind() {
            std::io::ErrorKind::TimedOut => {
                Failure::new(FailureKind::Timeout, phase, io.to_string())
            }
            _ => lost(server_said.unwrap_or_else(|| io.to_string())),
        },
        E::Disconnect | E::HUP | E::SendError | E::RecvError | E::Join(_) => {
            lost(server_said.unwrap_or_else(|| "connection closed by the server".into()))
        }
        E::ConnectionTimeout | E::KeepaliveTimeout | E::InactivityTimeout | E::Elapsed(_) => {
            Failure::new(FailureKind::Timeout, phase, e.to_string())
        }
        E::ChannelOpenFailure(reason) => Failure::new(
            FailureKind::ChannelFailed,
            phase,
            format!("channel open rejected: {reason:?}"),
        ),
        E::NotAuthenticated | E::NoAuthMethod | E::UnsupportedAuthMethod => {
            Failure::new(FailureKind::AuthFailed, phase, e.to_string())
        }
        _ if before_auth => Failure::new(FailureKind::HandshakeFailed, phase, e.to_string()),
        _ => Failure::new(FailureKind::Other, phase, e.to_string()),
    }
}
