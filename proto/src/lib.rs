//! gRPC contracts between the labssh proxy, controller and backend agents.
//!
//! Generated code lives in [`pb`]; conversions to domain types live with the
//! crates that consume them.

/// Generated protobuf messages and tonic clients/servers for `labssh.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("labssh.v1");
}

/// Operators' and students' words for container states and actions: `running`,
/// `reset`, the proto names without their prefix, lower case.
impl pb::ContainerState {
    pub fn word(self) -> String {
        word(self.as_str_name(), "CONTAINER_STATE_")
    }
}

impl pb::ContainerVerb {
    pub fn word(self) -> String {
        word(self.as_str_name(), "CONTAINER_VERB_")
    }
}

fn word(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::pb;

    #[test]
    fn states_and_verbs_have_plain_words() {
        assert_eq!(pb::ContainerState::Paused.word(), "paused");
        assert_eq!(pb::ContainerVerb::Reset.word(), "reset");
    }
}

pub mod config;
pub mod duration;
pub mod egress;
pub mod forwarding;
pub mod groups;
pub mod names;
pub mod net;
pub mod place;
pub mod roles;
pub mod services;
pub mod tls;
