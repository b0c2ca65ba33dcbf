//! Who the student's pod runs as and what it may do, per Pod Security level.
//!
//! `baseline` mirrors Docker: labssh-init runs as root with the helper's capabilities
//! (KILL, SETGID, SETUID, SETPCAP, which it takes from every child at once), children
//! run as the student with the environment's capabilities; every capability asked
//! must be one the baseline level lets a pod add. `restricted`: the whole pod runs as
//! the student (`runAsNonRoot`), no capability but `NET_BIND_SERVICE`, so a root
//! environment or one asking for more is refused here, in the student's words, rather
//! than by the API server's admission.
//!
//! Both: `allowPrivilegeEscalation: false` (Docker's no-new-privileges), drop ALL, and
//! a seccomp profile always set (Pod Security forbids `Unconfined` at both levels, so
//! an environment asking for it is refused).

use k8s_openapi::api::core::v1::{
    Capabilities, PodSecurityContext, SeccompProfile, SecurityContext,
};
use labssh_proto::pb;

use crate::backend::docker::{same_capability, HELPER_CAPS};
use crate::backend::BackendError;

/// The capabilities Pod Security `baseline` lets a container add (Kubernetes' list).
const BASELINE_CAPS: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// The one capability `restricted` lets a container add.
const RESTRICTED_CAP: &str = "NET_BIND_SERVICE";
/// The seccomp values meaning "the runtime's own profile".
const SECCOMP_DEFAULTS: [&str; 2] = ["", "default"];
/// The seccomp value Pod Security refuses at every level but `privileged`.
const SECCOMP_UNCONFINED: &str = "unconfined";
/// Where, under the kubelet's seccomp directory (`/var/lib/kubelet/seccomp`), an
/// environment's own profile must be for its pods: `labssh/{hash}.json`.
pub const SECCOMP_DIR: &str = "labssh";

/// Who the student's processes and the pod run as, and with what.
#[derive(Debug, Clone, PartialEq)]
pub struct Security {
    /// The pod's `securityContext`.
    pub pod: PodSecurityContext,
    /// The student container's `securityContext`.
    pub container: SecurityContext,
    /// The init container's `securityContext`.
    pub install: SecurityContext,
    /// labssh-init's `--user` (the main command's `uid:gid`; `None`: root).
    pub main_user: Option<String>,
    /// labssh-init's `--drop-caps` (capability numbers, comma-separated; `None`: none).
    pub drop_caps: Option<String>,
}

/// A capability as Kubernetes names it: upper case, no `CAP_`.
fn kube_cap(given: &str) -> String {
    let upper = given.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_owned()
}

/// The seccomp profile of `env`'s pods; an environment's own profile is `Localhost`
/// at [`seccomp_profile_path`].
fn seccomp(env: &pb::Environment) -> Result<SeccompProfile, BackendError> {
    let given = env.isolation.as_ref().map_or("", |i| i.seccomp.as_str());
    if SECCOMP_DEFAULTS.contains(&given) {
        return Ok(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        });
    }
    if given.eq_ignore_ascii_case(SECCOMP_UNCONFINED) {
        return Err(BackendError::CreateFailed(format!(
            "environment {}: seccomp \"unconfined\" is refused by the cluster's Pod Security; use \"default\" or a profile",
            env.name
        )));
    }
    Ok(SeccompProfile {
        type_: "Localhost".to_owned(),
        localhost_profile: seccomp_profile_path(env),
    })
}

/// Where the kubelet must find `env`'s own seccomp profile (relative to its seccomp
/// directory): `labssh/{first 12 bytes of its SHA-256, hex}.json`, so a changed
/// profile is a new file; `None` for the runtime's default or `unconfined`.
pub fn seccomp_profile_path(env: &pb::Environment) -> Option<String> {
    use sha2::{Digest, Sha256};
    let given = env.isolation.as_ref().map_or("", |i| i.seccomp.as_str());
    if SECCOMP_DEFAULTS.contains(&given) || given.eq_ignore_ascii_case(SECCOMP_UNCONFINED) {
        return None;
    }
    let digest = Sha256::digest(given.as_bytes());
    Some(format!("{SECCOMP_DIR}/{}.json", hex::encode(&digest[..12])))
}

/// `env`'s own seccomp profile as the node must hold it: the path under the kubelet's
/// seccomp directory ([`seccomp_profile_path`]) and the profile's JSON text; `None`
/// when the environment uses the runtime's default.
pub fn seccomp_profile_file(env: &pb::Environment) -> Option<(String, &str)> {
    let path = seccomp_profile_path(env)?;
    Some((path, env.isolation.as_ref()?.seccomp.as_str()))
}

