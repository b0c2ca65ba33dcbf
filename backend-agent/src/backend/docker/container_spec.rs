//! What a student's container looks like in Docker: names, labels and create options;
//! the environment's isolation and GPUs in [`isolation`].

mod isolation;

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, RestartPolicy, RestartPolicyNameEnum,
};
use labssh_proto::pb;

use crate::backend::home_dir;
pub use isolation::{ETC_FILES, LABEL_GPUS};

/// Label holding the student's name.
pub const LABEL_USER: &str = "labssh.user";
/// Label holding the environment's name.
pub const LABEL_ENV: &str = "labssh.env";
/// Label holding the owning agent's name; the inventory filters on it.
pub const LABEL_AGENT: &str = "labssh.agent";
/// Label holding the name prefix, so operators can find one deployment's objects.
pub const LABEL_PREFIX: &str = "labssh.prefix";
/// Label saying how processes start in the container: "helper" or "exec".
pub const LABEL_SPAWN: &str = "labssh.spawn";
/// Label with [`crate::backend::settings_hash`] of the environment the container was
/// made from; a container whose hash is not its environment's now is outdated.
pub const LABEL_SETTINGS: &str = "labssh.settings";
/// Label with the "UID:GID" student processes run as, on containers of an environment
/// that takes them from the login's identity (`uid = "ldap"`): a later login with
/// other ids is refused instead of running as someone the home does not belong to.
pub const LABEL_IDS: &str = "labssh.ids";

/// The ids a [`LABEL_IDS`] value records.
pub fn parse_ids(label: &str) -> Option<(u32, u32)> {
    let (uid, gid) = label.split_once(':')?;
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

/// Label with the container layout's generation, [`GENERATION`]. Helper containers
/// without it (or with an older one) are recreated at the next login, home kept.
pub const LABEL_GENERATION: &str = "labssh.generation";
/// 2: the helper's socket on a tmpfs private to the container (before, a host directory
/// the container could write), no CAP_DAC_READ_SEARCH for labssh-init.
pub const GENERATION: &str = "2";

/// Where labssh-init is mounted (read-only) in a helper container.
pub const INIT_PATH: &str = "/.labssh/init";
/// Where the built-in SFTP server (labssh-sftp) is mounted (read-only) in containers.
pub const SFTP_SERVER_PATH: &str = "/.labssh/sftp-server";
/// Where the tmpfs holding the helper's socket is mounted in a helper container.
pub const RUN_DIR: &str = "/.labssh/run";
/// The tmpfs holds one socket: room for it and little else, so not even root in the
/// container can fill anything through it; only root may enter it.
const RUN_DIR_OPTIONS: &str = "size=64k,nr_inodes=16,mode=0700,noexec,nosuid,nodev";
/// What labssh-init needs for itself and takes away from everything else in the
/// container: switching to the student's ids (SETUID, SETGID), signalling sessions of
/// other users (KILL) and removing these from the bounding set at start (SETPCAP), so
/// no process it starts can ever hold them. Docker hands them to PID 1 only because a
/// container's bounding set is fixed at creation; the agent never uses Docker exec in
/// such a container, which would hand them out again. Docker's names and the kernel's
/// numbers.
pub const HELPER_CAPS: [(&str, u32); 4] =
    [("KILL", 5), ("SETGID", 6), ("SETUID", 7), ("SETPCAP", 8)];

/// Keepalive commands exit on TERM at once; a short timeout keeps stops quick when they
/// do not.
const STOP_TIMEOUT_SECS: i64 = 2;
/// Linux host names are at most 64 bytes; stay within the DNS label limit.
const MAX_HOSTNAME_LEN: usize = 63;

/// Container name: `{prefix}-{user}.{env}`. User names never contain a `.`, so the name
/// tells user and environment apart (with `-`, "a-b" + "c" and "a" + "b-c" met).
pub fn container_name(prefix: &str, user: &str, env: &str) -> String {
    format!("{prefix}-{user}.{env}")
}

/// The name containers had before [`container_name`]; such containers keep working.
pub fn legacy_container_name(prefix: &str, user: &str, env: &str) -> String {
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
        (LABEL_GENERATION, GENERATION),
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
    /// Used when the environment has no keepalive command (Docker exec containers).
    pub default_keepalive: &'a [String],
    /// Set for a container run by labssh-init.
    pub helper: Option<HelperPlan<'a>>,
    /// labssh-sftp on this host, mounted at [`SFTP_SERVER_PATH`] in every container.
    pub sftp: Option<&'a Path>,
    /// Docker's network mode: the network of the environment's egress policy, or
    /// `none`.
    pub network: &'a str,
    /// The GPUs (device ids) assigned to it; empty for none.
    pub gpus: &'a [String],
    /// The host directory holding its passwd and group files, bound over the image's.
    pub etc_dir: Option<&'a Path>,
}

/// What makes a container a helper container.
pub struct HelperPlan<'a> {
    /// labssh-init on this host.
    pub init: &'a Path,
    /// The image's ENTRYPOINT.
    pub image_entrypoint: Vec<String>,
    /// The image's CMD.
    pub image_cmd: Vec<String>,
    /// The image's USER; empty is root.
    pub image_user: String,
}

