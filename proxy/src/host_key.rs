//! Host keys: loaded from files, the first generated on first run.
//!
//! Every replica behind the balancer loads the same files, so students'
//! `known_hosts` sees one identity whichever replica answers.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

/// Why the host keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// A configured key file could not be read or parsed.
    #[error("host key {}: {source}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: russh::keys::Error,
    },
    /// A new key could not be encoded.
    #[error("encoding host key: {0}")]
    Encode(#[source] russh::keys::ssh_key::Error),
    /// A new key could not be written.
    #[error("writing host key {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Loads every configured host key; a missing *first* key is generated as
/// ed25519. Missing later keys are errors (they were configured on purpose).
pub fn load_host_keys(paths: &[PathBuf]) -> Result<Vec<PrivateKey>, HostKeyError> {
    let mut keys = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        if i == 0 && !path.exists() {
            match generate(path) {
                Ok(key) => {
                    keys.push(key);
                    continue;
                }
                // Another replica sharing the file won the race: use its key.
                Err(e) if path.exists() => {
                    tracing::debug!("host key created concurrently: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
        let key =
            russh::keys::load_secret_key(path, None).map_err(|source| HostKeyError::Load {
                path: path.clone(),
                source,
            })?;
        keys.push(key);
    }
    for key in &keys {
        tracing::info!(
            fingerprint = %key.public_key().fingerprint(Default::default()),
            algorithm = %key.algorithm(),
            "host key loaded"
        );
    }
    Ok(keys)
}

fn generate(path: &Path) -> Result<PrivateKey, HostKeyError> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(HostKeyError::Encode)?;
    write_private(path, pem.as_bytes()).map_err(|source| HostKeyError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    if let Ok(public) = key.public_key().to_openssh() {
        let _ = std::fs::write(path.with_extension("pub"), format!("{public}\n"));
    }
    tracing::info!(path = %path.display(), "generated a new ed25519 host key");
    Ok(key)
}

/// Creates a file readable only by its owner, atomically: it is written
/// under a temporary name and hard-linked into place, which fails if the
/// file exists. Two replicas starting together never overwrite each other's
/// key, and neither ever reads a half-written one.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut suffix = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let tmp = dir.join(format!(".tmp-{}", hex::encode(suffix)));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host_ed25519_key");
        let first = load_host_keys(std::slice::from_ref(&path)).unwrap();
        let second = load_host_keys(std::slice::from_ref(&path)).unwrap();
        assert_eq!(
            first[0].public_key().key_data(),
            second[0].public_key().key_data()
        );
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn replicas_starting_together_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host_ed25519_key");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || load_host_keys(&[path]).unwrap())
            })
            .collect();
        let keys: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for k in &keys {
            assert_eq!(
                k[0].public_key().key_data(),
                keys[0][0].public_key().key_data()
            );
        }
    }

    #[test]
    fn missing_extra_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_host_keys(&[dir.path().join("a"), dir.path().join("b")]).unwrap_err();
        assert!(err.to_string().contains("host key"), "{err}");
    }
}
