//! Host keys: loaded from files, the first generated on first run.
//!
//! Every replica behind the balancer loads the same files, so students'
//! `known_hosts` sees one identity whichever replica answers.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::RngCore;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

/// Loads every configured host key; a missing *first* key is generated as
/// ed25519. Missing later keys are errors (they were configured on purpose).
pub fn load_host_keys(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<PrivateKey>> {
    let mut keys = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        if i == 0 && !path.exists() {
            keys.push(generate(path)?);
            continue;
        }
        let key = russh::keys::load_secret_key(path, None)
            .map_err(|e| anyhow::anyhow!("host key {}: {e}", path.display()))?;
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

fn generate(path: &Path) -> anyhow::Result<PrivateKey> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding host key: {e}"))?;
    write_private(path, pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing host key {}: {e}", path.display()))?;
    if let Ok(public) = key.public_key().to_openssh() {
        let _ = std::fs::write(path.with_extension("pub"), format!("{public}\n"));
    }
    tracing::info!(path = %path.display(), "generated a new ed25519 host key");
    Ok(key)
}

/// Creates a file readable only by its owner. Fails if it already exists, so
/// two replicas starting together never overwrite each other's key.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
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
    fn missing_extra_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_host_keys(&[dir.path().join("a"), dir.path().join("b")]).unwrap_err();
        assert!(err.to_string().contains("host key"), "{err}");
    }
}
