//! Authentication decisions: whether an attempt logs the client in, and how
//! it is answered.
//!
//! Passwords (also the password keyboard-interactive prompts for) pass the
//! brute-force limits, then for each authenticator of `auth.chain` in turn
//! the credential cache and the authenticator ([`password`], [`chain`]);
//! public keys are asked of the chain likewise, and OpenSSH user
//! certificates of the trusted CAs ([`certificate`]). Each accepting authenticator
//! answers with the student's [`identity::Identity`]: groups, ids, and what a
//! certificate restricts.
//! Keyboard-interactive is also how a student with a malformed username is
//! told what is wrong with it: SSH has no other way to show text before
//! authentication. The reason for a refusal stays in the log; the client
//! learns only "denied". The russh handler only translates an [`Outcome`].

use std::net::IpAddr;
use std::time::Instant;

use labssh_telemetry::metrics::{self as telemetry, Phase};
use russh::keys::{Certificate, PublicKey};
use tracing::field::Empty;
use tracing::Instrument;

use crate::login_name::LoginName;
use crate::state::Shared;

pub(crate) mod certificate;
pub(crate) mod chain;
pub(crate) mod identity;
pub(crate) mod ldap;
mod password;
pub(crate) mod users_file;
pub(crate) mod webhook;

use chain::{Decision, Request};
use identity::Identity;

/// One authentication request, as the client sent it.
pub(crate) struct Attempt {
    /// The login name as sent (`alice` or `alice+env`).
    pub user: String,
    /// What it offers.
    pub credential: Credential,
}

/// What an authentication request offers.
pub(crate) enum Credential {
    /// The "none" method: what may I use?
    None,
    /// A password.
    Password(String),
    /// A public key offered, not yet proven.
    KeyOffered(PublicKey),
    /// A public key whose possession the client proved.
    Key(PublicKey),
    /// An OpenSSH certificate whose key's possession the client proved, its
    /// own signature and validity window checked by russh.
    Certificate(Box<Certificate>),
    /// Keyboard-interactive: first without an answer, then with the answer
    /// to the password prompt.
    KeyboardInteractive(Option<String>),
}

impl Credential {
    /// Whether a rejection of it counts towards `max_auth_tries`, as in
    /// OpenSSH: every method but "none", and keyboard-interactive only once
    /// answered.
    pub fn counts_as_failure(&self) -> bool {
        !matches!(
            self,
            Credential::None | Credential::KeyboardInteractive(None)
        )
    }
}

/// What to tell the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Logged in, as this identity. The login's environment is the one the
    /// student asked for, or the authenticator's override.
    LoggedIn(LoginName, Identity),
    /// The offered key would do: the client may go on and prove it holds it.
    KeyAcceptable,
    /// Denied.
    Rejected,
    /// Denied because an authenticator could not be asked: not the
    /// student's fault, so not counted towards `max_auth_tries`.
    Unavailable,
    /// Keyboard-interactive: ask for the password.
    AskPassword,
    /// Keyboard-interactive: tell the student why their login name is
    /// refused; the text is safe to show.
    Explain(String),
}

/// The client an attempt comes from: what decisions are logged, limited and
/// traced by. Lives as long as the connection.
pub(crate) struct Client {
    /// Connection number, for logs.
    pub conn: u64,
    /// The client's address, for logs.
    pub peer: String,
    /// The client's IP (from the PROXY header when behind a balancer), for
    /// brute-force limits.
    pub ip: Option<IpAddr>,
    /// The connection's `ssh` span: the parent of each attempt's `auth` span,
    /// and where the login is recorded.
    pub span: tracing::Span,
    /// Set when an attempt found the login service unavailable, so the next
    /// keyboard-interactive prompt can say so (a password attempt has no way
    /// to show text).
    pub unavailable: std::sync::atomic::AtomicBool,
    /// Where logins and failed ones are recorded.
    pub audit: crate::audit::Audit,
}

