//! The authenticators an operator orders in `auth.chain`, asked in turn.
//!
//! Each answers an attempt with an [`Answer`]. The chain's rule is PAM's
//! "sufficient": the first authenticator that accepts logs the student in;
//! one that rejects or does not know the user passes the attempt on. Only
//! when none accepts is the attempt refused, and then as "the login service
//! is unavailable" if one of them could not be asked, so a student whose
//! directory is down is not told their password is wrong. The brute-force
//! limits and the credential cache sit in front of the whole chain
//! (`super::password`), so they behave the same for every authenticator.

use russh::keys::PublicKey;

use super::identity::Identity;
use super::{ldap, users_file, webhook};
use crate::config::auth::{AuthConfig, AuthenticatorKind};
use crate::state::Shared;

/// One authenticator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The credential is good: this is who the student is.
    Accept(Identity),
    /// The user is known here and the credential is wrong (for the log).
    Reject(String),
    /// This authenticator does not know the user, or holds no credential
    /// of this kind for them.
    Unknown,
    /// This authenticator could not be asked (for the log; the student
    /// reads [`UNAVAILABLE`]).
    Unavailable(String),
}

impl Answer {
    /// Its label on `labssh_auth_authenticator_seconds`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Answer::Accept(_) => "accept",
            Answer::Reject(_) => "reject",
            Answer::Unknown => "unknown",
            Answer::Unavailable(_) => "unavailable",
        }
    }
}

/// What a student reads when no authenticator accepted and one could not
/// be asked.
pub(crate) const UNAVAILABLE: &str =
    "labssh: the login service is unavailable; try again in a minute";

/// What an attempt is, beside its credential: for authenticators that pass
/// it on (the webhook) and for logs.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    /// The account (the login name without `+env`).
    pub user: &'a str,
    /// The environment the login name asks for, if any.
    pub environment: Option<&'a str>,
    /// `password`, `keyboard-interactive` or `publickey`.
    pub method: &'static str,
    /// The client's address (the PROXY header's behind a balancer).
    pub client: &'a str,
}

/// One configured authenticator.
pub(crate) enum Authenticator {
    /// The proxy's users file (`users_file`).
    UsersFile,
    /// A directory (`[auth.ldap]`).
    Ldap(ldap::Ldap),
    /// An HTTP service (`[auth.webhook]`).
    Webhook(webhook::Webhook),
}

impl Authenticator {
    /// Its name in `auth.chain`, logs and traces.
    pub fn name(&self) -> &'static str {
        match self {
            Authenticator::UsersFile => "users_file",
            Authenticator::Ldap(_) => "ldap",
            Authenticator::Webhook(_) => "webhook",
        }
    }

    /// What a password validated by this authenticator is cached against:
    /// a cached entry counts only while this stays the same. The users
    /// file's is the stored hash (a changed password drops the entries);
    /// `None` means its answers are not cached.
    pub fn cache_stamp(&self, shared: &Shared, user: &str) -> Option<String> {
        match self {
            Authenticator::UsersFile => Some(users_file::cache_stamp(shared, user)),
            Authenticator::Ldap(l) => l.cache_stamp(),
            Authenticator::Webhook(w) => w.cache_stamp(),
        }
    }

    /// Checks a password.
    pub async fn password(&self, shared: &Shared, request: &Request<'_>, password: &str) -> Answer {
        self.timed(async {
            match self {
                Authenticator::UsersFile => {
                    users_file::password(shared, request.user, password).await
                }
                Authenticator::Ldap(l) => l.password(request, password).await,
                Authenticator::Webhook(w) => w.password(request, password).await,
            }
        })
        .await
    }

    /// Runs one question to this authenticator, recording how long it took
    /// and what it answered (`labssh_auth_authenticator_seconds`): every
    /// time an authenticator is asked, and only then (a cache hit asks none).
    async fn timed(&self, ask: impl std::future::Future<Output = Answer>) -> Answer {
        let asked = std::time::Instant::now();
        let answer = ask.await;
        labssh_telemetry::metrics::authenticator_answered(
            self.name(),
            answer.as_str(),
            asked.elapsed(),
        );
        answer
    }

    /// Checks a public key whose possession the client proved (or, with
    /// `proven = false`, would a key do: the answer to the client's offer).
    pub async fn key(
        &self,
        shared: &Shared,
        request: &Request<'_>,
        key: &PublicKey,
        proven: bool,
    ) -> Answer {
        self.timed(async {
            match self {
                Authenticator::UsersFile => users_file::key(shared, request.user, key),
                Authenticator::Ldap(l) => l.key(request, key).await,
                Authenticator::Webhook(w) => w.key(request, key, proven).await,
            }
        })
        .await
    }

    /// Who `user` is, with no credential checked: for a login a trusted CA's
    /// certificate already vouches for. `Unknown` when this authenticator
    /// does not know them.
    pub async fn lookup(&self, shared: &Shared, request: &Request<'_>) -> Answer {
        self.timed(async {
            match self {
                Authenticator::UsersFile => users_file::lookup(shared, request.user),
                Authenticator::Ldap(l) => l.lookup(request).await,
                // A webhook decides logins, it is not a directory.
                Authenticator::Webhook(_) => Answer::Unknown,
            }
        })
        .await
    }
}

