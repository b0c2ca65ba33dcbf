//! The login's identity as the controller and agents receive it: its groups
//! (which environments the student may use) and its uid/gid (what they run
//! as where an environment says `uid = "ldap"`). Where it came from, a
//! webhook's environment override and a certificate's restrictions stay in
//! the proxy, which applies them itself.

use labssh_proto::pb;

use crate::auth::identity::Identity;

/// The wire form of `identity`.
pub fn wire_identity(identity: &Identity) -> pb::Identity {
    pb::Identity {
        groups: identity.groups.clone(),
        uid: identity.uid,
        gid: identity.gid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_ids_travel_and_nothing_else() {
        let mut id = Identity::from("users_file");
        id.add_groups(["cs101"]);
        id.uid = Some(20001);
        id.environment = Some("gpu".into());
        id.restrictions.force_command = Some("date".into());
        let wire = wire_identity(&id);
        assert_eq!(wire.groups, ["cs101"]);
        assert_eq!((wire.uid, wire.gid), (Some(20001), None));
        assert_eq!(
            wire_identity(&Identity::from("ldap")),
            pb::Identity::default()
        );
    }
}
