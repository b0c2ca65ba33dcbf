//! The student's Pod: what Docker's create request says, in a pod's words.
//!
//! One container, [`CONTAINER`], pinned to the agent's node, restarted when PID 1
//! dies. With an `init_image` (and an environment that does not ask for `exec`) an
//! init container copies labssh-init and labssh-sftp into an emptyDir mounted
//! read-only at `/.labssh`, and labssh-init is the container's command, with the
//! environment's keepalive command (or the agent's) as its child: the image's own
//! ENTRYPOINT cannot be read without pulling it, so it is never run. Without, the
//! keepalive command is PID 1 and processes start through `pods/exec`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, PersistentVolumeClaimVolumeSource, Pod, PodSpec,
    ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use labssh_proto::pb;

use super::names::{hostname, is_dns_subdomain, pod_name};
use super::security::security;
use super::{annotations, labels, PodPlan, CONTAINER};
use crate::backend::docker::{INIT_PATH, LABEL_SPAWN};
use crate::backend::{home_dir, shell, BackendError};

/// The init container that fills the binaries' emptyDir.
pub const INSTALL_CONTAINER: &str = "labssh-install";
/// The emptyDir holding labssh-init and labssh-sftp.
pub const BIN_VOLUME: &str = "labssh-bin";
/// The memory emptyDir holding the helper's socket.
pub const RUN_VOLUME: &str = "labssh-run";
/// The student's home claim's volume.
pub const HOME_VOLUME: &str = "home";
/// Where the binaries' emptyDir is mounted.
const BIN_DIR: &str = "/.labssh";
/// The init image's labssh-init, which copies itself and labssh-sftp beside it.
const INSTALL_COMMAND: [&str; 3] = ["/labssh-init", "--install", BIN_DIR];
/// Two static binaries and room to spare.
const BIN_SIZE: &str = "64Mi";
/// One socket, as Docker's 64k tmpfs: nothing else fits.
const RUN_SIZE: &str = "1Mi";
/// Keepalive commands exit on TERM at once (Docker's stop timeout is 2 s; the kubelet
/// wants a little more to tear the sandbox down).
const TERMINATION_GRACE_SECS: i64 = 5;
/// The extended resource of NVIDIA's device plugin.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// `labssh.spawn` of a pod run by labssh-init.
const SPAWN_HELPER: &str = "helper";
/// `labssh.spawn` of a pod reached through `pods/exec` only.
const SPAWN_EXEC: &str = "exec";

/// `/dev/shm` of a pod whose environment sizes it.
const SHM_PATH: &str = "/dev/shm";

/// Whether the pod runs labssh-init as PID 1.
pub fn uses_helper(plan: &PodPlan) -> bool {
    !plan.config.init_image.is_empty() && plan.env.spawn != SPAWN_EXEC
}

