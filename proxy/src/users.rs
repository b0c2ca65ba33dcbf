//! The users file: TOML with argon2 password hashes and authorized keys.
//!
//! ```toml
//! [users.alice]
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! authorized_keys = ["ssh-ed25519 AAAAC3... alice@laptop"]
//! groups = ["cs101"]
//! uid = 20001   # optional: for environments with uid = "ldap"
//! gid = 20001
//! ```
//!
//! `groups` name the classes a student is in: `labssh prestart --group` and the
//! controller's `[[schedule]]` read them (the controller's `users_file`). Groups
//! from LDAP come with the identity chain (issue 14).
//!
//! The file is re-read whenever its size, inode or modification time change,
//! so `labssh user add` takes effect on a running proxy at the next login.
//! A file that fails to parse is reported and the previous contents stay in
//! force, so a half-edited file never locks the class out.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use russh::keys::PublicKey;
use serde::{Deserialize, Serialize};

/// On-disk form of the users file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// Accounts by login name.
    #[serde(default)]
    pub users: BTreeMap<String, UserRecord>,
}

/// On-disk form of one account.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// PHC-format argon2 hash; absent means password login is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// OpenSSH `authorized_keys` lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorized_keys: Vec<String>,
    /// The groups (classes) the student is in; see [`labssh_proto::names::valid_group`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The numeric uid for environments with `uid = "ldap"` (ids from the
    /// login's identity), as a directory would give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The numeric gid, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// One account, parsed for authentication.
#[derive(Debug, Clone)]
pub struct User {
    /// PHC-format argon2 hash, if password login is enabled.
    pub password_hash: Option<String>,
    /// Keys allowed to log in.
    pub keys: Vec<PublicKey>,
    /// Its groups with valid names (others are logged and left out).
    pub groups: Vec<String>,
    /// Its numeric uid, if the file gives one.
    pub uid: Option<u32>,
    /// Its numeric gid, if the file gives one.
    pub gid: Option<u32>,
}

/// Errors reading or writing the users file.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("{0}")]
    Invalid(String),
}

/// Identifies one version of the file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// Inode, which changes when the file is replaced by rename.
    ino: u64,
    /// Size in bytes.
    len: u64,
    /// Modification time in nanoseconds.
    mtime_ns: i128,
}

/// Accounts by login name, as parsed from one version of the file.
pub type UserMap = Arc<HashMap<String, User>>;

/// The users file, reloaded on change.
pub struct Users {
    /// Path of the TOML file.
    path: PathBuf,
    /// The last successfully parsed contents and the stamp they came from.
    loaded: Mutex<(Option<Stamp>, UserMap)>,
}

impl Users {
    /// Opens the users file. A missing file is an empty user list (logins
    /// fail until users are added); a malformed one is an error.
    pub fn open(path: &Path) -> Result<Users, UsersError> {
        let users = Users {
            path: path.to_path_buf(),
            loaded: Mutex::new((None, Arc::new(HashMap::new()))),
        };
        if path.exists() {
            let (stamp, map) = users.read()?;
            *users.loaded.lock().expect("users lock") = (Some(stamp), Arc::new(map));
        } else {
            tracing::warn!(path = %path.display(), "users file does not exist yet; no one can log in until users are added");
        }
        Ok(users)
    }

    /// The current accounts, re-reading the file if it changed.
    pub fn current(&self) -> UserMap {
        let stamp = stamp_of(&self.path);
        let mut loaded = self.loaded.lock().expect("users lock");
        if stamp.is_some() && stamp != loaded.0 {
            match self.read() {
                Ok((stamp, map)) => {
                    tracing::info!(path = %self.path.display(), users = map.len(), "users file reloaded");
                    *loaded = (Some(stamp), Arc::new(map));
                }
                Err(e) => {
                    // Remember the stamp so the error is logged once per change.
                    tracing::error!("users file not reloaded, keeping the previous version: {e}");
                    loaded.0 = stamp;
                }
            }
        }
        loaded.1.clone()
    }