impl ContainerPlan<'_> {
    /// The Docker create request: the environment's limits, all capabilities dropped
    /// except the granted ones, no-new-privileges, the home volume mounted, on its
    /// network. A
    /// helper container runs labssh-init as root with the helper's capabilities added
    /// (it takes them from everything else at once), the image's own command (or the
    /// environment's keepalive command) as its child, the binary mounted and a private
    /// tmpfs for its socket. Any container gets the built-in SFTP server mounted, when
    /// there is one.
    pub fn create_body(&self) -> ContainerCreateBody {
        let env = self.env;
        let start = match &self.helper {
            None => self.exec_start(),
            Some(helper) => helper_start(env, helper),
        };
        let mut labels = container_labels(self.agent, self.prefix, self.user, &env.name);
        labels.insert(LABEL_SPAWN.to_owned(), start.spawn.to_owned());
        if !self.gpus.is_empty() {
            labels.insert(LABEL_GPUS.to_owned(), self.gpus.join(","));
        }
        labels.insert(
            LABEL_SETTINGS.to_owned(),
            crate::backend::settings_hash(env),
        );
        if !env.run_as_root && (env.uid_from_identity || env.gid_from_identity) {
            labels.insert(LABEL_IDS.to_owned(), format!("{}:{}", env.uid, env.gid));
        }
        let mut mounts = vec![Mount {
            target: Some(home_dir(self.user)),
            source: Some(volume_name(self.prefix, self.user)),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }];
        if let Some(sftp) = self.sftp {
            mounts.push(bind(sftp, SFTP_SERVER_PATH, true));
        }
        mounts.extend(start.mounts);
        let positive = |v: i64| (v > 0).then_some(v);
        let mut host_config = HostConfig {
            memory: positive(env.memory_bytes),
            nano_cpus: positive(env.nano_cpus),
            pids_limit: positive(env.pids_limit),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: (!start.cap_add.is_empty()).then_some(start.cap_add),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            mounts: Some(mounts),
            tmpfs: start.tmpfs,
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            init: Some(false),
            network_mode: Some(self.network.to_owned()),
            ..Default::default()
        };
        isolation::apply(
            &mut host_config,
            env.isolation.as_ref(),
            self.gpus,
            self.etc_dir,
        );
        ContainerCreateBody {
            image: Some(env.image.clone()),
            hostname: Some(hostname(self.user, &env.name)),
            user: start.user,
            entrypoint: Some(start.entrypoint),
            cmd: Some(start.cmd),
            labels: Some(labels),
            stop_timeout: Some(STOP_TIMEOUT_SECS),
            host_config: Some(host_config),
            ..Default::default()
        }
    }

    /// A container for Docker exec: the keepalive command as PID 1.
    fn exec_start(&self) -> Start {
        let env = self.env;
        let cmd = if env.keepalive_cmd.is_empty() {
            self.default_keepalive.to_vec()
        } else {
            env.keepalive_cmd.clone()
        };
        Start {
            spawn: "exec",
            // The keepalive command must run as given, not as arguments to the
            // image's entrypoint.
            entrypoint: Vec::new(),
            cmd,
            user: None,
            cap_add: env.cap_add.clone(),
            mounts: Vec::new(),
            tmpfs: None,
        }
    }
}

