//! `[auth.ldap]`: where the directory is, how to search it and how long to
//! wait for it.
//!
//! ```toml
//! [auth.ldap]
//! url = "ldaps://ldap.example.edu"          # or ldap://… with starttls = true
//! ca_file = "/etc/labssh/ldap-ca.pem"       # absent: the system's roots
//! bind_dn = "cn=labssh,ou=services,dc=example,dc=edu"
//! bind_password_file = "/etc/labssh/ldap-bind-password"
//! base_dn = "ou=people,dc=example,dc=edu"
//! user_filter = "(&(objectClass=posixAccount)(uid={user}))"
//! group_base_dn = "ou=groups,dc=example,dc=edu"
//! group_filter = "(&(objectClass=posixGroup)(memberUid={user}))"
//! group_attribute = "memberOf"
//! timeout = "5s"
//! pool_size = 4
//! ```

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use labssh_proto::duration::ConfigDuration;
use serde::{Deserialize, Serialize, Serializer};

use super::filter;

/// posixAccount entries by `uid`, as nss-pam-ldapd and SSSD look them up.
pub const DEFAULT_USER_FILTER: &str = "(&(objectClass=posixAccount)(uid={user}))";
/// RFC 2307 groups name their members by login name.
pub const DEFAULT_GROUP_FILTER: &str = "(&(objectClass=posixGroup)(memberUid={user}))";
/// What OpenLDAP's memberof overlay and Active Directory put on an account.
pub const DEFAULT_GROUP_ATTRIBUTE: &str = "memberOf";
/// A directory on the campus network answers in milliseconds; past a few
/// seconds it is down, and the student should hear so rather than wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `timeout` accepted: the login grace time must outlast it.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// Each login holds a connection for a few round trips of a millisecond,
/// so a handful serves a class logging in at once.
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Directories limit connections per client; more than this would only
/// queue at the server.
pub const MAX_POOL_SIZE: usize = 64;

/// `[auth.ldap]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `starttls`
    /// (plain `ldap://` only to a loopback address: it carries passwords).
    pub url: String,
    /// StartTLS on an `ldap://` connection.
    pub starttls: bool,
    /// PEM file of the CA(s) the server's certificate must chain to; absent,
    /// the system's trusted roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The account that searches for students; empty searches anonymously.
    pub bind_dn: String,
    /// File holding `bind_dn`'s password (one line), read at start and again
    /// whenever it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_password_file: Option<PathBuf>,
    /// Where students' entries are searched (subtree).
    pub base_dn: String,
    /// Finds the student's entry; `{user}` is the login name, escaped.
    pub user_filter: String,
    /// Where groups are searched; empty: `base_dn`.
    pub group_base_dn: String,
    /// Finds the student's groups (their `cn` is the group's name); `{user}`
    /// is the login name and `{dn}` the entry's DN, both escaped. Empty: no
    /// group search.
    pub group_filter: String,
    /// An attribute of the entry naming its groups by DN (the first RDN's
    /// value is the group's name); empty: none.
    pub group_attribute: String,
    /// Bound on one check: waiting for a connection, connecting, TLS, the
    /// searches and the bind together.
    #[serde(serialize_with = "as_text")]
    pub timeout: ConfigDuration,
    /// Most connections kept to the directory; a login waits for one to be
    /// free (within `timeout`).
    pub pool_size: usize,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            url: String::new(),
            starttls: false,
            ca_file: None,
            bind_dn: String::new(),
            bind_password_file: None,
            base_dn: String::new(),
            user_filter: DEFAULT_USER_FILTER.into(),
            group_base_dn: String::new(),
            group_filter: DEFAULT_GROUP_FILTER.into(),
            group_attribute: DEFAULT_GROUP_ATTRIBUTE.into(),
            timeout: ConfigDuration(DEFAULT_TIMEOUT),
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

fn as_text<S: Serializer>(d: &ConfigDuration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.to_string())
}