/// The uid and gid the student's processes run as.
pub(super) fn student_ids(env: &pb::Environment, ids: Option<(u32, u32)>) -> (u32, u32) {
    let (mut uid, mut gid) = (env.uid, env.gid);
    if let Some((i_uid, i_gid)) = ids {
        if env.uid_from_identity {
            uid = i_uid;
        }
        if env.gid_from_identity {
            gid = i_gid;
        }
    }
    (uid, gid)
}

/// The pod's security for `env`, with the helper (labssh-init as PID 1) or not.
pub fn security(
    env: &pb::Environment,
    ids: Option<(u32, u32)>,
    restricted: bool,
    helper: bool,
) -> Result<Security, BackendError> {
    let refuse =
        |why: String| BackendError::CreateFailed(format!("environment {}: {why}", env.name));
    let seccomp = seccomp(env)?;
    let (uid, gid) = student_ids(env, ids);
    if !env.run_as_root && (uid == 0 || gid == 0) {
        return Err(refuse(
            "its uid or gid is 0 (not known for this login); nothing runs as it".to_owned(),
        ));
    }
    let asked: Vec<String> = env.cap_add.iter().map(|c| kube_cap(c)).collect();
    let base = |caps: Vec<String>| SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: (!caps.is_empty()).then_some(caps),
        }),
        read_only_root_filesystem: env
            .isolation
            .as_ref()
            .and_then(|i| i.read_only_root.then_some(true)),
        ..Default::default()
    };
    let install = SecurityContext {
        read_only_root_filesystem: Some(true),
        ..base(Vec::new())
    };
    let ids_arg = Some(format!("{uid}:{gid}"));
    if restricted {
        if env.run_as_root {
            return Err(refuse(
                "it runs as root, which the cluster's Pod Security (restricted) forbids".to_owned(),
            ));
        }
        if let Some(cap) = asked.iter().find(|c| *c != RESTRICTED_CAP) {
            return Err(refuse(format!(
                "capability {cap} cannot be granted under the cluster's Pod Security (restricted: only {RESTRICTED_CAP})"
            )));
        }
        let pod = PodSecurityContext {
            run_as_user: Some(i64::from(uid)),
            run_as_group: Some(i64::from(gid)),
            fs_group: Some(i64::from(gid)),
            fs_group_change_policy: Some("OnRootMismatch".to_owned()),
            run_as_non_root: Some(true),
            seccomp_profile: Some(seccomp),
            ..Default::default()
        };
        return Ok(Security {
            pod,
            container: base(asked),
            install,
            main_user: ids_arg,
            drop_caps: None,
        });
    }
    if let Some(cap) = asked.iter().find(|c| !BASELINE_CAPS.contains(&c.as_str())) {
        return Err(refuse(format!(
            "capability {cap} cannot be granted under the cluster's Pod Security (baseline)"
        )));
    }
    let pod = PodSecurityContext {
        // The home claim is the student's group's to write (Docker gives them the
        // directory itself; a claim's root belongs to whoever provisioned it).
        fs_group: (!env.run_as_root).then_some(i64::from(gid)),
        fs_group_change_policy: (!env.run_as_root).then(|| "OnRootMismatch".to_owned()),
        seccomp_profile: Some(seccomp),
        ..Default::default()
    };
    let main_user = (!env.run_as_root).then_some(ids_arg).flatten();
    if !helper {
        // pods/exec runs as the container's user: the student's own, or root for a
        // root environment.
        let (run_uid, run_gid) = if env.run_as_root { (0, 0) } else { (uid, gid) };
        let container = SecurityContext {
            run_as_user: Some(i64::from(run_uid)),
            run_as_group: Some(i64::from(run_gid)),
            ..base(asked)
        };
        return Ok(Security {
            pod,
            container,
            install,
            main_user,
            drop_caps: None,
        });
    }
    let mut caps = asked;
    let mut drop = Vec::new();
    for (name, number) in HELPER_CAPS {
        if !caps.iter().any(|c| same_capability(c, name)) {
            caps.push(name.to_owned());
            drop.push(number.to_string());
        }
    }
    let container = SecurityContext {
        // labssh-init starts processes as any user; the image's USER is unknown here.
        run_as_user: Some(0),
        run_as_group: Some(0),
        ..base(caps)
    };
    Ok(Security {
        pod,
        container,
        install,
        main_user,
        drop_caps: (!drop.is_empty()).then(|| drop.join(",")),
    })
}