/// How a container starts and what that needs besides the common settings.
struct Start {
    /// The `labssh.spawn` label: how processes start in it.
    spawn: &'static str,
    /// Its entrypoint (empty: none, not the image's).
    entrypoint: Vec<String>,
    /// Its command.
    cmd: Vec<String>,
    /// Who its first process runs as; `None` keeps the image's USER.
    user: Option<String>,
    /// Every capability it holds.
    cap_add: Vec<String>,
    /// Mounts besides the home volume and the SFTP server.
    mounts: Vec<Mount>,
    /// Its tmpfs mounts.
    tmpfs: Option<HashMap<String, String>>,
}

/// A container run by labssh-init: init as root with the helper's capabilities (it
/// takes them from everything else at once), the image's own command (or the
/// environment's keepalive command) as its child, the binary mounted and a private
/// tmpfs for its socket.
fn helper_start(env: &pb::Environment, helper: &HelperPlan<'_>) -> Start {
    let mut cap_add = env.cap_add.clone();
    let mut drop = Vec::new();
    for (name, number) in HELPER_CAPS {
        if !env.cap_add.iter().any(|c| same_capability(c, name)) {
            cap_add.push(name.to_owned());
            drop.push(number.to_string());
        }
    }
    let main = if env.keepalive_cmd.is_empty() {
        [&helper.image_entrypoint[..], &helper.image_cmd[..]].concat()
    } else {
        env.keepalive_cmd.clone()
    };
    let entrypoint = [
        INIT_PATH,
        "--socket",
        crate::backend::helper::SOCKET_PATH,
        "--user",
        &helper.image_user,
        "--drop-caps",
        &drop.join(","),
        "--",
    ]
    .map(str::to_owned)
    .to_vec();
    Start {
        spawn: "helper",
        entrypoint,
        cmd: main,
        // labssh-init runs as root to start processes as any user; the image's USER
        // is for its command.
        user: Some("0:0".to_owned()),
        cap_add,
        mounts: vec![bind(helper.init, INIT_PATH, true)],
        tmpfs: Some(HashMap::from([(
            RUN_DIR.to_owned(),
            RUN_DIR_OPTIONS.to_owned(),
        )])),
    }
}

