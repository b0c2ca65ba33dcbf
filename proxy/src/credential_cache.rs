//! Cache of validated credentials, shared by all replicas through Redis.
//!
//! Entries are keyed by an HMAC of (user, password, stored hash), never by the
//! credential itself: a Redis dump reveals nothing usable, and changing a
//! user's password hash invalidates their entries at once. A hit spares the
//! argon2 verification, which is deliberately the slowest step of a login.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::redis_link::RedisLink;

/// Redis key prefix; the version lets the entry format change safely.
const KEY_PREFIX: &str = "labssh:auth:v1:";
/// Bound on the in-process cache so a flood of distinct logins can't grow it
/// without limit.
const MEMORY_MAX_ENTRIES: usize = 100_000;

/// What a cache lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// This credential was validated recently.
    Hit,
    /// Not cached (or expired).
    Miss,
    /// The shared cache could not be asked; verify directly.
    Unavailable,
}

impl Lookup {
    /// Label used in logs and traces.
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Unavailable => "unavailable",
        }
    }
}

enum Store {
    /// Per-replica cache: key → expiry.
    Memory(Mutex<HashMap<String, Instant>>),
    /// Shared cache in Redis.
    Redis(Arc<RedisLink>),
}

/// Validated-credential cache.
pub struct CredentialCache {
    /// HMAC key shared by all replicas.
    key: Vec<u8>,
    /// How long a validated credential stays valid.
    ttl: Duration,
    /// Where entries live.
    store: Store,
}

impl CredentialCache {
    /// An in-process cache (no Redis configured).
    pub fn memory(key: Vec<u8>, ttl: Duration) -> Self {
        CredentialCache {
            key,
            ttl,
            store: Store::Memory(Mutex::new(HashMap::new())),
        }
    }

    /// A Redis-backed cache. Connects lazily: a Redis that is down at start
    /// must not keep the proxy from serving.
    pub fn redis(link: Arc<RedisLink>, key: Vec<u8>, ttl: Duration) -> Self {
        CredentialCache {
            key,
            ttl,
            store: Store::Redis(link),
        }
    }

    /// Name of the backing store, for logs.
    pub fn kind(&self) -> &'static str {
        match self.store {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }

    fn entry_key(&self, user: &str, password: &str, stored_hash: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        // Length-prefix each field so no two inputs share an encoding.
        for field in [user, password, stored_hash] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        format!("{KEY_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Was this exact credential validated within the TTL?
    pub async fn lookup(&self, user: &str, password: &str, stored_hash: &str) -> Lookup {
        let key = self.entry_key(user, password, stored_hash);
        match &self.store {
            Store::Memory(map) => {
                let map = map.lock().expect("cache lock");
                match map.get(&key) {
                    Some(expiry) if *expiry > Instant::now() => Lookup::Hit,
                    _ => Lookup::Miss,
                }
            }
            Store::Redis(link) => match link.query::<i64>(redis::cmd("EXISTS").arg(&key)).await {
                Some(1) => Lookup::Hit,
                Some(_) => Lookup::Miss,
                None => Lookup::Unavailable,
            },
        }
    }

    /// Remembers a credential that was just validated.
    pub async fn store(&self, user: &str, password: &str, stored_hash: &str) {
        let key = self.entry_key(user, password, stored_hash);
        match &self.store {
            Store::Memory(map) => {
                let mut map = map.lock().expect("cache lock");
                let now = Instant::now();
                if map.len() >= MEMORY_MAX_ENTRIES {
                    map.retain(|_, expiry| *expiry > now);
                    if map.len() >= MEMORY_MAX_ENTRIES {
                        map.clear();
                    }
                }
                map.insert(key, now + self.ttl);
            }
            Store::Redis(link) => {
                let ttl = self.ttl.as_secs().max(1);
                let _: Option<()> = link
                    .query(redis::cmd("SET").arg(&key).arg(1).arg("EX").arg(ttl))
                    .await;
            }
        }
    }
}

/// Loads the HMAC key, generating a random one (mode 0600) on first run.
/// Replicas starting together agree on one key: the loser of the creation
/// race reads the winner's.
pub fn load_or_create_key(path: &Path) -> std::io::Result<Vec<u8>> {
    let read = || -> std::io::Result<Vec<u8>> {
        let text = std::fs::read_to_string(path)?;
        hex::decode(text.trim()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a hex key: {e}", path.display()),
            )
        })
    };
    let with_path =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    match read() {
        Ok(key) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            match crate::host_key::write_private(path, hex::encode(&key).as_bytes()) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "generated credential-cache key");
                    Ok(key)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    read().map_err(with_path)
                }
                Err(e) => Err(with_path(e)),
            }
        }
        Err(e) => Err(with_path(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_cache_hits_only_the_same_credential() {
        let cache = CredentialCache::memory(b"k".to_vec(), Duration::from_secs(60));
        assert_eq!(cache.lookup("alice", "pw", "$h1").await, Lookup::Miss);
        cache.store("alice", "pw", "$h1").await;
        assert_eq!(cache.lookup("alice", "pw", "$h1").await, Lookup::Hit);
        assert_eq!(cache.lookup("alice", "pw2", "$h1").await, Lookup::Miss);
        assert_eq!(cache.lookup("bob", "pw", "$h1").await, Lookup::Miss);
        // A changed password hash invalidates the entry.
        assert_eq!(cache.lookup("alice", "pw", "$h2").await, Lookup::Miss);
    }

    #[test]
    fn keys_never_contain_the_credential() {
        let cache = CredentialCache::memory(b"k".to_vec(), Duration::from_secs(60));
        let key = cache.entry_key("alice", "hunter2", "$h");
        assert!(!key.contains("hunter2") && !key.contains("alice"));
        assert_ne!(key, cache.entry_key("alic", "ehunter2", "$h"));
    }

    #[test]
    fn replicas_starting_together_share_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.key");
        let keys: Vec<Vec<u8>> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || load_or_create_key(&path).unwrap())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert!(keys.iter().all(|k| k == &keys[0] && k.len() == 32));
    }

    #[tokio::test]
    async fn redis_down_is_unavailable_not_an_error() {
        // Port 1 on loopback: nothing listens, connection refused at once.
        let link = Arc::new(RedisLink::new("redis://127.0.0.1:1/").unwrap());
        let cache = CredentialCache::redis(link, b"k".to_vec(), Duration::from_secs(60));
        assert_eq!(cache.lookup("alice", "pw", "$h").await, Lookup::Unavailable);
        cache.store("alice", "pw", "$h").await;
        assert_eq!(cache.lookup("alice", "pw", "$h").await, Lookup::Unavailable);
    }
}