/// The student's pod.
pub fn pod(plan: &PodPlan) -> Result<Pod, BackendError> {
    let env = plan.env;
    let refuse =
        |why: String| BackendError::CreateFailed(format!("environment {}: {why}", env.name));
    labssh_proto::egress::Egress::from_pb(env.network.as_ref())
        .map_err(|e| refuse(format!("network: {e}")))?;
    let helper = uses_helper(plan);
    let sec = security(env, plan.ids, plan.config.restricted(), helper)?;
    let isolation = env.isolation.clone().unwrap_or_default();
    if !isolation.devices.is_empty() {
        return Err(refuse(format!(
            "devices ({}) cannot be given to a pod; ask your operator for a device plugin",
            isolation.devices.join(", ")
        )));
    }
    // No pod field sets these: the runtime's rlimits and the kubelet's podPidsLimit
    // apply instead (see the readme). Refusing would make a catalogue shared with
    // Docker agents unusable here; the operator is told once per pod made.
    let unapplied: Vec<&str> = [
        (!isolation.rlimits.is_empty()).then_some("rlimits"),
        (env.pids_limit > 0).then_some("pids_limit"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !unapplied.is_empty() {
        tracing::info!(environment = %env.name, settings = ?unapplied, "settings without a Kubernetes pod form are not applied (the kubelet's podPidsLimit and the runtime's rlimits hold)");
    }
    let resources = resources(env)?;
    let main = if env.keepalive_cmd.is_empty() {
        plan.keepalive_cmd.to_vec()
    } else {
        env.keepalive_cmd.clone()
    };
    let mut volumes = vec![Volume {
        name: HOME_VOLUME.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: super::claim_name(plan.prefix, plan.user),
            read_only: None,
        }),
        ..Default::default()
    }];
    let mut mounts = vec![mount(HOME_VOLUME, &home_dir(plan.user), false)];
    let mut init_containers = None;
    let command = if helper {
        volumes.push(empty_dir(BIN_VOLUME, None, BIN_SIZE));
        volumes.push(empty_dir(RUN_VOLUME, Some("Memory"), RUN_SIZE));
        mounts.push(mount(BIN_VOLUME, BIN_DIR, true));
        mounts.push(mount(RUN_VOLUME, crate::backend::docker::RUN_DIR, false));
        init_containers = Some(vec![Container {
            name: INSTALL_CONTAINER.to_owned(),
            image: Some(plan.config.init_image.clone()),
            image_pull_policy: Some("IfNotPresent".to_owned()),
            command: Some(INSTALL_COMMAND.map(str::to_owned).to_vec()),
            volume_mounts: Some(vec![mount(BIN_VOLUME, BIN_DIR, false)]),
            // The same cpu and memory as the student's: the pod's request stays the
            // student container's and its QoS class is unchanged.
            resources: Some(ResourceRequirements {
                limits: without_gpu(resources.limits.as_ref()),
                requests: without_gpu(resources.requests.as_ref()),
                ..Default::default()
            }),
            security_context: Some(sec.install.clone()),
            ..Default::default()
        }]);
        let mut command: Vec<String> = [INIT_PATH, "--socket", crate::backend::helper::SOCKET_PATH]
            .map(str::to_owned)
            .to_vec();
        if let Some(user) = &sec.main_user {
            command.extend(["--user".to_owned(), user.clone()]);
        }
        if let Some(drop) = &sec.drop_caps {
            command.extend(["--drop-caps".to_owned(), drop.clone()]);
        }
        if !env.run_as_root {
            // No agent writes the image's passwd here: labssh-init adds the student.
            let (uid, gid) = super::security::student_ids(env, plan.ids);
            let entry = format!(
                "{}:{uid}:{gid}:{}:{}",
                plan.user,
                home_dir(plan.user),
                shell(env)
            );
            command.extend(["--account".to_owned(), entry]);
        }
        command.push("--".to_owned());
        command.extend(main);
        command
    } else {
        main
    };
    if isolation.shm_size_bytes > 0 {
        volumes.push(empty_dir(
            "dev-shm",
            Some("Memory"),
            &isolation.shm_size_bytes.to_string(),
        ));
        mounts.push(mount("dev-shm", SHM_PATH, false));
    }
    for (i, entry) in isolation.tmpfs.iter().enumerate() {
        let (path, options) = entry.split_once(':').unwrap_or((entry, ""));
        let name = format!("tmpfs-{i}");
        let size = options
            .split(',')
            .find_map(|o| o.strip_prefix("size="))
            .and_then(tmpfs_size);
        volumes.push(Volume {
            name: name.clone(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                size_limit: size.map(Quantity),
            }),
            ..Default::default()
        });
        mounts.push(mount(&name, path, false));
    }
    for (i, course) in isolation.mounts.iter().enumerate() {
        if !is_dns_subdomain(&course.source) {
            return Err(refuse(format!(
                "the course data for {} ('{}') is not a claim name Kubernetes accepts",
                course.target, course.source
            )));
        }
        let name = format!("course-{i}");
        volumes.push(Volume {
            name: name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: course.source.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
        mounts.push(mount(&name, &course.target, true));
    }
    let mut env_vars: Vec<EnvVar> = env
        .env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        })
        .collect();
    env_vars.sort_by(|a, b| a.name.cmp(&b.name));
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(env.image.clone()),
        image_pull_policy: Some(plan.config.image_pull_policy.clone()),
        command: Some(command),
        env: (!env_vars.is_empty()).then_some(env_vars),
        resources: Some(resources),
        security_context: Some(sec.container),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let mut labels = labels(plan);
    labels.insert(
        LABEL_SPAWN.to_owned(),
        if helper { SPAWN_HELPER } else { SPAWN_EXEC }.to_owned(),
    );
    let runtime_class = &plan.config.runtime_class;
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(plan.prefix, plan.user, &env.name)),
            namespace: Some(plan.config.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations(
                plan.agent,
                plan.prefix,
                plan.user,
                Some(&env.name),
            )),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(plan.node.to_owned()),
            restart_policy: Some("Always".to_owned()),
            hostname: Some(hostname(plan.user, &env.name)),
            enable_service_links: Some(false),
            automount_service_account_token: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECS),
            runtime_class_name: (!runtime_class.is_empty()).then(|| runtime_class.clone()),
            security_context: Some(sec.pod),
            init_containers,
            containers: vec![container],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    })
}

