//! The LDAP authenticator: a department's directory decides who logs in.
//!
//! A check is what JupyterHub's ldapauthenticator and SSSD do: search the
//! directory as the search account (`bind_dn`) for the one entry
//! `user_filter` finds, then bind as that entry's DN with the student's
//! password; the directory alone compares passwords. The login name is
//! escaped per RFC 4515 before it goes into any filter ([`filter`]), and an
//! empty password is refused before anything is sent: LDAP reads a simple
//! bind with a DN and no password as an *unauthenticated* bind, which
//! succeeds (RFC 4513 §5.1.2).
//!
//! The entry gives the identity: groups from `group_attribute` (`memberOf`)
//! and from a group search (`group_filter`, posixGroup `memberUid` by
//! default), the uid and gid from `uidNumber`/`gidNumber`, and for key
//! logins the `sshPublicKey` values of the openssh-lpk schema.
//!
//! Answers: no entry → [`Answer::Unknown`] (the chain asks the next
//! authenticator); a wrong password → [`Answer::Reject`]; a directory that
//! is down, slow past `timeout`, or whose certificate does not verify →
//! [`Answer::Unavailable`], so the student reads that the login service is
//! unavailable, not that their password is wrong. Every check, from waiting
//! for a pooled connection ([`pool`]) to the last reply, runs under
//! `timeout`. Passwords are never logged.

use std::time::Duration;

use ldap3::{Scope, SearchOptions};
use russh::keys::PublicKey;

use super::chain::{Answer, Request};
use super::identity::Identity;

mod config;
mod entry;
pub(crate) mod filter;
mod pool;
#[cfg(test)]
mod tests;

pub use config::LdapConfig;
use entry::Entry;
use pool::{Failure, Lease, Pool};

/// The name in `auth.chain` and in identities.
pub(crate) const NAME: &str = "ldap";

/// The openssh-lpk schema's attribute for public keys.
const SSH_PUBLIC_KEY: &str = "sshPublicKey";
/// What a group entry's name is.
const GROUP_NAME: &str = "cn";
/// LDAP result codes (RFC 4511 appendix A).
const INVALID_CREDENTIALS: u32 = 49;
const SIZE_LIMIT_EXCEEDED: u32 = 4;
const BUSY: u32 = 51;
const UNAVAILABLE: u32 = 52;

