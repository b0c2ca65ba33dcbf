//! The environment's isolation and GPUs in Docker's create request: the seccomp
//! profile, rlimits, a read-only root with its tmpfs mounts, /dev/shm's size, shared
//! read-only course data, devices and NVIDIA device requests.

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    DeviceMapping, DeviceRequest, HostConfig, Mount, MountType, MountVolumeOptions,
    ResourcesUlimits,
};
use labssh_proto::pb;

/// Label listing the GPUs (device ids, comma-separated) a container was given, so a
/// restarted agent knows who holds which.
pub const LABEL_GPUS: &str = "labssh.gpus";
/// The seccomp value meaning "Docker's own profile": nothing to pass.
const SECCOMP_DEFAULT: &str = "default";
/// Docker's device driver for NVIDIA GPUs (the NVIDIA container toolkit).
const GPU_DRIVER: &str = "nvidia";
/// The capability a GPU device request asks the driver for.
const GPU_CAPABILITY: &str = "gpu";
/// Devices are read, written and created (mknod) as `--device` grants by default.
const DEVICE_PERMISSIONS: &str = "rwm";
/// The passwd and group files a new container's own directory holds, bound read-only
/// over the image's: a read-only root's (Docker's archive upload cannot write one), and
/// every student container's whose image's files are known (`etc_files.rs`).
pub const ETC_FILES: [&str; 2] = ["passwd", "group"];

