//! `[auth]`: which authenticators decide logins, in what order, and which
//! certificate authorities vouch for students.
//!
//! ```toml
//! [auth]
//! chain = ["users_file", "ldap"]     # default: users_file, then each section below
//! trusted_user_ca_keys = ["/etc/labssh/user_ca.pub"]
//! revoked_keys = "/etc/labssh/revoked_keys"
//!
//! [auth.ldap]
//! url = "ldaps://ldap.example.edu"
//! # …
//!
//! [auth.webhook]
//! url = "https://auth.example.edu/labssh"
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::auth::ldap::LdapConfig;
pub use crate::auth::webhook::WebhookConfig;

/// One authenticator's name in `auth.chain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthenticatorKind {
    /// The proxy's `users_file`.
    UsersFile,
    /// `[auth.ldap]`.
    Ldap,
    /// `[auth.webhook]`.
    Webhook,
}

impl AuthenticatorKind {
    fn name(self) -> &'static str {
        match self {
            AuthenticatorKind::UsersFile => "users_file",
            AuthenticatorKind::Ldap => "ldap",
            AuthenticatorKind::Webhook => "webhook",
        }
    }
}

/// The `[auth]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The authenticators asked, in order; the first to accept logs the
    /// student in. Absent: the users file, then LDAP and the webhook if
    /// their sections are present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<AuthenticatorKind>>,
    /// A directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ldap: Option<LdapConfig>,
    /// An HTTP service that decides logins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// OpenSSH public keys of CAs whose user certificates log in, as
    /// sshd's `TrustedUserCAKeys` (each file may hold several).
    pub trusted_user_ca_keys: Vec<PathBuf>,
    /// Keys and certificates refused whatever else says, as sshd's
    /// `RevokedKeys`: an OpenSSH KRL or public keys, one per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_keys: Option<PathBuf>,
}

impl AuthConfig {
    /// The authenticators in the order asked.
    pub fn order(&self) -> Vec<AuthenticatorKind> {
        match &self.chain {
            Some(chain) => chain.clone(),
            None => {
                let mut order = vec![AuthenticatorKind::UsersFile];
                if self.ldap.is_some() {
                    order.push(AuthenticatorKind::Ldap);
                }
                if self.webhook.is_some() {
                    order.push(AuthenticatorKind::Webhook);
                }
                order
            }
        }
    }

    /// Every invalid value, each with its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(chain) = &self.chain {
            if chain.is_empty() && self.trusted_user_ca_keys.is_empty() {
                problems.push(
                    "auth.chain: empty, so nobody could log in; name at least one of users_file, ldap, webhook"
                        .into(),
                );
            }
            for (i, kind) in chain.iter().enumerate() {
                if chain[..i].contains(kind) {
                    problems.push(format!("auth.chain[{i}]: {} is listed twice", kind.name()));
                }
            }
            for (kind, present) in [
                (AuthenticatorKind::Ldap, self.ldap.is_some()),
                (AuthenticatorKind::Webhook, self.webhook.is_some()),
            ] {
                let listed = chain.contains(&kind);
                if listed && !present {
                    problems.push(format!(
                        "auth.chain: names {0} but there is no [auth.{0}] section",
                        kind.name()
                    ));
                }
                if present && !listed {
                    problems.push(format!(
                        "auth.{0}: configured but not in auth.chain; add \"{0}\" to the chain or remove the section",
                        kind.name()
                    ));
                }
            }
        }
        if let Some(ldap) = &self.ldap {
            problems.extend(ldap.problems());
        }
        if let Some(webhook) = &self.webhook {
            problems.extend(webhook.problems());
        }
        for (i, path) in self.trusted_user_ca_keys.iter().enumerate() {
            if path.as_os_str().is_empty() {
                problems.push(format!("auth.trusted_user_ca_keys[{i}]: must not be empty"));
            }
        }
        if self
            .revoked_keys
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push("auth.revoked_keys: must not be empty (leave it out for none)".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_chain_defaults_to_the_users_file() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.auth.order(), [super::AuthenticatorKind::UsersFile]);
    }

    #[test]
    fn a_chain_naming_a_missing_section_or_twice_is_refused() {
        let err =
            Config::from_toml_str("[auth]\nchain = [\"users_file\", \"ldap\", \"users_file\"]\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("auth.chain: names ldap"), "{err}");
        assert!(
            err.contains("auth.chain[2]: users_file is listed twice"),
            "{err}"
        );
        let err = Config::from_toml_str("[auth]\nchain = [\"kerberos\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kerberos"), "{err}");
        let err = Config::from_toml_str("[auth]\nchain = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.chain: empty"), "{err}");
    }
}