/// What a check asks of the student's entry.
enum Check<'a> {
    /// A bind with this password.
    Password(&'a str),
    /// One of its `sshPublicKey` values is this key.
    Key(&'a PublicKey),
    /// Nothing: who is it (a certificate vouched for the login).
    Lookup,
}

/// A directory.
pub(crate) struct Ldap {
    /// `auth.ldap.url`, for logs and the cache stamp.
    url: String,
    base_dn: String,
    user_filter: String,
    group_base_dn: String,
    group_filter: String,
    group_attribute: String,
    timeout: Duration,
    /// The connections (boxed: the chain holds authenticators by value).
    pool: Box<Pool>,
}

impl Ldap {
    /// Reads the search account's password file (again whenever it changes);
    /// connects only at the first check.
    pub fn new(config: &LdapConfig) -> anyhow::Result<Ldap> {
        let problems = config.problems();
        anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
        let group_base_dn = if config.group_base_dn.is_empty() {
            config.base_dn.clone()
        } else {
            config.group_base_dn.clone()
        };
        Ok(Ldap {
            url: config.url.clone(),
            base_dn: config.base_dn.clone(),
            user_filter: config.user_filter.clone(),
            group_base_dn,
            group_filter: config.group_filter.clone(),
            group_attribute: config.group_attribute.clone(),
            timeout: config.timeout.0,
            pool: Box::new(Pool::new(config)?),
        })
    }

    /// A cached password counts while the directory is the same one; the
    /// directory itself cannot say when a password changed, so the cache's
    /// TTL bounds how long an old one keeps working.
    pub fn cache_stamp(&self) -> Option<String> {
        Some(format!("{} {}", self.url, self.base_dn))
    }

    /// Checks a password by binding as the student's entry.
    pub async fn password(&self, request: &Request<'_>, password: &str) -> Answer {
        if password.is_empty() {
            // A bind with a DN and no password is anonymous, and succeeds.
            return Answer::Reject("empty password (never sent to the directory)".into());
        }
        self.ask(request.user, Check::Password(password)).await
    }

    /// Whether `key` is one of the entry's `sshPublicKey` values.
    pub async fn key(&self, request: &Request<'_>, key: &PublicKey) -> Answer {
        self.ask(request.user, Check::Key(key)).await
    }

    /// The entry's identity, with no credential checked.
    pub async fn lookup(&self, request: &Request<'_>) -> Answer {
        self.ask(request.user, Check::Lookup).await
    }

    /// One check under the timeout. A pooled connection may have died since
    /// it was last used (the directory restarted): then the check runs once
    /// more on a new one.
    async fn ask(&self, user: &str, check: Check<'_>) -> Answer {
        let run = async {
            let mut lease = self.pool.get(false).await?;
            match self.check(&mut lease, user, &check).await {
                Err(Failure::Connection(why)) if lease.reused => {
                    tracing::debug!(url = %self.url, "auth.ldap: a pooled connection failed ({why}); trying a new one");
                    drop(lease);
                    let mut lease = self.pool.get(true).await?;
                    let answer = self.check(&mut lease, user, &check).await?;
                    lease.keep();
                    Ok(answer)
                }
                Err(e) => Err(e),
                Ok(answer) => {
                    lease.keep();
                    Ok(answer)
                }
            }
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(failure)) => Answer::Unavailable(format!("{}: {failure}", self.url)),
            Err(_) => {
                tracing::warn!(url = %self.url, "auth.ldap: no answer within {:?}", self.timeout);
                Answer::Unavailable(format!(
                    "{}: no answer within {:?} (auth.ldap.timeout)",
                    self.url, self.timeout
                ))
            }
        }
    }

    /// Finds the entry, then does what `check` asks.
    async fn check(
        &self,
        lease: &mut Lease<'_>,
        user: &str,
        check: &Check<'_>,
    ) -> Result<Answer, Failure> {
        let mut attributes = vec!["uidNumber", "gidNumber"];
        if !self.group_attribute.is_empty() {
            attributes.push(&self.group_attribute);
        }
        if matches!(check, Check::Key(_)) {
            attributes.push(SSH_PUBLIC_KEY);
        }
        let filter = filter::fill(&self.user_filter, &[(filter::USER, user)]);
        let mut found = self
            .search(lease, &self.base_dn, &filter, &attributes, 2)
            .await?;
        let entry = match found.len() {
            0 => return Ok(Answer::Unknown),
            1 => found.remove(0),
            _ => {
                tracing::warn!(url = %self.url, user, "auth.ldap.user_filter finds more than one entry for this login; refused");
                return Ok(Answer::Reject(
                    "auth.ldap.user_filter finds more than one entry".into(),
                ));
            }
        };
        if let Check::Key(key) = check {
            let mut keys = entry
                .texts(SSH_PUBLIC_KEY)
                .filter_map(|line| crate::users::parse_authorized_key(line).ok())
                .peekable();
            if keys.peek().is_none() {
                return Ok(Answer::Unknown);
            }
            if !keys.any(|k| k.key_data() == key.key_data()) {
                return Ok(Answer::Reject("key not in the entry's sshPublicKey".into()));
            }
        }
        let identity = self.identity(lease, user, &entry).await?;
        if let Check::Password(password) = check {
            let bound = lease
                .for_student_bind()
                .simple_bind(&entry.dn, password)
                .await
                .map_err(|e| Failure::from_ldap("binding as the student", e))?;
            match bound.rc {
                0 => {}
                INVALID_CREDENTIALS => return Ok(Answer::Reject("wrong password".into())),
                BUSY | UNAVAILABLE => {
                    return Err(Failure::Directory(format!(
                        "binding as the student: result {} {}",
                        bound.rc,
                        bound.text.escape_debug()
                    )))
                }
                rc => {
                    return Ok(Answer::Reject(format!(
                        "bind refused: result {rc} {}",
                        bound.text.escape_debug()
                    )))
                }
            }
        }
        Ok(Answer::Accept(identity))
    }

    /// Groups, uid and gid from the entry and the group search.
    async fn identity(
        &self,
        lease: &mut Lease<'_>,
        user: &str,
        entry: &Entry,
    ) -> Result<Identity, Failure> {
        let mut identity = Identity::from(NAME);
        identity.uid = id_number(entry, "uidNumber", user);
        identity.gid = id_number(entry, "gidNumber", user);
        if !self.group_attribute.is_empty() {
            let groups: Vec<String> = entry
                .texts(&self.group_attribute)
                .filter_map(entry::first_rdn_value)
                .map(str::to_owned)
                .collect();
            identity.add_groups(groups);
        }
        if !self.group_filter.is_empty() {
            let filter = filter::fill(
                &self.group_filter,
                &[(filter::USER, user), (filter::DN, &entry.dn)],
            );
            let groups = self
                .search(lease, &self.group_base_dn, &filter, &[GROUP_NAME], 0)
                .await?;
            for group in groups {
                identity.add_groups(
                    group
                        .texts(GROUP_NAME)
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                );
            }
        }
        Ok(identity)
    }

    /// A subtree search as the search account; `limit` entries at most
    /// (0: the server's limit), more is not an error.
    async fn search(
        &self,
        lease: &mut Lease<'_>,
        base: &str,
        filter: &str,
        attributes: &[&str],
        limit: i32,
    ) -> Result<Vec<Entry>, Failure> {
        let ldap = lease.as_service().await?;
        let result = ldap
            .with_search_options(SearchOptions::new().sizelimit(limit))
            .search(base, Scope::Subtree, filter, attributes.to_vec())
            .await
            .map_err(|e| Failure::from_ldap("searching", e))?;
        let ldap3::SearchResult(entries, done) = result;
        if done.rc != 0 && done.rc != SIZE_LIMIT_EXCEEDED {
            return Err(Failure::Directory(format!(
                "searching {base:?}: result {} {}",
                done.rc,
                done.text.escape_debug()
            )));
        }
        Ok(entries.into_iter().filter_map(Entry::read).collect())
    }
}

/// A uid or gid from the entry. Never 0: a directory entry (or whoever can
/// write one) must not make a student root in their container.
fn id_number(entry: &Entry, attribute: &str, user: &str) -> Option<u32> {
    match entry.number(attribute) {
        Some(0) => {
            tracing::warn!(
                user,
                "auth.ldap: {attribute} 0 ignored (root is never taken from the directory)"
            );
            None
        }
        n => n,
    }
}