    fn read(&self) -> Result<(Stamp, HashMap<String, User>), UsersError> {
        let stamp = stamp_of(&self.path).ok_or_else(|| UsersError::Io {
            path: self.path.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        let file = read_file(&self.path)?;
        let mut map = HashMap::new();
        for (name, record) in file.users {
            let mut keys = Vec::new();
            for (i, line) in record.authorized_keys.iter().enumerate() {
                match parse_authorized_key(line) {
                    Ok(key) => keys.push(key),
                    Err(e) => tracing::warn!(
                        path = %self.path.display(),
                        "users.{name}.authorized_keys[{i}] ignored: {e}"
                    ),
                }
            }
            let groups = record
                .groups
                .into_iter()
                .filter(|g| {
                    let ok = labssh_proto::names::valid_group(g);
                    if !ok {
                        tracing::warn!(path = %self.path.display(), "users.{name}.groups: {g:?} ignored: use {}", labssh_proto::names::GROUP_RULE);
                    }
                    ok
                })
                .collect();
            map.insert(
                name,
                User {
                    password_hash: record.password_hash,
                    keys,
                    groups,
                    uid: record.uid,
                    gid: record.gid,
                },
            );
        }
        Ok((stamp, map))
    }
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: meta.ino(),
        len: meta.len(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
    })
}

/// Reads and parses the users file.
pub fn read_file(path: &Path) -> Result<UsersFile, UsersError> {
    let text = std::fs::read_to_string(path).map_err(|source| UsersError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| UsersError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}

/// Mode of a users file labssh creates: it holds password hashes.
const USERS_FILE_MODE: u32 = 0o600;
/// Permission bits never kept from an existing users file: any access for
/// others (its hashes could be cracked offline) and the special bits.
const USERS_FILE_STRIPPED: u32 = 0o7007;

/// Writes the users file atomically (a temporary file in the same directory,
/// renamed over it), so a running proxy never reads half a file. The
/// temporary file is created 0600; it then takes an existing file's mode,
/// less any access for others, and its owner, so an update never makes the
/// hashes readable to more people than before.
pub fn write_file(path: &Path, file: &UsersFile) -> Result<(), UsersError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let text = toml::to_string_pretty(file).map_err(|e| UsersError::Invalid(e.to_string()))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |source| UsersError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let existing = match std::fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let mode = existing.as_ref().map_or(USERS_FILE_MODE, |m| {
        m.permissions().mode() & 0o7777 & !USERS_FILE_STRIPPED
    });
    let mut tmp = tempfile::Builder::new()
        .prefix(".users.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    let handle = tmp.as_file();
    handle
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    if let Some(meta) = &existing {
        let mine = handle.metadata().map_err(io)?;
        if (mine.uid(), mine.gid()) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::fchown(handle, Some(meta.uid()), Some(meta.gid())).map_err(|e| {
                UsersError::Invalid(format!(
                    "{}: cannot keep its owner {}:{} (run as that user or root): {e}",
                    path.display(),
                    meta.uid(),
                    meta.gid()
                ))
            })?;
        }
    }
    tmp.write_all(text.as_bytes()).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    // The rename is durable once the directory is; a failure here loses nothing.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Parses one `authorized_keys` line (options are not supported).
pub fn parse_authorized_key(line: &str) -> Result<PublicKey, String> {
    PublicKey::from_openssh(line.trim()).map_err(|e| format!("not an OpenSSH public key: {e}"))
}

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

/// Checks a password against a PHC hash. Slow on purpose: call it from a
/// blocking thread.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(e) => {
            tracing::error!("malformed password hash in users file: {e}");
            false
        }
    }
}

/// A hash of a random password nobody knows, made once (on first use) with
/// the same parameters as [`hash_password`]: what a password for an unknown
/// user is checked against, so that costs what a wrong password costs.
pub fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let secret: [u8; 32] = rand::random();
            hash_password(&hex::encode(secret))
                .map_err(|e| tracing::error!("no dummy hash for unknown users: {e}"))
                .ok()
        })
        .as_deref()
}

/// Whether `password` matches the stored `hash`. Without one (an unknown
/// user, or one without a password) the answer is no, after the same argon2
/// verification against [`dummy_hash`]. Slow on purpose: call it from a
/// blocking thread.
pub fn password_matches(hash: Option<&str>, password: &str) -> bool {
    matches_with(hash, password, verify_password)
}

fn matches_with(
    hash: Option<&str>,
    password: &str,
    verify: impl FnOnce(&str, &str) -> bool,
) -> bool {
    match hash {
        Some(hash) => verify(password, hash),
        None => {
            if let Some(dummy) = dummy_hash() {
                // The work is the point; its answer is not.
                std::hint::black_box(verify(password, dummy));
            }
            false
        }
    }
}

/// Adds or updates a user: a new password hash and/or an extra authorized
/// key.
pub fn add_user(
    path: &Path,
    name: &str,
    password: Option<&str>,
    key_line: Option<&str>,
) -> Result<(), UsersError> {
    add_user_in_groups(path, name, password, key_line, &[])
}

/// [`add_user`], also adding the user to `groups` (kept: groups already there
/// stay). Used by `labssh user add`.
pub fn add_user_in_groups(
    path: &Path,
    name: &str,
    password: Option<&str>,
    key_line: Option<&str>,
    groups: &[String],
) -> Result<(), UsersError> {
    if let Some(bad) = groups.iter().find(|g| !labssh_proto::names::valid_group(g)) {
        return Err(UsersError::Invalid(format!(
            "group {bad:?}: use {}",
            labssh_proto::names::GROUP_RULE
        )));
    }
    if !crate::login_name::valid_user(name) {
        return Err(UsersError::Invalid(format!(
            "{name:?}: {}",
            crate::login_name::LoginNameError::User
        )));
    }
    let mut file = if path.exists() {
        read_file(path)?
    } else {
        UsersFile::default()
    };
    let record = file.users.entry(name.to_string()).or_default();
    if let Some(password) = password {
        if password.is_empty() {
            return Err(UsersError::Invalid("password must not be empty".into()));
        }
        record.password_hash = Some(hash_password(password)?);
    }
    if let Some(line) = key_line {
        let key = parse_authorized_key(line).map_err(UsersError::Invalid)?;
        let exists = record.authorized_keys.iter().any(|l| {
            parse_authorized_key(l)
                .map(|k| k.key_data() == key.key_data())
                .unwrap_or(false)
        });
        if !exists {
            record.authorized_keys.push(line.trim().to_string());
        }
    }
    for group in groups {
        if !record.groups.contains(group) {
            record.groups.push(group.clone());
        }
    }
    write_file(path, &file)
}

/// Sets a user's numeric uid and/or gid (for environments with `uid = "ldap"`);
/// the user must exist. 0 is refused: it would run the student as root.
pub fn set_ids(
    path: &Path,
    name: &str,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), UsersError> {
    for (key, id) in [("uid", uid), ("gid", gid)] {
        if id == Some(0) {
            return Err(UsersError::Invalid(format!(
                "{key} 0 is root; give the student's own id"
            )));
        }
    }
    let mut file = read_file(path)?;
    let record = file
        .users
        .get_mut(name)
        .ok_or_else(|| UsersError::Invalid(format!("{name:?} is not in {}", path.display())))?;
    if uid.is_some() {
        record.uid = uid;
    }
    if gid.is_some() {
        record.gid = gid;
    }
    write_file(path, &file)
}

#[cfg(test)]
mod tests;
