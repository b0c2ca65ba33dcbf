//! The login's identity applied to an environment, before anything is made for
//! a session, forward, listener or ensure: the student's groups must open it
//! (`allowed_groups`), and where its uid/gid come from the identity
//! (`uid = "ldap"`) the identity's fill them in, so every later use of the
//! environment (the container's home owner, its passwd and group entries, each
//! spawned process, hooks, the keep-alive file's owner) sees the student's own.
//!
//! The identity is taken as given: only proxies and the controller may call the
//! rpcs that carry one (`labssh_proto::roles`), and the controller has placed
//! the login against the same groups already; the agent checks them again so a
//! call that skipped placement makes nothing either.
//!
//! The catalogue sends 0 for an id that comes from the identity, and an identity
//! never gives 0 (root), so an environment still holding 0 there is one whose
//! ids are not known yet ([`ids_known`]); nothing runs as it.

use labssh_proto::groups::allows;
use labssh_proto::pb;

use crate::backend::SharedBackend;

/// Why a login's identity cannot have a container of the environment; the text is
/// for the student.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// None of the student's groups is in the environment's `allowed_groups`.
    #[error("environment '{0}' is not available to you")]
    NotAllowed(String),
    /// The environment takes the uid (or gid) from the identity, which has none.
    #[error("environment '{environment}' takes your {what} from the directory, and your account has none; ask your operator")]
    Missing {
        /// The environment.
        environment: String,
        /// "uid" or "gid".
        what: &'static str,
    },
    /// The identity's uid (or gid) is 0: students never run as root this way.
    #[error("environment '{environment}' takes your {what} from the directory, and yours is 0 (root), which labssh does not run students as; ask your operator")]
    Root {
        /// The environment.
        environment: String,
        /// "uid" or "gid".
        what: &'static str,
    },
}

/// `env` as `identity`'s login uses it: refused unless its groups open it, with
/// the identity's uid/gid where the environment takes them from it.
pub fn apply(
    mut env: pb::Environment,
    identity: Option<&pb::Identity>,
) -> Result<pb::Environment, IdentityError> {
    if !allows(&env, identity) {
        return Err(IdentityError::NotAllowed(env.name));
    }
    if env.run_as_root {
        return Ok(env);
    }
    let wanted = [
        (env.uid_from_identity, identity.and_then(|i| i.uid), "uid"),
        (env.gid_from_identity, identity.and_then(|i| i.gid), "gid"),
    ];
    for (i, (from_identity, id, what)) in wanted.into_iter().enumerate() {
        if !from_identity {
            continue;
        }
        let environment = || env.name.clone();
        let id = match id {
            None => {
                return Err(IdentityError::Missing {
                    environment: environment(),
                    what,
                })
            }
            Some(0) => {
                return Err(IdentityError::Root {
                    environment: environment(),
                    what,
                })
            }
            Some(id) => id,
        };
        if i == 0 {
            env.uid = id;
        } else {
            env.gid = id;
        }
    }
    Ok(env)
}

/// `env` for an existing container whose ids were recorded as `recorded` when it
/// was made (hooks, idle checks: no login's identity at hand); `None` when the
/// environment takes them from an identity and none were recorded.
pub fn recorded(mut env: pb::Environment, recorded: Option<(u32, u32)>) -> Option<pb::Environment> {
    if env.run_as_root || !(env.uid_from_identity || env.gid_from_identity) {
        return Some(env);
    }
    let (uid, gid) = recorded?;
    if env.uid_from_identity {
        env.uid = uid;
    }
    if env.gid_from_identity {
        env.gid = gid;
    }
    ids_known(&env).then_some(env)
}

/// `env` for the existing `container` ([`recorded`]): its ids from `known` (the
/// inventory's) or else asked of the backend; `None` when they cannot be had, and
/// the caller runs nothing as the student.
pub async fn of_container(
    backend: &SharedBackend,
    env: pb::Environment,
    container: &str,
    known: Option<(u32, u32)>,
) -> Option<pb::Environment> {
    if env.run_as_root || !(env.uid_from_identity || env.gid_from_identity) {
        return Some(env);
    }
    let ids = match known {
        Some(ids) => Some(ids),
        None => backend.recorded_ids(container).await.unwrap_or_else(|e| {
            tracing::debug!(container, error = %e, "cannot read the ids a container was made with");
            None
        }),
    };
    let env = recorded(env, ids);
    if env.is_none() {
        tracing::warn!(container, "no recorded uid/gid for a container whose environment takes them from the identity; nothing run as the student");
    }
    env
}

