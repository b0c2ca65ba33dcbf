//! The Pod, PersistentVolumeClaim and NetworkPolicy made for a student's environment.
//! Pure functions of the plan: the API side (`api.rs`) only sends them.
//!
//! Names ([`names`]): `{prefix}-{user}.{env}` and `{prefix}-home-{user}` as on Docker
//! where Kubernetes accepts them, an escaped form with a hash where not. Labels as
//! Docker's (`labssh.agent`, `labssh.prefix`, `labssh.user`, `labssh.env`,
//! `labssh.settings`, `labssh.ids` as `UID-GID`, `labssh.spawn`) plus
//! `app.kubernetes.io/managed-by: labssh`; a value Kubernetes refuses as a label
//! (a user `_x`) is escaped there, and the real names are always in the annotations
//! of the same keys, which [`info_of`] reads. The pod ([`pod`]), its security per Pod
//! Security level ([`security`]) and its NetworkPolicy ([`network`]) have their own
//! modules.

mod names;
mod network;
mod pod;
mod security;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use labssh_proto::pb;

use crate::backend::docker::{
    parse_ids, LABEL_AGENT, LABEL_ENV, LABEL_IDS, LABEL_PREFIX, LABEL_SETTINGS, LABEL_USER,
};
use crate::backend::{ContainerInfo, ContainerState, ContainerVersion};
use crate::config::KubernetesConfig;

pub use names::{claim_name, is_dns_subdomain, label_value, pod_name};
pub use network::{allow_names, network_policy, network_policy_resolved, LINK_LOCAL};
pub use pod::{
    pod, uses_helper, BIN_VOLUME, GPU_RESOURCE, HOME_VOLUME, INSTALL_CONTAINER, RUN_VOLUME,
};
pub use security::{seccomp_profile_file, seccomp_profile_path, SECCOMP_DIR};

/// The name of the student's container in the pod.
pub const CONTAINER: &str = "student";
/// Kubernetes' recommended label saying who manages an object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value on labssh's objects.
pub const MANAGED_BY: &str = "labssh";

/// Everything a student's pod is made from.
#[derive(Debug, Clone)]
pub struct PodPlan<'a> {
    /// This agent's name (label `labssh.agent`).
    pub agent: &'a str,
    /// Object name prefix (label `labssh.prefix`), the agent's `container_prefix`.
    pub prefix: &'a str,
    /// The node the pod is pinned to.
    pub node: &'a str,
    /// `[kubernetes]`.
    pub config: &'a KubernetesConfig,
    /// The student.
    pub user: &'a str,
    /// Their environment.
    pub env: &'a pb::Environment,
    /// The uid and gid the login's identity gives, for an environment that takes them.
    pub ids: Option<(u32, u32)>,
    /// `settings_hash` of the environment now (label `labssh.settings`).
    pub settings: &'a str,
    /// The container command when the environment gives none.
    pub keepalive_cmd: &'a [String],
}

/// The label selector matching this agent's pods (and nothing of another agent or
/// prefix).
pub fn selector(agent: &str, prefix: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_AGENT}={},{LABEL_PREFIX}={}",
        label_value(agent),
        label_value(prefix)
    )
}

/// The labels every object of `plan` carries (the pod adds `labssh.spawn`).
fn labels(plan: &PodPlan) -> BTreeMap<String, String> {
    let env = plan.env;
    let mut labels = owner_labels(plan.agent, plan.prefix, plan.user);
    labels.insert(LABEL_ENV.to_owned(), label_value(&env.name));
    labels.insert(LABEL_SETTINGS.to_owned(), label_value(plan.settings));
    if !env.run_as_root && (env.uid_from_identity || env.gid_from_identity) {
        let (mut uid, mut gid) = (env.uid, env.gid);
        if let Some((i_uid, i_gid)) = plan.ids {
            if env.uid_from_identity {
                uid = i_uid;
            }
            if env.gid_from_identity {
                gid = i_gid;
            }
        }
        labels.insert(LABEL_IDS.to_owned(), format!("{uid}-{gid}"));
    }
    labels
}