impl Client {
    /// Decides one attempt.
    pub async fn decide(&self, shared: &Shared, attempt: Attempt) -> Outcome {
        let user = &attempt.user;
        match attempt.credential {
            Credential::None => Outcome::Rejected,
            Credential::Password(password) => {
                self.password(shared, user, &password, "password").await
            }
            Credential::KeyOffered(key) => match LoginName::parse(user) {
                Ok(login) => self.offer(shared, &login, &key).await,
                Err(_) => Outcome::Rejected,
            },
            Credential::Key(key) => {
                let Some(login) = self.parse_login(user, "publickey") else {
                    return Outcome::Rejected;
                };
                let span = self.auth_span("publickey", &login.user);
                self.key(shared, login, &key).instrument(span).await
            }
            Credential::Certificate(cert) => {
                let Some(login) = self.parse_login(user, "publickey") else {
                    return Outcome::Rejected;
                };
                let span = self.auth_span("publickey", &login.user);
                self.certificate(shared, login, &cert)
                    .instrument(span)
                    .await
            }
            Credential::KeyboardInteractive(answer) => {
                self.keyboard_interactive(shared, user, answer).await
            }
        }
    }

    /// A password, for `method`: in its own `auth` span.
    async fn password(
        &self,
        shared: &Shared,
        user: &str,
        password: &str,
        method: &'static str,
    ) -> Outcome {
        let Some(login) = self.parse_login(user, method) else {
            return Outcome::Rejected;
        };
        let span = self.auth_span(method, &login.user);
        self.check_password(shared, login, password, method)
            .instrument(span)
            .await
    }

    /// The answer to an offered key, before the client proves it holds it.
    ///
    /// russh offers a certificate's key as a plain key, with no sign that a
    /// certificate follows. So when CAs are trusted, a key no authenticator
    /// knows is accepted as an offer all the same: it may be a
    /// certificate's, and the certificate is checked once proven. The cost
    /// is small — a client with unknown keys signs with each before hearing
    /// "no", and offers no longer tell which of its keys an account lists —
    /// and every accepted offer still has to pass [`Client::key`] or
    /// [`Client::certificate`]. A revoked key is refused at once.
    async fn offer(&self, shared: &Shared, login: &LoginName, key: &PublicKey) -> Outcome {
        if shared.trust.key_revoked(key.key_data()).is_some() {
            return Outcome::Rejected;
        }
        let request = self.request(login, "publickey");
        if shared.auth.key_acceptable(shared, &request, key).await || shared.trust.has_cas() {
            Outcome::KeyAcceptable
        } else {
            Outcome::Rejected
        }
    }

    /// A proven key, asked of the chain unless revoked. Runs inside the
    /// attempt's span.
    async fn key(&self, shared: &Shared, login: LoginName, key: &PublicKey) -> Outcome {
        let started = Instant::now();
        if let Some(why) = shared.trust.key_revoked(key.key_data()) {
            return self.reject(&login, "publickey", &why);
        }
        let decision = {
            let request = self.request(&login, "publickey");
            shared.auth.key(shared, &request, key).await
        };
        match decision {
            Decision::Accept(identity) => self.accept(login, identity, "publickey", "n/a", started),
            Decision::Reject(why) => self.reject(&login, "publickey", &why),
            Decision::Unavailable(why) => self.unavailable(&login, "publickey", &why),
        }
    }

    /// A proven certificate: the trusted CAs decide, the chain's directories
    /// say who the student is (groups, ids) if they know them. Runs inside
    /// the attempt's span.
    ///
    /// A directory that cannot be asked makes the login unavailable rather
    /// than in with no groups: groups and ids decide environments and file
    /// ownership, and a login without them would look like the wrong account.
    async fn certificate(&self, shared: &Shared, login: LoginName, cert: &Certificate) -> Outcome {
        let started = Instant::now();
        let restrictions = match shared.trust.check(cert, &login.user, self.ip) {
            Ok(restrictions) => restrictions,
            Err(why) => return self.reject(&login, "publickey", &why),
        };
        let decision = {
            let request = self.request(&login, "publickey");
            shared.auth.lookup(shared, &request).await
        };
        let mut identity = match decision {
            Decision::Accept(identity) => identity,
            Decision::Reject(_) => Identity::from(certificate::NAME),
            Decision::Unavailable(why) => {
                return self.unavailable(
                    &login,
                    "publickey",
                    &format!("certificate valid, but {why}"),
                )
            }
        };
        identity.source = certificate::NAME.to_owned();
        identity.restrictions = restrictions;
        tracing::info!(
            conn = self.conn,
            user = %login.user,
            key_id = %cert.key_id().escape_debug(),
            serial = cert.serial(),
            restrictions = ?identity.restrictions,
            "certificate accepted"
        );
        self.accept(login, identity, "publickey", "n/a", started)
    }