/// Whether `url` is encrypted (ldaps) and whether its host is loopback.
struct UrlFacts {
    ldaps: bool,
    loopback: bool,
}

fn check_url(text: &str) -> Result<UrlFacts, String> {
    if text.is_empty() {
        return Err("required, e.g. \"ldaps://ldap.example.edu\"".into());
    }
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL ({e})"))?;
    let ldaps = match url.scheme() {
        "ldaps" => true,
        "ldap" => false,
        other => {
            return Err(format!(
                "scheme {other:?} is not ldaps:// or ldap:// (with starttls = true)"
            ))
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{text:?} names no host"))?;
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{text:?}: give only scheme, host and port (the search base is base_dn)"
        ));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    Ok(UrlFacts { ldaps, loopback })
}

/// A filter template's problem, if any: it must be one parenthesised
/// filter once each placeholder is filled in, and name one of them.
fn check_filter(template: &str, placeholders: &[&str]) -> Option<String> {
    if !placeholders.iter().any(|p| template.contains(p)) {
        return Some(format!(
            "{template:?} does not contain {}",
            placeholders.join(" or ")
        ));
    }
    let mut sample = template.to_owned();
    for p in placeholders {
        sample = sample.replace(p, "x");
    }
    if !sample.starts_with('(') || ldap3::parse_filter(&sample).is_err() {
        return Some(format!("{template:?} is not an LDAP filter (RFC 4515)"));
    }
    None
}