/// Whether the uid/gid `env` runs students as are known: fixed, or filled in from
/// an identity.
pub fn ids_known(env: &pb::Environment) -> bool {
    env.run_as_root
        || !((env.uid_from_identity && env.uid == 0) || (env.gid_from_identity && env.gid == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(groups: &[&str], uid: bool, gid: bool) -> pb::Environment {
        pb::Environment {
            name: "nfs".into(),
            allowed_groups: groups.iter().map(|g| g.to_string()).collect(),
            uid: if uid { 0 } else { 1000 },
            gid: if gid { 0 } else { 1000 },
            uid_from_identity: uid,
            gid_from_identity: gid,
            ..Default::default()
        }
    }

    fn id(groups: &[&str], uid: Option<u32>, gid: Option<u32>) -> pb::Identity {
        pb::Identity {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            uid,
            gid,
        }
    }

    #[test]
    fn the_identitys_ids_fill_in_those_it_gives() {
        let alice = id(&["cs101"], Some(20001), Some(20000));
        let both = apply(env(&[], true, true), Some(&alice)).unwrap();
        assert_eq!((both.uid, both.gid), (20001, 20000));
        assert!(ids_known(&both));
        let gid_only = apply(env(&[], false, true), Some(&alice)).unwrap();
        assert_eq!((gid_only.uid, gid_only.gid), (1000, 20000));
        // Fixed ids stay whatever the identity says.
        let fixed = apply(env(&[], false, false), Some(&alice)).unwrap();
        assert_eq!((fixed.uid, fixed.gid), (1000, 1000));
        assert!(!ids_known(&env(&[], true, true)));
    }

    #[test]
    fn no_id_or_root_is_one_clear_line() {
        let no_uid = apply(env(&[], true, true), Some(&id(&[], None, Some(1)))).unwrap_err();
        assert_eq!(
            no_uid.to_string(),
            "environment 'nfs' takes your uid from the directory, and your account has none; ask your operator"
        );
        let no_gid = apply(env(&[], true, true), Some(&id(&[], Some(20001), None))).unwrap_err();
        assert!(no_gid.to_string().contains("takes your gid"), "{no_gid}");
        assert!(apply(env(&[], true, true), None).is_err());
        let root = apply(env(&[], true, true), Some(&id(&[], Some(0), Some(0)))).unwrap_err();
        assert!(root.to_string().contains("yours is 0 (root)"), "{root}");
    }

    #[test]
    fn groups_are_checked_first() {
        let refused = apply(
            env(&["cs101"], false, false),
            Some(&id(&["cs102"], None, None)),
        );
        assert_eq!(
            refused.unwrap_err().to_string(),
            "environment 'nfs' is not available to you"
        );
        assert!(apply(env(&["cs101"], false, false), None).is_err());
        assert!(apply(
            env(&["cs101"], false, false),
            Some(&id(&["cs101"], None, None))
        )
        .is_ok());
    }

    #[test]
    fn a_students_own_ids_do_not_make_their_container_outdated() {
        use crate::backend::settings_hash;
        let catalogue = env(&[], true, true);
        let alice = apply(catalogue.clone(), Some(&id(&[], Some(20001), Some(20000)))).unwrap();
        assert_eq!(settings_hash(&alice), settings_hash(&catalogue));
        // Fixed ids still count.
        let mut other = env(&[], false, false);
        let before = settings_hash(&other);
        other.uid = 1001;
        assert_ne!(settings_hash(&other), before);
    }

    #[test]
    fn existing_containers_use_their_recorded_ids() {
        let nfs = recorded(env(&[], true, true), Some((20001, 20000))).unwrap();
        assert_eq!((nfs.uid, nfs.gid), (20001, 20000));
        assert_eq!(recorded(env(&[], true, true), None), None);
        assert_eq!(recorded(env(&[], true, true), Some((0, 0))), None);
        let fixed = recorded(env(&[], false, false), None).unwrap();
        assert_eq!(fixed.uid, 1000);
    }
}
