//! Which environments a student's groups open: the one rule the controller
//! (placing a login, listing the choices, prestarting a class) and the agents
//! (before anything is made for a session, forward or ensure) both apply.

use crate::pb;

/// Whether `identity` may use `env`: everyone when the environment lists no
/// `allowed_groups`, else only a member of one of them. No identity is one
/// with no groups.
pub fn allows(env: &pb::Environment, identity: Option<&pb::Identity>) -> bool {
    env.allowed_groups.is_empty()
        || identity.is_some_and(|id| id.groups.iter().any(|g| env.allowed_groups.contains(g)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(groups: &[&str]) -> pb::Environment {
        pb::Environment {
            name: "e".into(),
            allowed_groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    fn id(groups: &[&str]) -> pb::Identity {
        pb::Identity {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn no_list_is_everyone_and_a_list_is_its_members() {
        assert!(allows(&env(&[]), None));
        assert!(allows(&env(&[]), Some(&id(&[]))));
        assert!(allows(
            &env(&["cs101", "staff"]),
            Some(&id(&["x", "staff"]))
        ));
        assert!(!allows(&env(&["cs101"]), Some(&id(&["cs102"]))));
        assert!(!allows(&env(&["cs101"]), Some(&id(&[]))));
        assert!(!allows(&env(&["cs101"]), None));
        // Names are compared exactly: no prefixes, no case folding.
        assert!(!allows(&env(&["cs101"]), Some(&id(&["cs1010", "CS101"]))));
    }
}