/// An attribute description as RFC 4512 spells one (a letter, then letters,
/// digits and hyphens).
fn valid_attribute(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl LdapConfig {
    /// Every invalid value, each with its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut bad = |key: &str, why: String| problems.push(format!("auth.ldap.{key}: {why}"));
        match check_url(&self.url) {
            Err(why) => bad("url", why),
            Ok(facts) => {
                if facts.ldaps && self.starttls {
                    bad(
                        "starttls",
                        "only with an ldap:// url (ldaps:// is TLS already)".into(),
                    );
                }
                let tls = facts.ldaps || self.starttls;
                if !tls && !facts.loopback {
                    bad(
                        "url",
                        format!(
                            "{:?} would carry passwords in clear; use ldaps:// or set starttls = true (plain ldap:// only to a loopback address)",
                            self.url
                        ),
                    );
                }
                if !tls && self.ca_file.is_some() {
                    bad(
                        "ca_file",
                        "set, but the connection is not TLS (ldap:// without starttls)".into(),
                    );
                }
            }
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_file() {
                bad("ca_file", format!("{} does not exist", ca.display()));
            }
        }
        match (self.bind_dn.is_empty(), &self.bind_password_file) {
            (false, None) => bad(
                "bind_password_file",
                "required with bind_dn (a file holding its password)".into(),
            ),
            (true, Some(_)) => bad(
                "bind_dn",
                "required with bind_password_file (or remove both to search anonymously)".into(),
            ),
            (_, Some(file)) if !file.is_file() => bad(
                "bind_password_file",
                format!("{} does not exist", file.display()),
            ),
            _ => {}
        }
        if self.base_dn.trim().is_empty() {
            bad(
                "base_dn",
                "required, e.g. \"ou=people,dc=example,dc=edu\"".into(),
            );
        }
        if let Some(why) = check_filter(&self.user_filter, &[filter::USER]) {
            bad("user_filter", why);
        }
        if !self.group_filter.is_empty() {
            if let Some(why) = check_filter(&self.group_filter, &[filter::USER, filter::DN]) {
                bad("group_filter", why);
            }
        }
        if !self.group_attribute.is_empty() && !valid_attribute(&self.group_attribute) {
            bad(
                "group_attribute",
                format!("{:?} is not an attribute name", self.group_attribute),
            );
        }
        let timeout = self.timeout.0;
        if timeout < Duration::from_millis(100) || timeout > MAX_TIMEOUT {
            bad(
                "timeout",
                format!(
                    "{} is outside 100ms..{}s",
                    self.timeout,
                    MAX_TIMEOUT.as_secs()
                ),
            );
        }
        if self.pool_size == 0 || self.pool_size > MAX_POOL_SIZE {
            bad(
                "pool_size",
                format!("{} is outside 1..={MAX_POOL_SIZE}", self.pool_size),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn problems(section: &str) -> String {
        match Config::from_toml_str(&format!("[auth.ldap]\n{section}")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_minimal_section_is_enough_and_defaults_are_posix() {
        let c = Config::from_toml_str(
            "[auth.ldap]\nurl = \"ldaps://ldap.example.edu\"\nbase_dn = \"dc=example,dc=edu\"\n",
        )
        .unwrap();
        let ldap = c.auth.ldap.unwrap();
        assert_eq!(ldap.user_filter, super::DEFAULT_USER_FILTER);
        assert_eq!(ldap.group_filter, super::DEFAULT_GROUP_FILTER);
        assert_eq!(ldap.timeout.0, super::DEFAULT_TIMEOUT);
        assert_eq!(ldap.pool_size, super::DEFAULT_POOL_SIZE);
        // Plain ldap:// to loopback (a local slapd, the tests) is fine.
        assert_eq!(
            problems("url = \"ldap://127.0.0.1:3890\"\nbase_dn = \"dc=x\"\n"),
            ""
        );
        // It serialises back to what it reads.
        let text = toml::to_string(&ldap).unwrap();
        assert!(text.contains("timeout = \"5s\""), "{text}");
    }

    #[test]
    fn every_bad_key_is_named() {
        let err = problems(
            "url = \"http://ldap.example.edu\"\nbase_dn = \"\"\nuser_filter = \"uid=x\"\n\
             group_filter = \"(memberUid=nobody)\"\ngroup_attribute = \"member of\"\n\
             timeout = \"2m\"\npool_size = 0\nbind_dn = \"cn=labssh\"\n",
        );
        for expected in [
            "auth.ldap.url: scheme \"http\"",
            "auth.ldap.base_dn: required",
            "auth.ldap.user_filter: \"uid=x\" does not contain {user}",
            "auth.ldap.group_filter: \"(memberUid=nobody)\" does not contain {user} or {dn}",
            "auth.ldap.group_attribute: \"member of\"",
            "auth.ldap.timeout: 2m is outside",
            "auth.ldap.pool_size: 0 is outside",
            "auth.ldap.bind_password_file: required with bind_dn",
        ] {
            assert!(err.contains(expected), "{expected} in {err}");
        }
        let err = problems("url = \"ldaps://h\"\nstarttls = true\nbase_dn = \"dc=x\"\nuser_filter = \"(uid={user}\"\n");
        assert!(
            err.contains("auth.ldap.starttls: only with an ldap:// url"),
            "{err}"
        );
        assert!(
            err.contains("auth.ldap.user_filter: \"(uid={user}\" is not an LDAP filter"),
            "{err}"
        );
        let err = problems("url = \"ldap://ldap.example.edu\"\nbase_dn = \"dc=x\"\nca_file = \"/nonexistent/ca.pem\"\n");
        assert!(
            err.contains(
                "auth.ldap.url: \"ldap://ldap.example.edu\" would carry passwords in clear"
            ),
            "{err}"
        );
        assert!(
            err.contains("auth.ldap.ca_file: set, but the connection is not TLS"),
            "{err}"
        );
        assert!(
            err.contains("auth.ldap.ca_file: /nonexistent/ca.pem does not exist"),
            "{err}"
        );
        for url in [
            "",
            "ldaps://",
            "ldaps:///dc=x",
            "ldaps://h/dc=x",
            "not a url",
        ] {
            let err = problems(&format!("url = \"{url}\"\nbase_dn = \"dc=x\"\n"));
            assert!(err.contains("auth.ldap.url: "), "{url}: {err}");
        }
        let err = problems("url = \"ldaps://h\"\nbase_dn = \"dc=x\"\nbindpw = \"x\"\n");
        assert!(err.contains("bindpw"), "{err}");
    }
}
