//! A certificate authority made for one test with `ssh-keygen`, and its students'
//! keys and certificates.

use std::path::{Path, PathBuf};
use std::process::Command;

use labssh_proxy::config::auth::AuthConfig;

/// A CA key pair in its own directory; the directory goes with it.
pub struct Ca {
    /// Holds the CA's keys, students' keys and certificates, revoked lists.
    pub dir: tempfile::TempDir,
    /// The CA's private key (`ca`), its public key beside it (`ca.pub`).
    pub key: PathBuf,
}

/// Runs `ssh-keygen args`; panics with its stderr if it fails.
pub fn ssh_keygen(args: &[&str]) {
    let out = Command::new("ssh-keygen")
        .args(args)
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Ca {
    pub fn new() -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca");
        ssh_keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "test-ca",
            "-f",
            key.to_str().unwrap(),
        ]);
        Ca { dir, key }
    }

    /// The CA's public key file, for `trusted_user_ca_keys`.
    pub fn public(&self) -> PathBuf {
        self.key.with_extension("pub")
    }

    /// An empty revoked-keys file beside the CA, for `revoked_keys`.
    pub fn revoked_path(&self) -> PathBuf {
        let path = self.dir.path().join("revoked_keys");
        if !path.exists() {
            std::fs::write(&path, "").unwrap();
        }
        path
    }

    /// `[auth]` trusting this CA, with the revoked list of [`Ca::revoked_path`].
    pub fn auth(&self) -> AuthConfig {
        AuthConfig {
            trusted_user_ca_keys: vec![self.public()],
            revoked_keys: Some(self.revoked_path()),
            ..AuthConfig::default()
        }
    }

    /// A new ed25519 key `name` in the CA's directory (no certificate yet).
    pub fn student_key(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        ssh_keygen(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            name,
            "-f",
            path.to_str().unwrap(),
        ]);
        path
    }

    /// Signs `key`'s public key: `ssh-keygen -s ca -I id -n principals
    /// options... key.pub`. The stock client finds `KEY-cert.pub` by itself.
    /// `principals` empty: no `-n` (a certificate for no one).
    pub fn sign(&self, key: &Path, id: &str, principals: &str, options: &[&str]) {
        let ca = self.key.to_str().unwrap().to_owned();
        let public = key.with_extension("pub");
        let mut args = vec!["-q", "-s", &ca, "-I", id];
        if !principals.is_empty() {
            args.extend(["-n", principals]);
        }
        args.extend(options);
        let public = public.to_str().unwrap().to_owned();
        args.push(&public);
        ssh_keygen(&args);
    }

    /// A student key `name` with a certificate for `principals`, valid for an hour
    /// unless `options` say otherwise.
    pub fn student(&self, name: &str, principals: &str, options: &[&str]) -> PathBuf {
        let key = self.student_key(name);
        let mut all = vec!["-V", "-5m:+1h"];
        all.extend(options);
        self.sign(&key, name, principals, &all);
        key
    }
}
