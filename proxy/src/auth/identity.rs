//! Who a login turned out to be: what every authenticator answers with, what
//! the credential cache keeps for a validated password, and what the
//! connection hands to the controller and agents.

use serde::{Deserialize, Serialize};

/// A student's identity, as an authenticator established it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Which authenticator vouched for it (`users_file`, `ldap`, `webhook`,
    /// `certificate`), for logs and traces.
    pub source: String,
    /// The groups (classes) the student is in, with valid names only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The numeric uid the directory gives the account, for environments
    /// with `uid = "ldap"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The numeric gid, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// The environment to log into instead of the one the login name asks
    /// for (a webhook's override).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// What a certificate's critical options and missing extensions restrict.
    #[serde(default, skip_serializing_if = "Restrictions::is_none")]
    pub restrictions: Restrictions,
}

/// Limits on what a logged-in connection may do, from an OpenSSH user
/// certificate (`force-command`, no `permit-port-forwarding`, …). None by
/// default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restrictions {
    /// Every session channel runs this command instead of the one asked
    /// for; the one asked for is in `SSH_ORIGINAL_COMMAND`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_command: Option<String>,
    /// No `ssh -L`/`-D`/`-R`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_port_forwarding: bool,
    /// No `ssh -A`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_agent_forwarding: bool,
    /// No `ssh -X`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_x11_forwarding: bool,
    /// No terminal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_pty: bool,
}

impl Restrictions {
    /// Whether nothing is restricted.
    pub fn is_none(&self) -> bool {
        *self == Restrictions::default()
    }
}

impl Identity {
    /// An identity from `source` with nothing else known.
    pub fn from(source: &str) -> Identity {
        Identity {
            source: source.to_owned(),
            ..Identity::default()
        }
    }

    /// Adds `groups` not already there, leaving out (and logging) invalid
    /// names, so a directory's odd group cannot reach a label or a log line.
    pub fn add_groups<I, S>(&mut self, groups: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for group in groups {
            let group = group.into();
            if !labssh_proto::names::valid_group(&group) {
                tracing::debug!(source = %self.source, group = %group.escape_debug(), "group ignored: use {}", labssh_proto::names::GROUP_RULE);
                continue;
            }
            if !self.groups.contains(&group) {
                self.groups.push(group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_kept_once_and_only_when_valid() {
        let mut id = Identity::from("ldap");
        id.add_groups(["cs101", "staff", "cs101", "Bad Group", "x;rm"]);
        assert_eq!(id.groups, ["cs101", "staff"]);
    }

    #[test]
    fn an_identity_survives_the_cache_round_trip() {
        let mut id = Identity::from("users_file");
        id.add_groups(["cs101"]);
        id.uid = Some(20001);
        id.restrictions.force_command = Some("date".into());
        let text = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<Identity>(&text).unwrap(), id);
        let bare = serde_json::to_string(&Identity::from("ldap")).unwrap();
        assert_eq!(bare, r#"{"source":"ldap"}"#);
    }
}