fn bind(source: &Path, target: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(target.to_owned()),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// Docker accepts capability names with or without `CAP_`, in any case.
pub fn same_capability(given: &str, name: &str) -> bool {
    let given = given.to_ascii_uppercase();
    given.strip_prefix("CAP_").unwrap_or(&given) == name
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The create request of bob's container on agent a1 with prefix lab.
    fn bob_body(
        env: &pb::Environment,
        default_keepalive: &[String],
        helper: Option<HelperPlan<'_>>,
        sftp: Option<&Path>,
    ) -> ContainerCreateBody {
        ContainerPlan {
            agent: "a1",
            prefix: "lab",
            user: "bob",
            env,
            default_keepalive,
            helper,
            sftp,
            network: "lab-net-0123456789",
            gpus: &[],
            etc_dir: None,
        }
        .create_body()
    }

    /// The mount at `target`.
    fn mount_at<'a>(mounts: &'a [Mount], target: &str) -> Option<&'a Mount> {
        mounts.iter().find(|m| m.target.as_deref() == Some(target))
    }

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
        let body = bob_body(
            &env,
            &keepalive,
            None,
            Some(Path::new("/run/labssh/labssh-sftp")),
        );
        assert_eq!(body.cmd.as_ref(), Some(&keepalive));
        assert_eq!(body.hostname.as_deref(), Some("bob-gpu"));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_AGENT], "a1");
        assert_eq!(labels[LABEL_USER], "bob");
        let hc = body.host_config.unwrap();
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(hc.network_mode.as_deref(), Some("lab-net-0123456789"));
        assert_eq!(hc.pids_limit, None);
        assert_eq!(hc.cap_add, Some(vec!["CHOWN".to_owned()]));
        let mounts = hc.mounts.unwrap();
        let mount = &mounts[0];
        assert_eq!(mount.source.as_deref(), Some("lab-home-bob"));
        assert_eq!(mount.target.as_deref(), Some("/home/bob"));
        // The SFTP server is mounted in exec containers too, read-only.
        let sftp = mount_at(&mounts, SFTP_SERVER_PATH).expect("sftp server mounted");
        assert_eq!(sftp.source.as_deref(), Some("/run/labssh/labssh-sftp"));
        assert_eq!(sftp.typ, Some(MountType::BIND));
        assert_eq!(sftp.read_only, Some(true));
        assert!(!mounts
            .iter()
            .any(|m| m.target.as_deref() == Some(INIT_PATH)));
        assert_eq!(labels[LABEL_SPAWN], "exec");
        assert_eq!(body.entrypoint, Some(Vec::new()));
    }

    #[test]
    fn helper_container_wraps_the_image_command() {
        let env = pb::Environment {
            name: "web".into(),
            image: "img:1".into(),
            cap_add: vec!["cap_setuid".into(), "NET_BIND_SERVICE".into()],
            ..Default::default()
        };
        let helper = HelperPlan {
            init: Path::new("/run/labssh/labssh-init"),
            image_entrypoint: vec!["/entry.sh".into()],
            image_cmd: vec!["httpd".into(), "-f".into()],
            image_user: "www".into(),
        };
        let body = bob_body(
            &env,
            &[],
            Some(helper),
            Some(Path::new("/run/labssh/labssh-sftp")),
        );
        let entrypoint = body.entrypoint.unwrap();
        assert_eq!(entrypoint[0], INIT_PATH);
        let arg = |name: &str| {
            let i = entrypoint.iter().position(|a| a == name).unwrap();
            entrypoint[i + 1].clone()
        };
        assert_eq!(arg("--user"), "www");
        assert_eq!(arg("--socket"), "/.labssh/run/helper.sock");
        // SETUID was granted by the environment, so children keep it.
        assert_eq!(arg("--drop-caps"), "5,6,8");
        assert_eq!(entrypoint.last().unwrap(), "--");
        assert_eq!(body.cmd.unwrap(), ["/entry.sh", "httpd", "-f"]);
        assert_eq!(body.user.as_deref(), Some("0:0"));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_SPAWN], "helper");
        assert_eq!(labels[LABEL_GENERATION], GENERATION);
        let hc = body.host_config.unwrap();
        let caps = hc.cap_add.unwrap();
        for cap in [
            "cap_setuid",
            "NET_BIND_SERVICE",
            "KILL",
            "SETGID",
            "SETPCAP",
        ] {
            assert!(caps.contains(&cap.to_owned()), "{cap} in {caps:?}");
        }
        assert!(!caps.contains(&"SETUID".to_owned()));
        // What the shocker technique needs is never granted.
        assert!(!caps.iter().any(|c| same_capability(c, "DAC_READ_SEARCH")));
        let mounts = hc.mounts.unwrap();
        let init = mount_at(&mounts, INIT_PATH).unwrap();
        assert_eq!(init.read_only, Some(true));
        // The socket's directory is no host directory but a small private tmpfs.
        assert!(!mounts.iter().any(|m| m.target.as_deref() == Some(RUN_DIR)));
        let tmpfs = hc.tmpfs.unwrap();
        assert!(tmpfs[RUN_DIR].contains("size=64k"), "{tmpfs:?}");
        assert!(tmpfs[RUN_DIR].contains("mode=0700"), "{tmpfs:?}");
        let sftp = mount_at(&mounts, SFTP_SERVER_PATH).expect("sftp server mounted");
        assert_eq!(sftp.source.as_deref(), Some("/run/labssh/labssh-sftp"));
        assert_eq!(sftp.read_only, Some(true));
    }

    #[test]
    fn container_names_tell_user_and_environment_apart() {
        assert_ne!(
            container_name("lab", "a-b", "c"),
            container_name("lab", "a", "b-c")
        );
        assert_eq!(
            container_name("lab", "alice", "default"),
            "lab-alice.default"
        );
        assert_eq!(
            legacy_container_name("lab", "alice", "default"),
            "lab-alice-default"
        );
    }

    #[test]
    fn without_an_sftp_server_nothing_is_mounted_for_it() {
        let env = pb::Environment {
            name: "plain".into(),
            image: "img:1".into(),
            ..Default::default()
        };
        let body = bob_body(&env, &[], None, None);
        let mounts = body.host_config.unwrap().mounts.unwrap();
        assert_eq!(mounts.len(), 1, "only the home volume: {mounts:?}");
    }
}
