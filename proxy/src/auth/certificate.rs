//! OpenSSH user certificates (`auth.trusted_user_ca_keys`) and the revoked
//! keys list (`auth.revoked_keys`).
//!
//! russh checks a certificate's own signature and its validity window, and
//! that the client holds the certified key, before it calls
//! `auth_openssh_certificate`. It does not check who signed it, nor for whom
//! or for what: that is [`Trust::check`], as sshd with `TrustedUserCAKeys`
//! and no `AuthorizedPrincipalsFile`:
//!
//! - signed by a trusted CA (`Certificate::validate` against their SHA-256
//!   fingerprints, which also re-checks the signature and the window);
//! - a user certificate, not a host one;
//! - the login's account among its principals (an empty list is refused,
//!   as sshd does: a certificate for anyone is a CA mistake, not a grant);
//! - critical options: `source-address` (the client's address within one of
//!   its CIDR blocks), `force-command` (every session runs it, see
//!   [`Restrictions`]); any other critical option is refused, since a
//!   critical option the server does not enforce must not be ignored;
//! - extensions: without `permit-pty` no terminal, without
//!   `permit-port-forwarding` no `ssh -L`/`-D`/`-R`, without
//!   `permit-agent-forwarding` no `ssh -A`;
//! - not revoked: its key, its CA, its serial or its key id.
//!
//! The revoked list applies to plain key logins too (see [`revoked`]).
//! Both files are re-read when they change (size, inode, modification
//! time); a version that fails to parse is logged and the previous one
//! stays in force, so a half-written file never opens or shuts the door.
//! A CA file removed is trusted no more; a revoked list removed stays in
//! force (both fail closed).
//!
//! A certificate says nothing of groups or ids: those come from the chain's
//! directories (`Chain::lookup`: the users file, LDAP) when they know the
//! user; otherwise the student is who the certificate names, in no group.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::Fingerprint;
use russh::keys::{Certificate, HashAlg, PublicKey};

use super::identity::Restrictions;
use crate::config::auth::AuthConfig;

pub(crate) mod revoked;

use revoked::Revoked;

/// The name in identities and logs.
pub(crate) const NAME: &str = "certificate";

/// Critical options enforced; a certificate with any other is refused.
const FORCE_COMMAND: &str = "force-command";
const SOURCE_ADDRESS: &str = "source-address";
/// Extensions whose absence restricts.
const PERMIT_PTY: &str = "permit-pty";
const PERMIT_PORT_FORWARDING: &str = "permit-port-forwarding";
const PERMIT_AGENT_FORWARDING: &str = "permit-agent-forwarding";
const PERMIT_X11_FORWARDING: &str = "permit-X11-forwarding";

/// Identifies one version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp_of(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// A file parsed into a `T`, re-read when it changes.
struct Reloading<T> {
    /// The file.
    path: PathBuf,
    /// Parses its contents; the error names what is wrong.
    parse: fn(&[u8]) -> Result<T, String>,
    /// What a removed file means: `None` keeps the previous version (a
    /// revoked list never shrinks by accident), `Some` gives this (a CA
    /// whose file is gone is trusted no more).
    missing: Option<fn() -> T>,
    /// The last version that parsed, and the stamp of the last version read.
    loaded: Mutex<(Option<FileStamp>, Arc<T>)>,
}

impl<T> Reloading<T> {
    /// Reads the file; missing or invalid is an error (at start, a config
    /// problem).
    fn open(
        path: &Path,
        parse: fn(&[u8]) -> Result<T, String>,
        missing: Option<fn() -> T>,
    ) -> Result<Reloading<T>, String> {
        let stamp = stamp_of(path);
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value = parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Reloading {
            path: path.to_path_buf(),
            parse,
            missing,
            loaded: Mutex::new((stamp, Arc::new(value))),
        })
    }

    /// The current version, re-reading the file if it changed. A version
    /// that does not parse keeps the previous one; a removed file, see
    /// [`Reloading::missing`].
    fn current(&self) -> Arc<T> {
        let stamp = stamp_of(&self.path);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.is_none() && loaded.0.is_some() {
            loaded.0 = None;
            match self.missing {
                Some(empty) => {
                    tracing::warn!(path = %self.path.display(), "removed: nothing in it is in force any more");
                    loaded.1 = Arc::new(empty());
                }
                None => {
                    tracing::error!(path = %self.path.display(), "removed: keeping the previous version")
                }
            }
        }
        if stamp.is_some() && stamp != loaded.0 {
            // Remember the stamp so a bad version is logged once.
            loaded.0 = stamp;
            match std::fs::read(&self.path)
                .map_err(|e| e.to_string())
                .and_then(|b| (self.parse)(&b))
            {
                Ok(value) => {
                    tracing::info!(path = %self.path.display(), "reloaded");
                    loaded.1 = Arc::new(value);
                }
                Err(e) => tracing::error!(
                    path = %self.path.display(),
                    "not reloaded, keeping the previous version: {e}"
                ),
            }
        }
        loaded.1.clone()
    }
}

