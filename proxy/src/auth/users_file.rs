//! The users file as an authenticator: argon2 password hashes, authorized
//! keys, and the groups and ids its records give.

use russh::keys::PublicKey;

use super::chain::Answer;
use super::identity::Identity;
use crate::state::Shared;
use crate::users::User;

/// The name in `auth.chain` and in identities.
pub(crate) const NAME: &str = "users_file";

/// The identity a record gives.
fn identity(user: &User) -> Identity {
    let mut identity = Identity::from(NAME);
    identity.add_groups(user.groups.iter().cloned());
    identity.uid = user.uid;
    identity.gid = user.gid;
    identity
}

/// The stored hash, or for a user without one the dummy hash, so the cache
/// lookup for an unknown user costs what a known one's does.
pub(crate) fn cache_stamp(shared: &Shared, user: &str) -> String {
    shared
        .users
        .current()
        .get(user)
        .and_then(|u| u.password_hash.clone())
        .or_else(|| crate::users::dummy_hash().map(str::to_owned))
        .unwrap_or_default()
}

/// Checks `password` against the stored hash. An unknown user, or one
/// without a password, takes the same steps (one argon2 verification,
/// against a dummy hash), so the time taken does not tell which accounts
/// exist.
pub(crate) async fn password(shared: &Shared, user: &str, password: &str) -> Answer {
    let record = shared.users.current().get(user).cloned();
    let stored = record.as_ref().and_then(|u| u.password_hash.clone());
    let (pw, h) = (password.to_string(), stored.clone());
    let ok = tokio::task::spawn_blocking(move || crate::users::password_matches(h.as_deref(), &pw))
        .await
        .unwrap_or(false);
    match (record, stored) {
        (Some(record), Some(_)) if ok => Answer::Accept(identity(&record)),
        (Some(_), Some(_)) => Answer::Reject("wrong password".into()),
        _ => Answer::Unknown,
    }
}

/// Whether `key` is one of the user's authorized keys.
pub(crate) fn key(shared: &Shared, user: &str, key: &PublicKey) -> Answer {
    match shared.users.current().get(user) {
        Some(u) if u.keys.iter().any(|k| k.key_data() == key.key_data()) => {
            Answer::Accept(identity(u))
        }
        Some(_) => Answer::Reject("key not authorized".into()),
        None => Answer::Unknown,
    }
}

/// The record's identity, if the file has the user.
pub(crate) fn lookup(shared: &Shared, user: &str) -> Answer {
    match shared.users.current().get(user) {
        Some(u) => Answer::Accept(identity(u)),
        None => Answer::Unknown,
    }
}