    /// What the chain is told of an attempt.
    fn request<'a>(&'a self, login: &'a LoginName, method: &'static str) -> Request<'a> {
        Request {
            user: &login.user,
            environment: login.environment.as_deref(),
            method,
            client: &self.peer,
        }
    }

    async fn keyboard_interactive(
        &self,
        shared: &Shared,
        user: &str,
        answer: Option<String>,
    ) -> Outcome {
        if let Err(e) = LoginName::parse(user) {
            if answer.is_some() {
                return Outcome::Rejected;
            }
            tracing::warn!(conn = self.conn, peer = %self.peer, login = %user.escape_debug(), "login refused: {e}");
            return Outcome::Explain(format!("labssh: {e}"));
        }
        use std::sync::atomic::Ordering::Relaxed;
        match answer {
            // Asked again after the login service was found unavailable:
            // say so, once.
            None if self.unavailable.swap(false, Relaxed) => self.explain_unavailable(),
            None => Outcome::AskPassword,
            Some(password) => {
                match self
                    .password(shared, user, &password, "keyboard-interactive")
                    .await
                {
                    Outcome::Unavailable => {
                        self.unavailable.store(false, Relaxed);
                        self.explain_unavailable()
                    }
                    outcome => outcome,
                }
            }
        }
    }

    /// Tells the student the login service is unavailable; their client
    /// acknowledges with no answer at all, which the handler takes for no
    /// credential (`Credential::None`).
    fn explain_unavailable(&self) -> Outcome {
        Outcome::Explain(chain::UNAVAILABLE.to_owned())
    }

    fn parse_login(&self, login: &str, method: &str) -> Option<LoginName> {
        match LoginName::parse(login) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(conn = self.conn, peer = %self.peer, method, login = %login.escape_debug(), "login refused: {e}");
                None
            }
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

    /// Runs inside the attempt's `auth` span. An identity's environment
    /// overrides the login name's.
    fn accept(
        &self,
        mut login: LoginName,
        identity: Identity,
        method: &'static str,
        cache: &str,
        started: Instant,
    ) -> Outcome {
        if let Some(environment) = &identity.environment {
            // A credential bound to one environment (an exam's) lands there, also
            // from the self-service login.
            login.environment = Some(environment.clone());
            login.helpdesk = false;
        }
        telemetry::auth_attempt(method, true);
        telemetry::setup_phase(Phase::Auth, started.elapsed());
        tracing::Span::current().record("result", "accepted");
        self.span.record("user", login.user.as_str());
        self.span
            .record("environment", login.environment.as_deref().unwrap_or(""));
        self.span.record("method", method);
        tracing::info!(
            conn = self.conn,
            peer = %self.peer,
            user = %login.user,
            environment = login.environment.as_deref().unwrap_or("(default)"),
            method,
            authenticator = %identity.source,
            groups = ?identity.groups,
            cache,
            auth_ms = started.elapsed().as_millis() as u64,
            "authenticated"
        );
        let mut line = self.audit_fields(&login, method);
        line["authenticator"] = identity.source.to_string().into();
        line["cache"] = cache.into();
        self.audit.record("login", line);
        Outcome::LoggedIn(login, identity)
    }

    /// Runs inside the attempt's `auth` span: no authenticator accepted and
    /// one could not be asked.
    fn unavailable(&self, login: &LoginName, method: &'static str, why: &str) -> Outcome {
        telemetry::auth_attempt(method, false);
        tracing::Span::current().record("result", "unavailable");
        self.unavailable
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(conn = self.conn, peer = %self.peer, user = %login.user, method, "authentication failed, the login service is unavailable: {why}");
        self.audit_failure(login, method, "the login service is unavailable");
        Outcome::Unavailable
    }

    /// Runs inside the attempt's `auth` span.
    fn reject(&self, login: &LoginName, method: &'static str, why: &str) -> Outcome {
        telemetry::auth_attempt(method, false);
        tracing::Span::current().record("result", "rejected");
        // The reason stays in the log; the client learns only "denied".
        tracing::warn!(conn = self.conn, peer = %self.peer, user = %login.user, method, "authentication failed: {why}");
        self.audit_failure(login, method, why);
        Outcome::Rejected
    }

    /// A failed login in the audit log: the name tried, never what was offered.
    fn audit_failure(&self, login: &LoginName, method: &'static str, why: &str) {
        let mut line = self.audit_fields(login, method);
        line["reason"] = why.into();
        self.audit.record("login_failed", line);
    }

    /// What every login line of the audit log says: the connection, where from,
    /// the login name and the method.
    fn audit_fields(&self, login: &LoginName, method: &'static str) -> serde_json::Value {
        serde_json::json!({
            "conn": self.conn,
            "client": self.peer,
            "user": login.user,
            "environment": login.environment.as_deref().unwrap_or(""),
            "method": method,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use labssh_proto::tls::TlsFiles;

    use super::*;
    use crate::config::Config;
    use crate::credential_cache::CredentialCache;
    use crate::rate_limit::RateLimiter;
    use crate::upstream::Upstream;
    use crate::users::{self, Users};

    const BOB_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGnr8Zs2q3JYsUXtSRu7Q6ibJ2oJL6Uq8fJ7t0U6oZ4V bob@laptop";

    /// A replica whose users file holds alice (password "secret") and bob
    /// (a key, no password).
    fn shared(dir: &Path) -> Shared {
        let users_file = dir.join("users.toml");
        users::add_user(&users_file, "alice", Some("secret"), None).unwrap();
        users::add_user(&users_file, "bob", None, Some(BOB_KEY)).unwrap();
        let config = Config::default();
        let ttl = Duration::from_secs(60);
        Shared {
            users: Users::open(&users_file).unwrap(),
            cache: CredentialCache::memory(vec![7; 32], ttl),
            limiter: RateLimiter::new(config.rate_limit.clone(), None),
            redis: None,
            upstream: Upstream::new("http://127.0.0.1:1", TlsFiles::default(), ttl, ttl).unwrap(),
            next_id: AtomicU64::new(1),
            gate: crate::preauth::Gate::new(&config),
            refusals: Default::default(),
            auth: crate::auth::chain::Chain::new(&config.auth).unwrap(),
            trust: crate::auth::certificate::Trust::none(),
            audit: Default::default(),
            recorder: Default::default(),
            live: crate::live::Live::new("test:22"),
            config,
        }
    }

    fn client() -> Client {
        Client {
            conn: 1,
            peer: "192.0.2.1:50000".into(),
            ip: Some(Ipv4Addr::new(192, 0, 2, 1).into()),
            span: tracing::Span::none(),
            unavailable: Default::default(),
            audit: Default::default(),
        }
    }

    fn attempt(user: &str, credential: Credential) -> Attempt {
        Attempt {
            user: user.into(),
            credential,
        }
    }

    fn password(p: &str) -> Credential {
        Credential::Password(p.into())
    }

    #[tokio::test]
    async fn passwords_and_keys_decide_logins() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, client) = (shared(dir.path()), client());
        let decide = |user: &str, credential| client.decide(&shared, attempt(user, credential));
        let alice = LoginName::parse("alice").unwrap();
        let from_file = || Identity::from("users_file");
        assert_eq!(
            decide("alice", password("secret")).await,
            Outcome::LoggedIn(alice.clone(), from_file())
        );
        // Again, from the credential cache.
        assert_eq!(
            decide("alice", password("secret")).await,
            Outcome::LoggedIn(alice, from_file())
        );
        assert_eq!(
            decide("alice+gpu", password("secret")).await,
            Outcome::LoggedIn(LoginName::parse("alice+gpu").unwrap(), from_file())
        );
        for (user, pw) in [
            ("alice", "wrong"),
            ("mallory", "secret"),
            ("bob", ""),
            ("Alice", "secret"),
        ] {
            assert_eq!(
                decide(user, password(pw)).await,
                Outcome::Rejected,
                "{user}"
            );
        }
        let key = users::parse_authorized_key(BOB_KEY).unwrap();
        assert_eq!(
            decide("bob", Credential::KeyOffered(key.clone())).await,
            Outcome::KeyAcceptable
        );
        assert_eq!(
            decide("bob", Credential::Key(key.clone())).await,
            Outcome::LoggedIn(LoginName::parse("bob").unwrap(), from_file())
        );
        assert_eq!(
            decide("alice", Credential::KeyOffered(key.clone())).await,
            Outcome::Rejected
        );
        assert_eq!(
            decide("alice", Credential::Key(key)).await,
            Outcome::Rejected
        );
        assert_eq!(decide("alice", Credential::None).await, Outcome::Rejected);
    }

    #[tokio::test]
    async fn with_cas_unknown_offers_go_on_and_revoked_keys_never_do() {
        const CA: &str =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOR+GHWBGNtuepwM3L7sK2PCSkM31koh7WatGmq0+Jzy ca";
        const OTHER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIB6Z/MuVYIgWqi/Bhm47okyLKaqINKJmWKmfTkfapTg carol";
        let dir = tempfile::tempdir().unwrap();
        let (mut shared, client) = (shared(dir.path()), client());
        let bob_key = users::parse_authorized_key(BOB_KEY).unwrap();
        let other = users::parse_authorized_key(OTHER).unwrap();
        let offer = |k: &PublicKey| Credential::KeyOffered(k.clone());
        // Without a CA, an unknown key's offer is refused.
        assert_eq!(
            client
                .decide(&shared, attempt("carol", offer(&other)))
                .await,
            Outcome::Rejected
        );
        std::fs::write(dir.path().join("ca.pub"), CA).unwrap();
        std::fs::write(dir.path().join("revoked"), format!("{BOB_KEY}\n")).unwrap();
        let auth = crate::config::auth::AuthConfig {
            trusted_user_ca_keys: vec![dir.path().join("ca.pub")],
            revoked_keys: Some(dir.path().join("revoked")),
            ..Default::default()
        };
        shared.trust = certificate::Trust::new(&auth).unwrap();
        // It may be a certificate's key: go on (the certificate decides).
        assert_eq!(
            client
                .decide(&shared, attempt("carol", offer(&other)))
                .await,
            Outcome::KeyAcceptable
        );
        // But proven as a plain key, nobody knows it.
        assert_eq!(
            client
                .decide(&shared, attempt("carol", Credential::Key(other)))
                .await,
            Outcome::Rejected
        );
        // bob's key is in the users file and revoked: refused, offered or proven.
        assert_eq!(
            client
                .decide(&shared, attempt("bob", offer(&bob_key)))
                .await,
            Outcome::Rejected
        );
        assert_eq!(
            client
                .decide(&shared, attempt("bob", Credential::Key(bob_key)))
                .await,
            Outcome::Rejected
        );
    }

    #[test]
    fn every_method_but_the_probes_counts_towards_max_auth_tries() {
        let key = users::parse_authorized_key(BOB_KEY).unwrap();
        assert!(!Credential::None.counts_as_failure());
        assert!(!Credential::KeyboardInteractive(None).counts_as_failure());
        for counted in [
            password("wrong"),
            Credential::KeyOffered(key.clone()),
            Credential::Key(key),
            Credential::KeyboardInteractive(Some("wrong".into())),
        ] {
            assert!(counted.counts_as_failure());
        }
    }

    #[tokio::test]
    async fn keyboard_interactive_asks_for_the_password_and_explains_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, client) = (shared(dir.path()), client());
        let decide = |user: &str, answer: Option<&str>| {
            let answer = answer.map(str::to_owned);
            client.decide(
                &shared,
                attempt(user, Credential::KeyboardInteractive(answer)),
            )
        };
        assert_eq!(decide("alice", None).await, Outcome::AskPassword);
        assert_eq!(
            decide("alice", Some("secret")).await,
            Outcome::LoggedIn(
                LoginName::parse("alice").unwrap(),
                Identity::from("users_file")
            )
        );
        assert_eq!(decide("alice", Some("wrong")).await, Outcome::Rejected);
        assert_eq!(
            decide("al!ce", None).await,
            Outcome::Explain(format!(
                "labssh: {}",
                crate::login_name::LoginNameError::User
            ))
        );
        assert_eq!(decide("al!ce", Some("secret")).await, Outcome::Rejected);
    }
}