/// CA public keys, as in sshd's `TrustedUserCAKeys`: one per line, `#`
/// comments and blank lines allowed.
fn parse_cas(bytes: &[u8]) -> Result<Vec<PublicKey>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not text".to_owned())?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = PublicKey::from_openssh(line)
            .map_err(|e| format!("line {}: not an OpenSSH public key: {e}", i + 1))?;
        if key.key_data().certificate().is_some() {
            return Err(format!(
                "line {}: a certificate; a CA is named by its public key",
                i + 1
            ));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no public key in it".into());
    }
    Ok(keys)
}

/// Which CAs vouch for students, and what is revoked. Lives as long as the
/// replica.
pub(crate) struct Trust {
    /// One per `auth.trusted_user_ca_keys` file.
    cas: Vec<Reloading<Vec<PublicKey>>>,
    /// `auth.revoked_keys`, if set.
    revoked: Option<Reloading<Revoked>>,
}

impl Trust {
    /// Reads the files `[auth]` names; one missing or invalid is an error
    /// naming its key.
    pub fn new(config: &AuthConfig) -> anyhow::Result<Trust> {
        let cas = config
            .trusted_user_ca_keys
            .iter()
            .enumerate()
            .map(|(i, path)| {
                Reloading::open(path, parse_cas, Some(Vec::new))
                    .map_err(|e| anyhow::anyhow!("auth.trusted_user_ca_keys[{i}]: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        let revoked = config
            .revoked_keys
            .as_deref()
            .map(|path| {
                Reloading::open(path, Revoked::parse, None)
                    .map_err(|e| anyhow::anyhow!("auth.revoked_keys: {e}"))
            })
            .transpose()?;
        Ok(Trust { cas, revoked })
    }

    /// No CA and no revoked list.
    #[cfg(test)]
    pub fn none() -> Trust {
        Trust {
            cas: Vec::new(),
            revoked: None,
        }
    }

    /// Whether any CA is trusted, so an offered key may be a certificate's.
    pub fn has_cas(&self) -> bool {
        !self.cas.is_empty()
    }

    /// Why a plain key is refused, if it is revoked.
    pub fn key_revoked(&self, key: &KeyData) -> Option<String> {
        self.revoked.as_ref()?.current().key(key)
    }

    /// The fingerprints of every trusted CA key now.
    fn ca_fingerprints(&self) -> Vec<Fingerprint> {
        self.cas
            .iter()
            .flat_map(|file| {
                file.current()
                    .iter()
                    .map(|k| k.fingerprint(HashAlg::Sha256))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Whether `cert` lets `user` in from `ip`, and with what restrictions;
    /// the error says why not, for the log.
    pub fn check(
        &self,
        cert: &Certificate,
        user: &str,
        ip: Option<IpAddr>,
    ) -> Result<Restrictions, String> {
        let fingerprints = self.ca_fingerprints();
        let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
        if !fingerprints.contains(&ca) {
            return Err(format!("certificate signed by an untrusted CA {ca}"));
        }
        // Again the signature and the window, now with the CA's trust.
        cert.validate(&fingerprints)
            .map_err(|e| format!("certificate not valid now: {e}"))?;
        if cert.cert_type() != CertType::User {
            return Err("a host certificate, not a user certificate".into());
        }
        if let Some(revoked) = &self.revoked {
            if let Some(why) = revoked.current().certificate(cert) {
                return Err(why);
            }
        }
        check_principal(cert.valid_principals(), user)?;
        let mut restrictions = Restrictions::default();
        for (name, value) in cert.critical_options().iter() {
            match name.as_str() {
                FORCE_COMMAND => restrictions.force_command = Some(value.clone()),
                SOURCE_ADDRESS => check_source(value, ip)?,
                other => {
                    return Err(format!(
                        "certificate has the critical option {:?}, which labssh does not enforce",
                        other.escape_debug().to_string()
                    ))
                }
            }
        }
        let extensions = cert.extensions();
        restrictions.no_pty = !extensions.contains_key(PERMIT_PTY);
        restrictions.no_port_forwarding = !extensions.contains_key(PERMIT_PORT_FORWARDING);
        restrictions.no_agent_forwarding = !extensions.contains_key(PERMIT_AGENT_FORWARDING);
        restrictions.no_x11_forwarding = !extensions.contains_key(PERMIT_X11_FORWARDING);
        Ok(restrictions)
    }
}

/// `user` must be one of the certificate's principals.
fn check_principal(principals: &[String], user: &str) -> Result<(), String> {
    if principals.is_empty() {
        return Err("certificate names no principal".into());
    }
    if !principals.iter().any(|p| p == user) {
        return Err(format!(
            "{user} is not among the certificate's principals {principals:?}"
        ));
    }
    Ok(())
}

/// `source-address`: a comma-separated list of addresses and CIDR blocks;
/// the client's address must be in one.
fn check_source(list: &str, ip: Option<IpAddr>) -> Result<(), String> {
    let mut blocks = Vec::new();
    for item in list.split(',').map(str::trim) {
        let block = item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                format!("certificate's source-address {item:?} is not an address or CIDR block")
            })?;
        blocks.push(block);
    }
    let Some(ip) = ip else {
        return Err("certificate has a source-address and the client's address is unknown".into());
    };
    // An IPv4 client seen on an IPv6 socket is still an IPv4 client.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if blocks.iter().any(|b| b.contains(&ip)) {
        Ok(())
    } else {
        Err(format!(
            "client {ip} is outside the certificate's source-address {list}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_must_name_the_user() {
        assert!(check_principal(&[], "alice").is_err());
        assert!(check_principal(&["bob".into()], "alice").is_err());
        assert!(check_principal(&["bob".into(), "alice".into()], "alice").is_ok());
    }

    #[test]
    fn source_addresses_are_cidr_lists() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(check_source("127.0.0.0/8", Some(local)).is_ok());
        assert!(check_source("10.0.0.0/8, 127.0.0.1", Some(local)).is_ok());
        assert!(check_source("10.0.0.0/8", Some(local)).is_err());
        assert!(check_source("127.0.0.0/8", None).is_err());
        assert!(check_source("127.0.0.0/8", Some("::ffff:127.0.0.5".parse().unwrap())).is_ok());
        assert!(check_source("not-an-address", Some(local))
            .unwrap_err()
            .contains("not an address"));
    }

    #[test]
    fn ca_files_hold_public_keys() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGnr8Zs2q3JYsUXtSRu7Q6ibJ2oJL6Uq8fJ7t0U6oZ4V ca";
        assert_eq!(
            parse_cas(format!("# ca\n{key}\n").as_bytes())
                .unwrap()
                .len(),
            1
        );
        assert!(parse_cas(b"# nothing\n")
            .unwrap_err()
            .contains("no public key"));
        assert!(parse_cas(b"garbage\n").unwrap_err().starts_with("line 1"));
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list");
        let parse = |b: &[u8]| -> Result<String, String> {
            let t = String::from_utf8_lossy(b).into_owned();
            if t.contains("bad") {
                Err("bad".into())
            } else {
                Ok(t)
            }
        };
        std::fs::write(&path, "one").unwrap();
        let file = Reloading::open(&path, parse, None).unwrap();
        assert_eq!(*file.current(), "one");
        std::fs::write(&path, "two!").unwrap();
        assert_eq!(*file.current(), "two!");
        std::fs::write(&path, "bad, longer").unwrap();
        assert_eq!(*file.current(), "two!");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(*file.current(), "two!");
        assert!(Reloading::open(&dir.path().join("none"), parse, None).is_err());
        // Where a removed file means "none", it does; back, it is read again.
        std::fs::write(&path, "three").unwrap();
        let file = Reloading::open(&path, parse, Some(String::new)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(*file.current(), "");
        std::fs::write(&path, "four").unwrap();
        assert_eq!(*file.current(), "four");
    }
}