/// The labels naming whose an object is.
fn owner_labels(agent: &str, prefix: &str, user: &str) -> BTreeMap<String, String> {
    [
        (LABEL_MANAGED_BY, MANAGED_BY.to_owned()),
        (LABEL_AGENT, label_value(agent)),
        (LABEL_PREFIX, label_value(prefix)),
        (LABEL_USER, label_value(user)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The real names, which labels may only carry escaped.
fn annotations(
    agent: &str,
    prefix: &str,
    user: &str,
    env: Option<&str>,
) -> BTreeMap<String, String> {
    let mut annotations: BTreeMap<String, String> = [
        (LABEL_AGENT, agent),
        (LABEL_PREFIX, prefix),
        (LABEL_USER, user),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(env) = env {
        annotations.insert(LABEL_ENV.to_owned(), env.to_owned());
    }
    annotations
}

/// The student's home claim: ReadWriteOnce, `home_size`, the `storage_class` when set.
pub fn home_claim(plan: &PodPlan) -> PersistentVolumeClaim {
    let config = plan.config;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(plan.prefix, plan.user)),
            namespace: Some(config.namespace.clone()),
            labels: Some(owner_labels(plan.agent, plan.prefix, plan.user)),
            annotations: Some(annotations(plan.agent, plan.prefix, plan.user, None)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: (!config.storage_class.is_empty())
                .then(|| config.storage_class.clone()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(config.home_size.clone()),
                )])),
                limits: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// `key` of `pod`: the annotation (the real name), else the label.
fn named<'a>(pod: &'a Pod, key: &str) -> Option<&'a String> {
    let meta = &pod.metadata;
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .or_else(|| meta.labels.as_ref().and_then(|l| l.get(key)))
}

/// What the inventory says of a pod of this agent's; `None` for a pod without
/// labssh's labels.
///
/// Deleting (a deletion timestamp), `Succeeded`, `Failed` (evicted, refused by the
/// kubelet) or `Unknown` (its node lost) is Stopped; `Running` with the student's
/// container running is Running; anything else (`Pending`: scheduling, pulling, the
/// init container; `Running` while the container restarts) is Creating. No GPUs are
/// tracked: the device plugin assigns them.
pub fn info_of(pod: &Pod) -> Option<ContainerInfo> {
    let labels = pod.metadata.labels.as_ref()?;
    if labels.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY) {
        return None;
    }
    let user = named(pod, LABEL_USER)?.clone();
    let environment = named(pod, LABEL_ENV)?.clone();
    let status = pod.status.as_ref();
    let student = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|list| list.iter().find(|c| c.name == CONTAINER));
    let state = if pod.metadata.deletion_timestamp.is_some() {
        ContainerState::Stopped
    } else {
        match status.and_then(|s| s.phase.as_deref()) {
            Some("Succeeded" | "Failed" | "Unknown") => ContainerState::Stopped,
            Some("Running")
                if student
                    .and_then(|c| c.state.as_ref())
                    .is_some_and(|s| s.running.is_some()) =>
            {
                ContainerState::Running
            }
            _ => ContainerState::Creating,
        }
    };
    let ids = labels.get(LABEL_IDS).and_then(|v| {
        let (uid, gid) = v.split_once('-')?;
        Some((uid.parse().ok()?, gid.parse().ok()?))
    });
    Some(ContainerInfo {
        name: pod.metadata.name.clone().unwrap_or_default(),
        user,
        environment,
        state,
        gpus: Vec::new(),
        version: ContainerVersion {
            image: student.map(|c| c.image_id.clone()).unwrap_or_default(),
            settings: labels.get(LABEL_SETTINGS).cloned().unwrap_or_default(),
        },
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| std::time::SystemTime::from(t.0)),
        ids: ids.or_else(|| labels.get(LABEL_IDS).and_then(|v| parse_ids(v))),
    })
}
