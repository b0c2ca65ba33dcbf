//! PLACEHOLDER (issue 14, being built): the LDAP authenticator.

use russh::keys::PublicKey;
use serde::{Deserialize, Serialize};

use super::chain::{Answer, Request};

/// `[auth.ldap]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// `ldaps://host` or `ldap://host`.
    pub url: String,
}

impl LdapConfig {
    /// Every invalid value, each with its key.
    pub fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A directory.
pub(crate) struct Ldap {}

impl Ldap {
    pub fn new(_config: &LdapConfig) -> anyhow::Result<Ldap> {
        anyhow::bail!("auth.ldap: not built yet")
    }
    pub fn cache_stamp(&self) -> Option<String> {
        None
    }
    pub async fn password(&self, _request: &Request<'_>, _password: &str) -> Answer {
        Answer::Unavailable("not built".into())
    }
    pub async fn key(&self, _request: &Request<'_>, _key: &PublicKey) -> Answer {
        Answer::Unavailable("not built".into())
    }
    pub async fn lookup(&self, _request: &Request<'_>) -> Answer {
        Answer::Unavailable("not built".into())
    }
}