/// The configured authenticators, in order.
pub(crate) struct Chain {
    list: Vec<Authenticator>,
}

/// How a whole chain answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Accepted by the authenticator the identity names.
    Accept(Identity),
    /// Nobody accepted; the reasons, for the log.
    Reject(String),
    /// Nobody accepted and at least one could not be asked.
    Unavailable(String),
}

impl Chain {
    /// The chain `config` orders, each authenticator built from its section.
    pub fn new(config: &AuthConfig) -> anyhow::Result<Chain> {
        let mut list = Vec::new();
        for kind in config.order() {
            list.push(match kind {
                AuthenticatorKind::UsersFile => Authenticator::UsersFile,
                AuthenticatorKind::Ldap => {
                    let section = config.ldap.as_ref().ok_or_else(|| {
                        anyhow::anyhow!("auth.chain names ldap but there is no [auth.ldap]")
                    })?;
                    Authenticator::Ldap(ldap::Ldap::new(section)?)
                }
                AuthenticatorKind::Webhook => {
                    let section = config.webhook.as_ref().ok_or_else(|| {
                        anyhow::anyhow!("auth.chain names webhook but there is no [auth.webhook]")
                    })?;
                    Authenticator::Webhook(webhook::Webhook::new(section)?)
                }
            });
        }
        Ok(Chain { list })
    }

    /// Asks each authenticator in turn with `ask` until one accepts.
    pub async fn decide<'a, F, Fut>(&'a self, mut ask: F) -> Decision
    where
        F: FnMut(&'a Authenticator) -> Fut,
        Fut: std::future::Future<Output = Answer>,
    {
        let mut rejected = Vec::new();
        let mut unavailable = Vec::new();
        for authenticator in &self.list {
            match ask(authenticator).await {
                Answer::Accept(identity) => return Decision::Accept(identity),
                Answer::Reject(why) => rejected.push(format!("{}: {why}", authenticator.name())),
                Answer::Unknown => rejected.push(format!(
                    "{}: no such user or credential",
                    authenticator.name()
                )),
                Answer::Unavailable(why) => {
                    unavailable.push(format!("{}: unavailable: {why}", authenticator.name()))
                }
            }
        }
        let mut why = rejected;
        if unavailable.is_empty() {
            Decision::Reject(why.join("; "))
        } else {
            why.extend(unavailable);
            Decision::Unavailable(why.join("; "))
        }
    }

    /// Checks a proven key with every authenticator in turn.
    pub async fn key(&self, shared: &Shared, request: &Request<'_>, key: &PublicKey) -> Decision {
        self.decide(|a| a.key(shared, request, key, true)).await
    }

    /// Whether an offered key could log in: any authenticator would take it.
    pub async fn key_acceptable(
        &self,
        shared: &Shared,
        request: &Request<'_>,
        key: &PublicKey,
    ) -> bool {
        matches!(
            self.decide(|a| a.key(shared, request, key, false)).await,
            Decision::Accept(_)
        )
    }

    /// Who `user` is, from the first authenticator that knows them.
    pub async fn lookup(&self, shared: &Shared, request: &Request<'_>) -> Decision {
        self.decide(|a| a.lookup(shared, request)).await
    }
}
