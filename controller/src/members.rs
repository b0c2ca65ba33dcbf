//! Who is in a class: the members of a group in the proxies' users file, or a
//! plain file of login names.
//!
//! The controller reads only each account's `groups`, `uid` and `gid` from the
//! users file (for `--group`, and for a prestart's identities: who may use a
//! restricted environment, who runs as which uid where `uid = "ldap"`) and
//! never keeps its password hashes or keys; the proxies own the rest of its
//! format (and reject unknown keys there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use labssh_proto::names::{valid_group, GROUP_RULE};
use serde::Deserialize;

/// Why a class's members could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    /// A group was asked for and the controller has no `users_file`.
    #[error("group {0:?}: the controller has no users_file to read groups from (set users_file in its config)")]
    NoUsersFile(String),
    /// The group's name breaks the rule.
    #[error("group {0:?}: use {GROUP_RULE}")]
    BadGroup(String),
    /// No account in the users file is in the group.
    #[error("group {group:?} has no members in {path}")]
    UnknownGroup {
        /// The group asked for.
        group: String,
        /// The users file read.
        path: PathBuf,
    },
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The part of the users file the controller reads.
#[derive(Debug, Deserialize)]
struct AccountsView {
    /// Accounts by login name.
    #[serde(default)]
    users: BTreeMap<String, Account>,
}

/// One account's groups and ids; its other keys are the proxies'.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Account {
    /// The groups it is in.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Its numeric uid, for environments with `uid = "ldap"`.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Its numeric gid, likewise.
    #[serde(default)]
    pub gid: Option<u32>,
}

impl Account {
    /// The identity a prestart sends for it: its valid groups and its ids, as
    /// the proxy's users-file authenticator would make it.
    pub fn identity(&self) -> labssh_proto::pb::Identity {
        labssh_proto::pb::Identity {
            groups: self
                .groups
                .iter()
                .filter(|g| valid_group(g))
                .cloned()
                .collect(),
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// Every account of the users file at `path`, by login name.
pub fn accounts(path: &Path) -> Result<BTreeMap<String, Account>, MembersError> {
    let view: AccountsView = toml::from_str(&read(path)?).map_err(|e| MembersError::Read {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })?;
    Ok(view.users)
}

fn read(path: &Path) -> Result<String, MembersError> {
    std::fs::read_to_string(path).map_err(|e| MembersError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The members of `group` in the users file at `users_file`, sorted.
pub fn group_members(users_file: Option<&Path>, group: &str) -> Result<Vec<String>, MembersError> {
    if !valid_group(group) {
        return Err(MembersError::BadGroup(group.to_string()));
    }
    let path = users_file.ok_or_else(|| MembersError::NoUsersFile(group.to_string()))?;
    let members: Vec<String> = accounts(path)?
        .into_iter()
        .filter(|(_, account)| account.groups.iter().any(|g| g == group))
        .map(|(name, _)| name)
        .collect();
    if members.is_empty() {
        return Err(MembersError::UnknownGroup {
            group: group.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(members)
}

/// Login names, one per line; blank lines and `#` comments (whole-line or
/// trailing) are skipped. Names are not checked here: a malformed one is
/// reported for that student by the prestart, and the rest go on.
pub fn parse_names(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// [`parse_names`] of the file at `path`.
pub fn read_names(path: &Path) -> Result<Vec<String>, MembersError> {
    Ok(parse_names(&read(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_files_skip_blanks_and_comments() {
        let text = "# cs101, autumn\nalice\n\n  bob  # repeats the course\n#carol\nBad Name\n";
        assert_eq!(parse_names(text), ["alice", "bob", "Bad Name"]);
    }

    #[test]
    fn groups_come_from_the_users_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(
            &path,
            "[users.alice]\npassword_hash = \"x\"\ngroups = [\"cs101\", \"cs102\"]\nuid = 20001\ngid = 20000\n\
             [users.bob]\nauthorized_keys = []\n[users.carol]\ngroups = [\"cs101\"]\n",
        )
        .unwrap();
        assert_eq!(
            group_members(Some(&path), "cs101").unwrap(),
            ["alice", "carol"]
        );
        assert_eq!(group_members(Some(&path), "cs102").unwrap(), ["alice"]);
        let unknown = group_members(Some(&path), "cs999").unwrap_err();
        assert!(
            unknown.to_string().contains("\"cs999\" has no members"),
            "{unknown}"
        );
        assert!(matches!(
            group_members(None, "cs101"),
            Err(MembersError::NoUsersFile(_))
        ));
        assert!(matches!(
            group_members(Some(&path), "CS 1"),
            Err(MembersError::BadGroup(_))
        ));
        let all = accounts(&path).unwrap();
        let alice = all["alice"].identity();
        assert_eq!(alice.groups, ["cs101", "cs102"]);
        assert_eq!((alice.uid, alice.gid), (Some(20001), Some(20000)));
        assert_eq!((all["bob"].uid, all["bob"].gid), (None, None));
        let missing = group_members(Some(&dir.path().join("none.toml")), "cs101").unwrap_err();
        assert!(missing.to_string().contains("none.toml"), "{missing}");
    }
}
