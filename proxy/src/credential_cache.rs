//! Cache of validated credentials, shared by all replicas through Redis.
//!
//! Entries are keyed by an HMAC of (user, password, authenticator, stamp),
//! never by the credential itself: a Redis dump reveals nothing usable, and
//! changing what the stamp is (the users file's stored hash) invalidates the
//! entries at once. Each holds the identity the authenticator answered
//! (groups, ids), so a hit spares the check — argon2, deliberately the slowest
//! step of a login, or a round trip to the directory — and a directory that is
//! down keeps answering for the students it vouched for within the TTL. Only
//! acceptances are cached.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::auth::identity::Identity;
use crate::redis_link::RedisLink;

/// Redis key prefix; the version lets the entry format change safely.
const KEY_PREFIX: &str = "labssh:auth:v2:";
/// Bound on the in-process cache so a flood of distinct logins can't grow it
/// without limit.
const MEMORY_MAX_ENTRIES: usize = 100_000;

/// What a cache lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// This credential was validated recently, as this identity.
    Hit(Identity),
    /// Not cached (or expired).
    Miss,
    /// The shared cache could not be asked; verify directly.
    Unavailable,
}

impl Lookup {
    /// Label used in logs and traces.
    pub fn as_str(&self) -> &'static str {
        match self {
            Lookup::Hit(_) => "hit",
            Lookup::Miss => "miss",
            Lookup::Unavailable => "unavailable",
        }
    }
}

enum Store {
    /// Per-replica cache: key → (expiry, identity).
    Memory(Mutex<HashMap<String, (Instant, Identity)>>),
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

    fn entry_key(&self, user: &str, password: &str, stamp: &Stamp) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        // Length-prefix each field so no two inputs share an encoding.
        for field in [user, password, stamp.authenticator, stamp.value] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        format!("{KEY_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Was this exact credential validated within the TTL, and as whom?
    pub async fn lookup(&self, user: &str, password: &str, stamp: &Stamp<'_>) -> Lookup {
        let key = self.entry_key(user, password, stamp);
        match &self.store {
            Store::Memory(map) => {
                let map = map.lock().expect("cache lock");
                match map.get(&key) {
                    Some((expiry, identity)) if *expiry > Instant::now() => {
                        Lookup::Hit(identity.clone())
                    }
                    _ => Lookup::Miss,
                }
            }
            Store::Redis(link) => {
                match link
                    .query::<Option<String>>(redis::cmd("GET").arg(&key))
                    .await
                {
                    // An entry that does not parse (another version's) is a miss.
                    Some(Some(text)) => serde_json::from_str(&text)
                        .map(Lookup::Hit)
                        .unwrap_or(Lookup::Miss),
                    Some(None) => Lookup::Miss,
                    None => Lookup::Unavailable,
                }
            }
        }
    }

    /// Remembers a credential that was just validated, and as whom.
    pub async fn store(&self, user: &str, password: &str, stamp: &Stamp<'_>, identity: &Identity) {
        let key = self.entry_key(user, password, stamp);
        match &self.store {
            Store::Memory(map) => {
                let mut map = map.lock().expect("cache lock");
                let now = Instant::now();
                if map.len() >= MEMORY_MAX_ENTRIES {
                    map.retain(|_, (expiry, _)| *expiry > now);
                    if map.len() >= MEMORY_MAX_ENTRIES {
                        map.clear();
                    }
                }
                map.insert(key, (now + self.ttl, identity.clone()));
            }
            Store::Redis(link) => {
                let ttl = self.ttl.as_secs().max(1);
                let Ok(value) = serde_json::to_string(identity) else {
                    return;
                };
                let _: Option<()> = link
                    .query(redis::cmd("SET").arg(&key).arg(value).arg("EX").arg(ttl))
                    .await;
            }
        }
    }
}

/// What a cached credential is tied to: the authenticator that validated it
/// and what it says must not have changed since (the users file's stored
/// hash).
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// The authenticator's name in `auth.chain`.
    pub authenticator: &'a str,
    /// Its stamp.
    pub value: &'a str,
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

    fn stamp(value: &str) -> Stamp<'_> {
        Stamp {
            authenticator: "users_file",
            value,
        }
    }

    #[tokio::test]
    async fn memory_cache_hits_only_the_same_credential() {
        let cache = CredentialCache::memory(b"k".to_vec(), Duration::from_secs(60));
        let mut alice = Identity::from("users_file");
        alice.add_groups(["cs101"]);
        assert_eq!(
            cache.lookup("alice", "pw", &stamp("$h1")).await,
            Lookup::Miss
        );
        cache.store("alice", "pw", &stamp("$h1"), &alice).await;
        assert_eq!(
            cache.lookup("alice", "pw", &stamp("$h1")).await,
            Lookup::Hit(alice)
        );
        assert_eq!(
            cache.lookup("alice", "pw2", &stamp("$h1")).await,
            Lookup::Miss
        );
        assert_eq!(cache.lookup("bob", "pw", &stamp("$h1")).await, Lookup::Miss);
        // A changed password hash invalidates the entry.
        assert_eq!(
            cache.lookup("alice", "pw", &stamp("$h2")).await,
            Lookup::Miss
        );
        // Another authenticator's entry is not this one's.
        let ldap = Stamp {
            authenticator: "ldap",
            value: "$h1",
        };
        assert_eq!(cache.lookup("alice", "pw", &ldap).await, Lookup::Miss);
    }

    #[test]
    fn keys_never_contain_the_credential() {
        let cache = CredentialCache::memory(b"k".to_vec(), Duration::from_secs(60));
        let key = cache.entry_key("alice", "hunter2", &stamp("$h"));
        assert!(!key.contains("hunter2") && !key.contains("alice"));
        assert_ne!(key, cache.entry_key("alic", "ehunter2", &stamp("$h")));
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
        let alice = Identity::from("users_file");
        assert_eq!(
            cache.lookup("alice", "pw", &stamp("$h")).await,
            Lookup::Unavailable
        );
        cache.store("alice", "pw", &stamp("$h"), &alice).await;
        assert_eq!(
            cache.lookup("alice", "pw", &stamp("$h")).await,
            Lookup::Unavailable
        );
    }
}
