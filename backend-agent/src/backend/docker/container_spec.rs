//! What a student's container looks like in Docker: names, labels and create options.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, RestartPolicy, RestartPolicyNameEnum,
};
use labssh_proto::pb;

use crate::backend::home_dir;

/// Label holding the student's name.
pub const LABEL_USER: &str = "labssh.user";
/// Label holding the environment's name.
pub const LABEL_ENV: &str = "labssh.env";
/// Label holding the owning agent's name; the inventory filters on it.
pub const LABEL_AGENT: &str = "labssh.agent";
/// Label holding the name prefix, so operators can find one deployment's objects.
pub const LABEL_PREFIX: &str = "labssh.prefix";

/// Keepalive commands exit on TERM at once; a short timeout keeps stops quick when they
/// do not.
const STOP_TIMEOUT_SECS: i64 = 2;
/// Linux host names are at most 64 bytes; stay within the DNS label limit.
const MAX_HOSTNAME_LEN: usize = 63;

/// Container name: `{prefix}-{user}-{env}`.
pub fn container_name(prefix: &str, user: &str, env: &str) -> String {
    format!("{prefix}-{user}-{env}")
}

/// Home volume name: `{prefix}-home-{user}`, shared by all of a student's environments.
pub fn volume_name(prefix: &str, user: &str) -> String {
    format!("{prefix}-home-{user}")
}

/// Host name shown in the student's prompt: `{user}-{env}`.
pub fn hostname(user: &str, env: &str) -> String {
    let mut name = format!("{user}-{env}");
    name.truncate(MAX_HOSTNAME_LEN);
    name
}

/// Labels of a student's container.
pub fn container_labels(
    agent: &str,
    prefix: &str,
    user: &str,
    env: &str,
) -> HashMap<String, String> {
    [
        (LABEL_USER, user),
        (LABEL_ENV, env),
        (LABEL_AGENT, agent),
        (LABEL_PREFIX, prefix),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Labels of a student's home volume.
pub fn volume_labels(agent: &str, prefix: &str, user: &str) -> HashMap<String, String> {
    [
        (LABEL_USER, user),
        (LABEL_AGENT, agent),
        (LABEL_PREFIX, prefix),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Everything needed to build the create request.
pub struct ContainerPlan<'a> {
    /// This agent's name.
    pub agent: &'a str,
    /// Object name prefix.
    pub prefix: &'a str,
    /// The student.
    pub user: &'a str,
    /// The environment from the catalogue.
    pub env: &'a pb::Environment,
    /// Used when the environment has no keepalive command.
    pub default_keepalive: &'a [String],
}

impl ContainerPlan<'_> {
    /// The Docker create request: the environment's limits, all capabilities dropped
    /// except the granted ones, no-new-privileges, and the home volume mounted.
    pub fn create_body(&self) -> ContainerCreateBody {
        let env = self.env;
        let cmd = if env.keepalive_cmd.is_empty() {
            self.default_keepalive.to_vec()
        } else {
            env.keepalive_cmd.clone()
        };
        let positive = |v: i64| (v > 0).then_some(v);
        let host_config = HostConfig {
            memory: positive(env.memory_bytes),
            nano_cpus: positive(env.nano_cpus),
            pids_limit: positive(env.pids_limit),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: (!env.cap_add.is_empty()).then(|| env.cap_add.clone()),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            mounts: Some(vec![Mount {
                target: Some(home_dir(self.user)),
                source: Some(volume_name(self.prefix, self.user)),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            init: Some(false),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(env.image.clone()),
            hostname: Some(hostname(self.user, &env.name)),
            // The keepalive command must run as given, not as arguments to the image's
            // entrypoint.
            entrypoint: Some(Vec::new()),
            cmd: Some(cmd),
            labels: Some(container_labels(
                self.agent,
                self.prefix,
                self.user,
                &env.name,
            )),
            stop_timeout: Some(STOP_TIMEOUT_SECS),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_carries_limits_and_labels() {
        let env = pb::Environment {
            name: "gpu".into(),
            image: "img:1".into(),
            memory_bytes: 64 << 20,
            pids_limit: 0,
            cap_add: vec!["CHOWN".into()],
            ..Default::default()
        };
        let keepalive = vec!["/bin/sleep".to_owned(), "infinity".to_owned()];
        let body = ContainerPlan {
            agent: "a1",
            prefix: "lab",
            user: "bob",
            env: &env,
            default_keepalive: &keepalive,
        }
        .create_body();
        assert_eq!(body.cmd.as_ref(), Some(&keepalive));
        assert_eq!(body.hostname.as_deref(), Some("bob-gpu"));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_AGENT], "a1");
        assert_eq!(labels[LABEL_USER], "bob");
        let hc = body.host_config.unwrap();
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(hc.pids_limit, None);
        assert_eq!(hc.cap_add, Some(vec!["CHOWN".to_owned()]));
        let mount = &hc.mounts.unwrap()[0];
        assert_eq!(mount.source.as_deref(), Some("lab-home-bob"));
        assert_eq!(mount.target.as_deref(), Some("/home/bob"));
    }
}
