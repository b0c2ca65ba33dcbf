//! Who an environment's student processes run as, and who may use it:
//! `uid`/`gid` as numbers or `"ldap"` (from the login's identity), and
//! `allowed_groups`.
//!
//! `uid = "ldap"` takes the uid from the login's identity (an LDAP
//! `uidNumber`, a users file's `uid`), so files in homes line up with the
//! department's NFS. It implies `gid = "ldap"` unless `gid` is given as a
//! number; `gid = "ldap"` alone keeps the numeric uid and takes only the gid.
//! The wire carries `uid`/`gid` 0 with `uid_from_identity`/`gid_from_identity`
//! set, and the agent fills the identity's in.

use std::fmt;

use labssh_proto::names::{valid_group, GROUP_RULE};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The word that means "from the login's identity".
pub const FROM_IDENTITY: &str = "ldap";

/// A `uid` or `gid` key: a number, or `"ldap"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSetting {
    /// This numeric id for every student.
    Number(u32),
    /// The login's identity's id.
    FromIdentity,
}

impl IdSetting {
    /// The number on the wire: 0 (filled in by the agent) for an identity's.
    pub fn wire(self) -> u32 {
        match self {
            IdSetting::Number(id) => id,
            IdSetting::FromIdentity => 0,
        }
    }

    /// Whether it comes from the identity.
    pub fn from_identity(self) -> bool {
        self == IdSetting::FromIdentity
    }
}

impl From<u32> for IdSetting {
    fn from(id: u32) -> Self {
        IdSetting::Number(id)
    }
}

impl<'de> Deserialize<'de> for IdSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = IdSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a numeric id or \"{FROM_IDENTITY}\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdSetting, E> {
                u32::try_from(v)
                    .map(IdSetting::Number)
                    .map_err(|_| E::custom(format!("{v} is not an id from 0 to {}", u32::MAX)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdSetting, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdSetting, E> {
                if v == FROM_IDENTITY {
                    Ok(IdSetting::FromIdentity)
                } else {
                    Err(E::custom(format!(
                        "{v:?}: use a number or \"{FROM_IDENTITY}\" (the login's uid/gid)"
                    )))
                }
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

/// The environment's ids as resolved: (uid, gid) settings, the gid following
/// the uid when it is not given.
pub fn resolve(uid: IdSetting, gid: Option<IdSetting>, default_gid: u32) -> (IdSetting, IdSetting) {
    let gid = gid.unwrap_or(match uid {
        IdSetting::FromIdentity => IdSetting::FromIdentity,
        IdSetting::Number(_) => IdSetting::Number(default_gid),
    });
    (uid, gid)
}

/// Appends the problems of `allowed_groups`, `uid` and `gid`.
pub fn check(
    key: &dyn Fn(&str) -> String,
    (uid, gid): (IdSetting, IdSetting),
    run_as_root: bool,
    allowed_groups: &[String],
    problems: &mut Vec<String>,
) {
    for group in allowed_groups {
        if !valid_group(group) {
            problems.push(format!(
                "{}: {group:?} is not a group name: use {GROUP_RULE}",
                key("allowed_groups")
            ));
        }
    }
    if uid == IdSetting::Number(0) && !run_as_root {
        problems.push(format!(
            "{}: 0 is root; set run_as_root = true to run students as root",
            key("uid")
        ));
    }
    if run_as_root {
        for (field, id) in [("uid", uid), ("gid", gid)] {
            if id.from_identity() {
                problems.push(format!(
                    "{}: \"{FROM_IDENTITY}\" has no effect with run_as_root = true (students run as root); remove one of them",
                    key(field)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Keys {
        uid: IdSetting,
    }

    fn parse(text: &str) -> Result<IdSetting, String> {
        toml::from_str::<Keys>(text)
            .map(|k| k.uid)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ids_are_numbers_or_ldap() {
        assert_eq!(parse("uid = 20001"), Ok(IdSetting::Number(20001)));
        assert_eq!(parse("uid = \"ldap\""), Ok(IdSetting::FromIdentity));
        let word = parse("uid = \"LDAP\"").unwrap_err();
        assert!(word.contains("use a number or \"ldap\""), "{word}");
        assert!(parse("uid = -1").unwrap_err().contains("is not an id"));
        assert!(parse("uid = 4294967296")
            .unwrap_err()
            .contains("is not an id"));
    }

    #[test]
    fn the_gid_follows_an_identitys_uid_unless_given() {
        let ldap = IdSetting::FromIdentity;
        assert_eq!(resolve(ldap, None, 1000), (ldap, ldap));
        assert_eq!(resolve(ldap, Some(100.into()), 1000), (ldap, 100.into()));
        assert_eq!(resolve(1000.into(), None, 1000), (1000.into(), 1000.into()));
        assert_eq!(resolve(1000.into(), Some(ldap), 1000), (1000.into(), ldap));
    }

    #[test]
    fn problems_name_their_key() {
        let key = |f: &str| format!("environments.nfs.{f}");
        let mut problems = Vec::new();
        let ldap = IdSetting::FromIdentity;
        let groups = ["cs101".to_string(), "CS 102".to_string()];
        check(&key, (ldap, ldap), true, &groups, &mut problems);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with("environments.nfs.allowed_groups: \"CS 102\""));
        assert!(problems[1].starts_with("environments.nfs.uid: \"ldap\" has no effect"));
        assert!(problems[2].starts_with("environments.nfs.gid: \"ldap\" has no effect"));
        problems.clear();
        check(&key, (0.into(), 0.into()), false, &[], &mut problems);
        assert_eq!(
            problems,
            ["environments.nfs.uid: 0 is root; set run_as_root = true to run students as root"]
        );
    }
}