/// A volume mount.
fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// An emptyDir of at most `size`.
fn empty_dir(name: &str, medium: Option<&str>, size: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(str::to_owned),
            size_limit: Some(Quantity(size.to_owned())),
        }),
        ..Default::default()
    }
}

/// A tmpfs `size=` as a quantity: bytes, or Docker's binary `k`/`m`/`g` suffixes;
/// `None` for what has no Kubernetes form (a percentage of memory).
fn tmpfs_size(size: &str) -> Option<String> {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let number: u64 = digits.parse().ok().filter(|&n| n > 0)?;
    let suffix = match &size[digits.len()..] {
        "" | "b" => "",
        "k" | "K" => "Ki",
        "m" | "M" => "Mi",
        "g" | "G" => "Gi",
        _ => return None,
    };
    Some(format!("{number}{suffix}"))
}

/// Limits (and equal requests, for the Guaranteed QoS class where both cpu and memory
/// are set): cpu, memory, `nvidia.com/gpu`, and the writable layer's quota as
/// `ephemeral-storage`.
fn resources(env: &pb::Environment) -> Result<ResourceRequirements, BackendError> {
    let refuse =
        |why: String| BackendError::CreateFailed(format!("environment {}: {why}", env.name));
    let mut limits = BTreeMap::new();
    if env.nano_cpus > 0 {
        // Millicores, rounded up: never less than the environment asks.
        let millis = (env.nano_cpus + 999_999) / 1_000_000;
        limits.insert("cpu".to_owned(), Quantity(format!("{millis}m")));
    }
    if env.memory_bytes > 0 {
        limits.insert("memory".to_owned(), Quantity(env.memory_bytes.to_string()));
    }
    if let Some(gpus) = &env.gpus {
        if gpus.all || !gpus.device_ids.is_empty() {
            return Err(refuse(
                "GPUs are asked by count on Kubernetes (the device plugin picks them), not \"all\" or by id".to_owned(),
            ));
        }
        if gpus.count > 0 {
            limits.insert(GPU_RESOURCE.to_owned(), Quantity(gpus.count.to_string()));
        }
    }
    let requests = limits.clone();
    if env.layer_quota_mb > 0 {
        limits.insert(
            "ephemeral-storage".to_owned(),
            Quantity(format!("{}Mi", env.layer_quota_mb)),
        );
    }
    Ok(ResourceRequirements {
        limits: (!limits.is_empty()).then_some(limits),
        requests: (!requests.is_empty()).then_some(requests),
        claims: None,
    })
}

/// `resources` but the GPUs and the layer's quota, which are the student container's.
fn without_gpu(
    resources: Option<&BTreeMap<String, Quantity>>,
) -> Option<BTreeMap<String, Quantity>> {
    let mut resources = resources?.clone();
    resources.remove(GPU_RESOURCE);
    resources.remove("ephemeral-storage");
    (!resources.is_empty()).then_some(resources)
}

#[cfg(test)]
mod tests {
    use super::tmpfs_size;

    #[test]
    fn tmpfs_sizes() {
        assert_eq!(tmpfs_size("512m").as_deref(), Some("512Mi"));
        assert_eq!(tmpfs_size("1g").as_deref(), Some("1Gi"));
        assert_eq!(tmpfs_size("65536").as_deref(), Some("65536"));
        assert_eq!(tmpfs_size("50%"), None);
        assert_eq!(tmpfs_size("lots"), None);
        assert_eq!(tmpfs_size("0"), None);
    }
}