/// Adds `isolation`, the GPUs assigned (`gpus`, device ids) and the passwd files
/// (`etc_dir` holding [`ETC_FILES`]) to `host_config`.
pub fn apply(
    host_config: &mut HostConfig,
    isolation: Option<&pb::Isolation>,
    gpus: &[String],
    etc_dir: Option<&Path>,
) {
    if !gpus.is_empty() {
        host_config.device_requests = Some(vec![gpu_request(gpus)]);
    }
    if let Some(dir) = etc_dir {
        let mounts = host_config.mounts.get_or_insert_with(Vec::new);
        mounts.extend(ETC_FILES.iter().map(|file| Mount {
            target: Some(format!("/etc/{file}")),
            source: Some(dir.join(file).to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        }));
    }
    let Some(iso) = isolation else {
        return;
    };
    if !iso.seccomp.is_empty() && iso.seccomp != SECCOMP_DEFAULT {
        // The API takes the profile's JSON text (or "unconfined") where the CLI takes
        // a path.
        host_config
            .security_opt
            .get_or_insert_with(Vec::new)
            .push(format!("seccomp={}", iso.seccomp));
    }
    if !iso.rlimits.is_empty() {
        let mut ulimits: Vec<ResourcesUlimits> = iso
            .rlimits
            .iter()
            .map(|(name, limit)| ResourcesUlimits {
                name: Some(name.clone()),
                soft: Some(clamp(limit.soft)),
                hard: Some(clamp(limit.hard)),
            })
            .collect();
        ulimits.sort_by(|a, b| a.name.cmp(&b.name));
        host_config.ulimits = Some(ulimits);
    }
    if iso.read_only_root {
        host_config.readonly_rootfs = Some(true);
    }
    if !iso.tmpfs.is_empty() {
        let tmpfs = host_config.tmpfs.get_or_insert_with(HashMap::new);
        for entry in &iso.tmpfs {
            let (path, options) = entry.split_once(':').unwrap_or((entry, ""));
            tmpfs.insert(path.to_owned(), options.to_owned());
        }
    }
    if iso.shm_size_bytes > 0 {
        host_config.shm_size = Some(clamp(iso.shm_size_bytes));
    }
    let mounts = host_config.mounts.get_or_insert_with(Vec::new);
    mounts.extend(iso.mounts.iter().map(course_data));
    if !iso.devices.is_empty() {
        host_config.devices = Some(iso.devices.iter().map(|d| device(d)).collect());
    }
}

/// A shared course-data volume: read-only, and never filled from the image (a
/// read-only volume Docker copied an image's files into would be writable once).
fn course_data(mount: &pb::Mount) -> Mount {
    Mount {
        target: Some(mount.target.clone()),
        source: Some(mount.source.clone()),
        typ: Some(MountType::VOLUME),
        read_only: Some(true),
        volume_options: Some(MountVolumeOptions {
            no_copy: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `"/dev/fuse"` or `"HOST:CONTAINER[:PERMISSIONS]"`, as `--device` reads it.
fn device(entry: &str) -> DeviceMapping {
    let mut parts = entry.splitn(3, ':');
    let host = parts.next().unwrap_or_default().to_owned();
    let container = parts
        .next()
        .map(str::to_owned)
        .unwrap_or_else(|| host.clone());
    let permissions = parts.next().unwrap_or(DEVICE_PERMISSIONS).to_owned();
    DeviceMapping {
        path_on_host: Some(host),
        path_in_container: Some(container),
        cgroup_permissions: Some(permissions),
    }
}

/// The NVIDIA device request for the assigned devices: ids, never a count, so the
/// container keeps the same GPUs across restarts and the agent's bookkeeping (the
/// [`LABEL_GPUS`] label) says exactly which it holds.
fn gpu_request(gpus: &[String]) -> DeviceRequest {
    DeviceRequest {
        driver: Some(GPU_DRIVER.to_owned()),
        device_ids: Some(gpus.to_vec()),
        capabilities: Some(vec![vec![GPU_CAPABILITY.to_owned()]]),
        ..Default::default()
    }
}

/// Docker takes signed numbers; anything beyond is as good as unlimited.
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isolation() -> pb::Isolation {
        pb::Isolation {
            seccomp: r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.into(),
            rlimits: [(
                "nofile".to_owned(),
                pb::Rlimit {
                    soft: 64,
                    hard: 128,
                },
            )]
            .into(),
            read_only_root: true,
            tmpfs: vec!["/tmp:size=512m".into(), "/var/cache".into()],
            shm_size_bytes: 256 << 20,
            mounts: vec![pb::Mount {
                source: "course-data".into(),
                target: "/srv/course".into(),
            }],
            devices: vec!["/dev/fuse".into(), "/dev/a:/dev/b:r".into()],
        }
    }

    #[test]
    fn every_setting_lands_in_the_host_config() {
        let mut hc = HostConfig {
            security_opt: Some(vec!["no-new-privileges".into()]),
            tmpfs: Some(HashMap::from([("/.labssh/run".into(), "size=64k".into())])),
            mounts: Some(Vec::new()),
            ..Default::default()
        };
        apply(
            &mut hc,
            Some(&isolation()),
            &[],
            Some(Path::new("/run/l/c1")),
        );
        assert_eq!(
            hc.security_opt.unwrap(),
            [
                "no-new-privileges",
                r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW"}"#
            ]
        );
        let ulimit = &hc.ulimits.unwrap()[0];
        assert_eq!(
            (ulimit.name.as_deref(), ulimit.soft, ulimit.hard),
            (Some("nofile"), Some(64), Some(128))
        );
        assert_eq!(hc.readonly_rootfs, Some(true));
        let tmpfs = hc.tmpfs.unwrap();
        assert_eq!(tmpfs["/tmp"], "size=512m");
        assert_eq!(tmpfs["/var/cache"], "");
        assert_eq!(
            tmpfs["/.labssh/run"], "size=64k",
            "the helper's tmpfs stays"
        );
        assert_eq!(hc.shm_size, Some(256 << 20));
        let mounts = hc.mounts.unwrap();
        let passwd = &mounts[0];
        assert_eq!(passwd.target.as_deref(), Some("/etc/passwd"));
        assert_eq!(passwd.source.as_deref(), Some("/run/l/c1/passwd"));
        assert_eq!(passwd.read_only, Some(true));
        assert_eq!(mounts[1].target.as_deref(), Some("/etc/group"));
        let course = &mounts[2];
        assert_eq!(course.source.as_deref(), Some("course-data"));
        assert_eq!(course.typ, Some(MountType::VOLUME));
        assert_eq!(course.read_only, Some(true));
        let devices = hc.devices.unwrap();
        assert_eq!(devices[0].path_in_container.as_deref(), Some("/dev/fuse"));
        assert_eq!(devices[0].cgroup_permissions.as_deref(), Some("rwm"));
        assert_eq!(devices[1].path_on_host.as_deref(), Some("/dev/a"));
        assert_eq!(devices[1].path_in_container.as_deref(), Some("/dev/b"));
        assert_eq!(devices[1].cgroup_permissions.as_deref(), Some("r"));
        assert_eq!(hc.device_requests, None);
    }

    #[test]
    fn defaults_change_nothing() {
        let mut hc = HostConfig::default();
        apply(&mut hc, None, &[], None);
        assert_eq!(hc, HostConfig::default());
        let quiet = pb::Isolation {
            seccomp: "default".into(),
            ..Default::default()
        };
        apply(&mut hc, Some(&quiet), &[], None);
        assert_eq!(hc.security_opt, None);
        assert_eq!(hc.readonly_rootfs, None);
        assert!(
            hc.mounts.unwrap().is_empty(),
            "no passwd binds without files"
        );
    }

    #[test]
    fn passwd_files_are_bound_whenever_given() {
        let mut hc = HostConfig::default();
        apply(&mut hc, None, &[], Some(Path::new("/run/l/c2")));
        let mounts = hc.mounts.unwrap();
        let targets: Vec<_> = mounts.iter().map(|m| m.target.as_deref()).collect();
        assert_eq!(targets, [Some("/etc/passwd"), Some("/etc/group")]);
        assert!(mounts.iter().all(|m| m.read_only == Some(true)));
        assert_eq!(mounts[1].source.as_deref(), Some("/run/l/c2/group"));
        assert_eq!(hc.readonly_rootfs, None, "the root stays writable");
    }

    #[test]
    fn gpus_are_requested_by_id() {
        let mut hc = HostConfig::default();
        apply(&mut hc, None, &["1".into(), "3".into()], None);
        let request = &hc.device_requests.unwrap()[0];
        assert_eq!(request.driver.as_deref(), Some("nvidia"));
        assert_eq!(
            request.device_ids.as_deref(),
            Some(&["1".to_owned(), "3".to_owned()][..])
        );
        assert_eq!(request.count, None);
        assert_eq!(request.capabilities, Some(vec![vec!["gpu".to_owned()]]));
    }
}

#[cfg(test)]
mod plan_tests {
    use super::super::{ContainerPlan, LABEL_GPUS};
    use labssh_proto::pb;

    #[test]
    fn the_create_request_carries_the_assigned_gpus() {
        let env = pb::Environment {
            name: "gpu".into(),
            image: "img:1".into(),
            gpus: Some(pb::GpuRequest {
                count: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let gpus = ["0".to_owned(), "2".to_owned()];
        let body = ContainerPlan {
            agent: "a1",
            prefix: "lab",
            user: "bob",
            env: &env,
            default_keepalive: &[],
            helper: None,
            sftp: None,
            network: "none",
            gpus: &gpus,
            etc_dir: None,
        }
        .create_body();
        assert_eq!(body.labels.unwrap()[LABEL_GPUS], "0,2");
        let requests = body.host_config.unwrap().device_requests.unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(requests[0].device_ids.as_deref(), Some(&gpus[..]));
    }
}
