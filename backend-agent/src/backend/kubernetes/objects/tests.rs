//! The rules of the objects, one test each.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use labssh_proto::net::{parse_net, IpNet};
use labssh_proto::pb;

use super::*;
use crate::backend::BackendError;

fn config() -> KubernetesConfig {
    KubernetesConfig {
        init_image: "registry.example.edu/labssh:1.4".into(),
        cluster_cidrs: vec!["10.244.0.0/16".into(), "10.96.0.0/12".into()],
        ..Default::default()
    }
}

fn env() -> pb::Environment {
    pb::Environment {
        name: "default".into(),
        image: "labssh/busybox:latest".into(),
        uid: 1000,
        gid: 1000,
        ..Default::default()
    }
}

const KEEPALIVE: [&str; 2] = ["/bin/sleep", "infinity"];

fn build(
    config: &KubernetesConfig,
    user: &str,
    env: &pb::Environment,
) -> Result<Pod, BackendError> {
    let keepalive: Vec<String> = KEEPALIVE.map(str::to_owned).to_vec();
    pod(&plan(config, user, env, &keepalive))
}

fn plan<'a>(
    config: &'a KubernetesConfig,
    user: &'a str,
    env: &'a pb::Environment,
    keepalive: &'a [String],
) -> PodPlan<'a> {
    PodPlan {
        agent: "node-a",
        prefix: "lab",
        node: "node-a",
        config,
        user,
        env,
        ids: None,
        settings: "0123456789abcdef01234567",
        keepalive_cmd: keepalive,
    }
}

fn policy(config: &KubernetesConfig, env: &pb::Environment) -> NetworkPolicy {
    network_policy(&plan(config, "bob", env, &[]))
}

fn student(pod: &Pod) -> &Container {
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.containers.len(), 1);
    &spec.containers[0]
}

fn mount_path<'a>(
    c: &'a Container,
    path: &str,
) -> Option<&'a k8s_openapi::api::core::v1::VolumeMount> {
    c.volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == path)
}

fn refused(result: Result<Pod, BackendError>) -> String {
    match result {
        Err(BackendError::CreateFailed(why)) => why,
        other => panic!("not refused: {other:?}"),
    }
}

fn caps_added(c: &Container) -> Vec<String> {
    let caps = c
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    caps.add.clone().unwrap_or_default()
}

#[test]
fn baseline_pod_runs_labssh_init_from_the_init_container() {
    let pod = build(&config(), "bob", &env()).unwrap();
    assert_eq!(pod.metadata.name.as_deref(), Some("lab-bob.default"));
    assert_eq!(pod.metadata.namespace.as_deref(), Some("labssh-students"));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("node-a"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.hostname.as_deref(), Some("bob-default"));
    // Students never get the service account's token, nor the services' addresses,
    // nor any of the node's namespaces.
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.enable_service_links, Some(false));
    assert_eq!(spec.host_network, Some(false));
    assert_eq!(spec.host_pid, Some(false));
    assert_eq!(spec.host_ipc, Some(false));
    assert_eq!(spec.termination_grace_period_seconds, Some(5));
    // No hostPath anywhere: Pod Security baseline and restricted both allow it.
    for v in spec.volumes.iter().flatten() {
        assert!(v.host_path.is_none(), "{v:?}");
    }
    let init = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, INSTALL_CONTAINER);
    assert_eq!(
        init.image.as_deref(),
        Some("registry.example.edu/labssh:1.4")
    );
    assert_eq!(
        init.command.as_deref().unwrap(),
        ["/labssh-init", "--install", "/.labssh"]
    );
    let init_mount = &init.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (init_mount.name.as_str(), init_mount.mount_path.as_str()),
        (BIN_VOLUME, "/.labssh")
    );
    assert_eq!(init_mount.read_only, None, "the init container writes it");
    let c = student(&pod);
    assert_eq!(c.name, CONTAINER);
    assert_eq!(c.image.as_deref(), Some("labssh/busybox:latest"));
    let bin = mount_path(c, "/.labssh").unwrap();
    assert_eq!((bin.name.as_str(), bin.read_only), (BIN_VOLUME, Some(true)));
    let run = mount_path(c, "/.labssh/run").unwrap();
    assert_eq!(run.name, RUN_VOLUME);
    let run_volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == RUN_VOLUME)
        .unwrap();
    let run_dir = run_volume.empty_dir.as_ref().unwrap();
    assert_eq!(run_dir.medium.as_deref(), Some("Memory"));
    assert_eq!(run_dir.size_limit.as_ref().unwrap().0, "1Mi");
    let home = mount_path(c, "/home/bob").unwrap();
    assert_eq!(home.name, HOME_VOLUME);
    let home_volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == HOME_VOLUME)
        .unwrap();
    assert_eq!(
        home_volume
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "lab-home-bob"
    );
    // labssh-init as PID 1, Docker's arguments and the student's passwd entry, the
    // keepalive as its child, as the student.
    assert_eq!(
        c.command.as_deref().unwrap(),
        [
            "/.labssh/init",
            "--socket",
            "/.labssh/run/helper.sock",
            "--user",
            "1000:1000",
            "--drop-caps",
            "5,6,7,8",
            "--account",
            "bob:1000:1000:/home/bob:/bin/sh",
            "--",
            "/bin/sleep",
            "infinity"
        ]
    );
    assert_eq!(c.args, None, "the image's CMD is not appended");
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, Some(false));
    assert_eq!((sc.run_as_user, sc.run_as_group), (Some(0), Some(0)));
    assert_eq!(caps_added(c), ["KILL", "SETGID", "SETUID", "SETPCAP"]);
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(
        psc.fs_group,
        Some(1000),
        "the home is the student's group's"
    );
    assert_eq!(psc.run_as_non_root, None);
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["labssh.agent"], "node-a");
    assert_eq!(labels["labssh.user"], "bob");
    assert_eq!(labels["labssh.env"], "default");
    assert_eq!(labels["labssh.spawn"], "helper");
    assert_eq!(labels["labssh.settings"], "0123456789abcdef01234567");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "labssh");
    assert!(!labels.contains_key("labssh.ids"));
}

#[test]
fn granted_caps_are_kept_by_children_and_others_refused_under_baseline() {
    let mut e = env();
    e.cap_add = vec!["cap_setuid".into(), "NET_BIND_SERVICE".into()];
    let pod = build(&config(), "bob", &e).unwrap();
    let c = student(&pod);
    let command = c.command.as_ref().unwrap();
    let at = command.iter().position(|a| a == "--drop-caps").unwrap();
    assert_eq!(
        command[at + 1],
        "5,6,8",
        "SETUID was granted: children keep it"
    );
    assert_eq!(
        caps_added(c),
        ["SETUID", "NET_BIND_SERVICE", "KILL", "SETGID", "SETPCAP"]
    );
    e.cap_add = vec!["SYS_ADMIN".into()];
    let why = refused(build(&config(), "bob", &e));
    assert!(
        why.contains("SYS_ADMIN") && why.contains("baseline"),
        "{why}"
    );
}

#[test]
fn restricted_runs_the_whole_pod_as_the_student() {
    let config = KubernetesConfig {
        pod_security: "restricted".into(),
        ..config()
    };
    let mut e = env();
    e.cap_add = vec!["NET_BIND_SERVICE".into()];
    let pod = build(&config, "bob", &e).unwrap();
    let spec = pod.spec.as_ref().unwrap();
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(
        (psc.run_as_user, psc.run_as_group),
        (Some(1000), Some(1000))
    );
    assert_eq!(psc.fs_group, Some(1000));
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let c = student(&pod);
    assert_eq!(
        caps_added(c),
        ["NET_BIND_SERVICE"],
        "no helper capabilities"
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, None, "the pod's uid, not root");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let command = c.command.as_ref().unwrap();
    assert!(!command.contains(&"--drop-caps".to_owned()), "{command:?}");
    let at = command.iter().position(|a| a == "--user").unwrap();
    assert_eq!(command[at + 1], "1000:1000");
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let isc = init.security_context.as_ref().unwrap();
    assert_eq!(isc.allow_privilege_escalation, Some(false));
    assert_eq!(isc.capabilities.as_ref().unwrap().add, None);

    let root = pb::Environment {
        run_as_root: true,
        ..env()
    };
    let why = refused(build(&config, "bob", &root));
    assert!(why.contains("root") && why.contains("restricted"), "{why}");
    e.cap_add = vec!["CHOWN".into()];
    let why = refused(build(&config, "bob", &e));
    assert!(why.contains("CHOWN") && why.contains("restricted"), "{why}");
}

#[test]
fn identity_ids_are_used_and_recorded() {
    let config = config();
    let e = pb::Environment {
        uid: 0,
        gid: 0,
        uid_from_identity: true,
        gid_from_identity: true,
        ..env()
    };
    let keepalive = Vec::new();
    let mut p = plan(&config, "bob", &e, &keepalive);
    // An identity's ids not known yet: nothing runs as uid 0.
    let why = refused(pod(&p));
    assert!(why.contains("uid or gid is 0"), "{why}");
    p.ids = Some((4242, 4300));
    let made = pod(&p).unwrap();
    assert_eq!(
        made.metadata.labels.as_ref().unwrap()["labssh.ids"],
        "4242-4300"
    );
    let command = student(&made).command.clone().unwrap();
    assert!(command.contains(&"4242:4300".to_owned()), "{command:?}");
    let info = info_of(&made).unwrap();
    assert_eq!(info.ids, Some((4242, 4300)));
}

#[test]
fn limits_become_requests_and_limits_and_gpus_a_count() {
    let e = pb::Environment {
        memory_bytes: 2 << 30,
        nano_cpus: 1_500_000_000,
        layer_quota_mb: 2048,
        gpus: Some(pb::GpuRequest {
            count: 2,
            ..Default::default()
        }),
        ..env()
    };
    let pod = build(&config(), "bob", &e).unwrap();
    let resources = student(&pod).resources.clone().unwrap();
    let limits = resources.limits.unwrap();
    let requests = resources.requests.unwrap();
    assert_eq!(limits["cpu"].0, "1500m");
    assert_eq!(limits["memory"].0, (2u64 << 30).to_string());
    assert_eq!(limits["nvidia.com/gpu"].0, "2");
    assert_eq!(limits["ephemeral-storage"].0, "2048Mi");
    for key in ["cpu", "memory", "nvidia.com/gpu"] {
        assert_eq!(requests[key], limits[key], "{key}: Guaranteed");
    }
    // The init container asks the same cpu and memory, no GPU: the pod's request and
    // its QoS class are the student container's.
    let init = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    let init_limits = init.resources.as_ref().unwrap().limits.clone().unwrap();
    assert_eq!(init_limits["memory"], limits["memory"]);
    assert!(!init_limits.contains_key("nvidia.com/gpu"));
    let no_limits = build(&config(), "bob", &env()).unwrap();
    let r = student(&no_limits).resources.clone().unwrap();
    assert_eq!((r.limits, r.requests), (None, None));
    for gpus in [
        pb::GpuRequest {
            all: true,
            ..Default::default()
        },
        pb::GpuRequest {
            device_ids: vec!["0".into()],
            ..Default::default()
        },
    ] {
        let e = pb::Environment {
            gpus: Some(gpus),
            ..env()
        };
        assert!(refused(build(&config(), "bob", &e)).contains("by count"));
    }
}

#[test]
fn isolation_read_only_root_tmpfs_shm_and_course_data() {
    let e = pb::Environment {
        isolation: Some(pb::Isolation {
            read_only_root: true,
            tmpfs: vec!["/tmp:size=512m,mode=1777".into(), "/var/cache".into()],
            shm_size_bytes: 256 << 20,
            mounts: vec![pb::Mount {
                source: "course-data".into(),
                target: "/srv/course".into(),
            }],
            seccomp: r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#.into(),
            ..Default::default()
        }),
        ..env()
    };
    let pod = build(&config(), "bob", &e).unwrap();
    let spec = pod.spec.as_ref().unwrap();
    let c = student(&pod);
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let volume = |name: &str| {
        spec.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap()
    };
    let tmp = mount_path(c, "/tmp").unwrap();
    let tmp_dir = volume(&tmp.name).empty_dir.clone().unwrap();
    assert_eq!(tmp_dir.medium.as_deref(), Some("Memory"));
    assert_eq!(tmp_dir.size_limit.unwrap().0, "512Mi");
    let cache = mount_path(c, "/var/cache").unwrap();
    assert_eq!(
        volume(&cache.name).empty_dir.clone().unwrap().size_limit,
        None
    );
    let shm = mount_path(c, "/dev/shm").unwrap();
    let shm_dir = volume(&shm.name).empty_dir.clone().unwrap();
    assert_eq!(shm_dir.medium.as_deref(), Some("Memory"));
    assert_eq!(shm_dir.size_limit.unwrap().0, (256u64 << 20).to_string());
    let course = mount_path(c, "/srv/course").unwrap();
    assert_eq!(course.read_only, Some(true));
    let claim = volume(&course.name)
        .persistent_volume_claim
        .clone()
        .unwrap();
    assert_eq!(
        (claim.claim_name.as_str(), claim.read_only),
        ("course-data", Some(true))
    );
    let seccomp = spec
        .security_context
        .clone()
        .unwrap()
        .seccomp_profile
        .unwrap();
    assert_eq!(seccomp.type_, "Localhost");
    let path = seccomp.localhost_profile.unwrap();
    assert!(
        path.starts_with("labssh/") && path.ends_with(".json"),
        "{path}"
    );
    assert_eq!(Some(path.clone()), seccomp_profile_path(&e));
    let (file, json) = seccomp_profile_file(&e).unwrap();
    assert_eq!(
        (file, json),
        (path, r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#)
    );
    assert_eq!(seccomp_profile_file(&env()), None);
}

#[test]
fn what_pods_cannot_have_is_refused_in_words() {
    let with = |isolation: pb::Isolation| pb::Environment {
        isolation: Some(isolation),
        ..env()
    };
    let why = refused(build(
        &config(),
        "bob",
        &with(pb::Isolation {
            devices: vec!["/dev/fuse".into()],
            ..Default::default()
        }),
    ));
    assert!(
        why.contains("/dev/fuse") && why.contains("device plugin"),
        "{why}"
    );
    let why = refused(build(
        &config(),
        "bob",
        &with(pb::Isolation {
            seccomp: "unconfined".into(),
            ..Default::default()
        }),
    ));
    assert!(why.contains("unconfined"), "{why}");
    let why = refused(build(
        &config(),
        "bob",
        &with(pb::Isolation {
            mounts: vec![pb::Mount {
                source: "Course_Data".into(),
                target: "/srv".into(),
            }],
            ..Default::default()
        }),
    ));
    assert!(why.contains("Course_Data"), "{why}");
    let e = pb::Environment {
        network: Some(pb::NetworkPolicy {
            egress: "open".into(),
            allow: vec![],
        }),
        ..env()
    };
    assert!(refused(build(&config(), "bob", &e)).contains("network"));
    // rlimits have no pod form: the pod is made without them.
    let rl = with(pb::Isolation {
        rlimits: [(
            "nofile".to_owned(),
            pb::Rlimit {
                soft: 64,
                hard: 128,
            },
        )]
        .into(),
        ..Default::default()
    });
    assert!(build(&config(), "bob", &rl).is_ok());
}

#[test]
fn without_an_init_image_the_pod_is_for_pods_exec() {
    let config = KubernetesConfig {
        init_image: String::new(),
        ..config()
    };
    let pod = build(&config, "bob", &env()).unwrap();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.init_containers, None);
    assert!(spec.volumes.iter().flatten().all(|v| v.name == HOME_VOLUME));
    let c = student(&pod);
    assert_eq!(c.command.as_deref().unwrap(), KEEPALIVE);
    let sc = c.security_context.as_ref().unwrap();
    // pods/exec runs as the container's user: the student.
    assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1000), Some(1000)));
    assert_eq!(caps_added(c), Vec::<String>::new());
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap()["labssh.spawn"],
        "exec"
    );
    // The environment's own keepalive command, and exec asked by the environment.
    let e = pb::Environment {
        spawn: "exec".into(),
        keepalive_cmd: vec!["/bin/tail".into(), "-f".into(), "/dev/null".into()],
        ..env()
    };
    let pod = build(&self::config(), "bob", &e).unwrap();
    assert_eq!(
        student(&pod).command.as_deref().unwrap(),
        ["/bin/tail", "-f", "/dev/null"]
    );
    assert_eq!(pod.spec.as_ref().unwrap().init_containers, None);
}

#[test]
fn odd_names_get_valid_objects_and_keep_the_real_ones() {
    let e = pb::Environment {
        name: "Py_3".into(),
        ..env()
    };
    let pod = build(&config(), "_x", &e).unwrap();
    let name = pod.metadata.name.clone().unwrap();
    assert!(is_dns_subdomain(&name), "{name}");
    let labels = pod.metadata.labels.as_ref().unwrap();
    for value in labels.values() {
        assert!(names::is_label_value(value), "{value}");
    }
    assert_ne!(labels["labssh.user"], "_x");
    let annotations = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["labssh.user"], "_x");
    assert_eq!(annotations["labssh.env"], "Py_3");
    let info = info_of(&pod).unwrap();
    assert_eq!(
        (info.user.as_str(), info.environment.as_str()),
        ("_x", "Py_3")
    );
    assert_eq!(info.name, name);
    assert!(names::is_dns_label(
        pod.spec.as_ref().unwrap().hostname.as_ref().unwrap()
    ));
    let keepalive = Vec::new();
    let claim = home_claim(&plan(&config(), "_x", &e, &keepalive));
    assert!(is_dns_subdomain(claim.metadata.name.as_ref().unwrap()));
    assert_eq!(claim.metadata.annotations.unwrap()["labssh.user"], "_x");
}

#[test]
fn the_home_claim() {
    let config = KubernetesConfig {
        storage_class: "fast-ssd".into(),
        home_size: "10Gi".into(),
        ..config()
    };
    let e = env();
    let claim = home_claim(&plan(&config, "bob", &e, &[]));
    assert_eq!(claim.metadata.name.as_deref(), Some("lab-home-bob"));
    let spec = claim.spec.unwrap();
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast-ssd"));
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"].0,
        "10Gi"
    );
    let labels = claim.metadata.labels.unwrap();
    assert_eq!(labels["labssh.user"], "bob");
    assert!(
        !labels.contains_key("labssh.env"),
        "shared by the environments"
    );
    let default_class = home_claim(&plan(&self::config(), "bob", &e, &[]));
    assert_eq!(default_class.spec.unwrap().storage_class_name, None);
}

#[test]
fn the_selector_names_agent_and_prefix() {
    assert_eq!(
        selector("node-a", "lab"),
        "app.kubernetes.io/managed-by=labssh,labssh.agent=node-a,labssh.prefix=lab"
    );
    let pod = build(&config(), "bob", &env()).unwrap();
    let labels = pod.metadata.labels.unwrap();
    for term in selector("node-a", "lab").split(',') {
        let (k, v) = term.split_once('=').unwrap();
        assert_eq!(labels[k], v, "the pod matches its selector");
    }
}

/// Every ipBlock `policy` allows, with its exceptions.
fn blocks(policy: &NetworkPolicy) -> Vec<(IpNet, Vec<IpNet>)> {
    let spec = policy.spec.as_ref().unwrap();
    spec.egress
        .iter()
        .flatten()
        .flat_map(|r| r.to.iter().flatten())
        .filter_map(|peer| peer.ip_block.as_ref())
        .map(|b| {
            let except = b
                .except
                .iter()
                .flatten()
                .map(|e| parse_net(e).unwrap())
                .collect();
            (parse_net(&b.cidr).unwrap(), except)
        })
        .collect()
}

/// Whether `policy` can let anything reach `net`.
fn reaches(policy: &NetworkPolicy, net: &str) -> bool {
    let net = parse_net(net).unwrap();
    blocks(policy).iter().any(|(cidr, except)| {
        (cidr.contains(&net) || net.contains(cidr))
            && !except.iter().any(|e| e.contains(&net) || e.contains(cidr))
    })
}

/// Nothing in, and never link-local or the cluster's networks out.
fn assert_guarded(policy: &NetworkPolicy) {
    let spec = policy.spec.as_ref().unwrap();
    assert_eq!(spec.policy_types.as_deref().unwrap(), ["Ingress", "Egress"]);
    assert!(
        spec.ingress.iter().flatten().next().is_none(),
        "nothing allowed in"
    );
    for never in [
        "169.254.169.254/32",
        "169.254.0.0/16",
        "fe80::/10",
        "10.244.3.7/32",
        "10.96.0.10/32",
    ] {
        assert!(
            !reaches(policy, never),
            "{never} reachable: {:?}",
            blocks(policy)
        );
    }
}

fn with_egress(egress: &str, allow: &[&str]) -> pb::Environment {
    pb::Environment {
        network: Some(pb::NetworkPolicy {
            egress: egress.into(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
        }),
        ..env()
    }
}

#[test]
fn egress_none_allows_nothing() {
    let p = policy(&config(), &with_egress("none", &[]));
    assert_guarded(&p);
    assert_eq!(p.spec.as_ref().unwrap().egress.as_deref(), Some(&[][..]));
    assert_eq!(p.metadata.name.as_deref(), Some("lab-bob.default"));
}

#[test]
fn egress_internet_is_outside_private_and_cluster_networks() {
    let p = policy(&config(), &env());
    assert_guarded(&p);
    assert!(reaches(&p, "192.0.2.7/32"));
    for private in [
        "10.1.2.3/32",
        "192.168.1.1/32",
        "172.16.5.5/32",
        "100.64.0.1/32",
        "127.0.0.1/32",
    ] {
        assert!(!reaches(&p, private), "{private}");
    }
    assert!(
        !reaches(&p, "2001:db8::1/128"),
        "IPv6 is not allowed, as on Docker"
    );
    // DNS to the cluster's DNS pods only.
    let rules = p.spec.as_ref().unwrap().egress.clone().unwrap();
    let dns = &rules[0];
    let peer = &dns.to.as_ref().unwrap()[0];
    assert!(peer.ip_block.is_none());
    assert_eq!(
        peer.namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["kubernetes.io/metadata.name"],
        "kube-system"
    );
    assert_eq!(
        peer.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()["k8s-app"],
        "kube-dns"
    );
    let ports: Vec<_> = dns
        .ports
        .iter()
        .flatten()
        .map(|p| p.protocol.clone().unwrap())
        .collect();
    assert_eq!(ports, ["UDP", "TCP"]);
    // The policy selects exactly this pod.
    let pod = build(&config(), "bob", &env()).unwrap();
    let pod_labels = pod.metadata.labels.unwrap();
    let selector = p.spec.unwrap().pod_selector.unwrap().match_labels.unwrap();
    assert!(selector.contains_key("labssh.user") && selector.contains_key("labssh.env"));
    for (k, v) in selector {
        assert_eq!(pod_labels[&k], v);
    }
}

#[test]
fn egress_allow_list_never_reaches_into_the_cluster() {
    let e = with_egress(
        "allow",
        &[
            "10.0.0.0/8",
            "10.244.1.0/24:443",
            "169.254.169.254:80",
            "192.0.2.7:27000",
            "licence.example.edu:1947",
        ],
    );
    let p = policy(&config(), &e);
    assert_guarded(&p);
    let found = blocks(&p);
    // 10/8 allowed with the cluster's networks inside it excepted.
    let ten = found
        .iter()
        .find(|(c, _)| c.to_string() == "10.0.0.0/8")
        .unwrap();
    let except: Vec<String> = ten.1.iter().map(ToString::to_string).collect();
    assert_eq!(except, ["10.244.0.0/16", "10.96.0.0/12"]);
    // Inside the cluster's networks, or link-local: dropped altogether.
    assert!(!found
        .iter()
        .any(|(c, _)| c.to_string().starts_with("10.244.1.")));
    assert!(!found
        .iter()
        .any(|(c, _)| c.to_string().starts_with("169.254.")));
    assert!(reaches(&p, "192.0.2.7/32"));
    assert!(!reaches(&p, "198.51.100.1/32"));
    let rules = p.spec.as_ref().unwrap().egress.clone().unwrap();
    let port_rule = rules
        .iter()
        .find(|r| {
            r.to.as_ref().unwrap()[0]
                .ip_block
                .as_ref()
                .is_some_and(|b| b.cidr == "192.0.2.7/32")
        })
        .unwrap();
    let ports: Vec<_> = port_rule
        .ports
        .iter()
        .flatten()
        .map(|p| (p.protocol.clone().unwrap(), p.port.clone().unwrap()))
        .collect();
    assert_eq!(
        ports,
        [
            ("UDP".to_owned(), IntOrString::Int(27000)),
            ("TCP".to_owned(), IntOrString::Int(27000))
        ]
    );
    // Names: closed until resolved; resolved ones are allowed on their port, IPv4 only.
    assert!(!reaches(&p, "203.0.113.9/32"));
    assert_eq!(allow_names(&e), ["licence.example.edu"]);
    let keepalive = Vec::new();
    let config = config();
    let resolved = HashMap::from([(
        "licence.example.edu".to_owned(),
        vec![
            "203.0.113.9".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
            "10.96.0.1".parse().unwrap(),
        ],
    )]);
    let p = network_policy_resolved(&plan(&config, "bob", &e, &keepalive), &resolved);
    assert_guarded(&p);
    assert!(reaches(&p, "203.0.113.9/32"));
    assert!(!reaches(&p, "2001:db8::9/128"));
}

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A pod as the API server returns it, with `status`.
fn served(status: serde_json::Value, extra_meta: serde_json::Value) -> Pod {
    let mut meta = serde_json::json!({
        "name": "lab-bob.default",
        "namespace": "labssh-students",
        "uid": "5b0c3a8e-1d2f-4c59-9a7e-0f3d2c1b4a55",
        "resourceVersion": "48213",
        "creationTimestamp": "2026-12-03T12:00:00Z",
        "labels": {
            "app.kubernetes.io/managed-by": "labssh",
            "labssh.agent": "node-a",
            "labssh.prefix": "lab",
            "labssh.user": "bob",
            "labssh.env": "default",
            "labssh.settings": "0123456789abcdef01234567",
            "labssh.spawn": "helper"
        }
    });
    for (k, v) in extra_meta.as_object().unwrap() {
        meta[k] = v.clone();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "student", "image": "labssh/busybox:latest"}], "nodeName": "node-a"},
        "status": status
    }))
    .unwrap()
}

#[test]
fn info_of_reads_state_version_and_times() {
    let none = serde_json::json!({});
    let pending = served(
        serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "initContainerStatuses": [{"name": "labssh-install", "ready": false, "restartCount": 0,
                "image": "registry.example.edu/labssh:1.4", "imageID": "",
                "state": {"running": {"startedAt": "2026-12-03T12:00:02Z"}}}],
            "containerStatuses": [{"name": "student", "ready": false, "restartCount": 0,
                "image": "labssh/busybox:latest", "imageID": "",
                "state": {"waiting": {"reason": "PodInitializing"}}}]
        }),
        none.clone(),
    );
    let info = info_of(&pending).unwrap();
    assert_eq!(info.state, ContainerState::Creating);
    assert_eq!(
        (info.user.as_str(), info.environment.as_str()),
        ("bob", "default")
    );
    assert_eq!(info.name, "lab-bob.default");
    assert_eq!(info.gpus, Vec::<String>::new());
    assert_eq!(
        info.created,
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_299_200))
    );
    assert_eq!(info.version.settings, "0123456789abcdef01234567");
    assert_eq!(info.ids, None);

    let running = served(
        serde_json::json!({
            "phase": "Running",
            "podIP": "10.244.1.17",
            "containerStatuses": [{"name": "student", "ready": true, "restartCount": 0,
                "image": "docker.io/labssh/busybox:latest",
                "imageID": "docker.io/labssh/busybox@sha256:3fbc632167424a6d997e74f52b878d7cc478225cffac6bc977eedfe51c7f4e79",
                "containerID": "containerd://8d6f1c2b9a",
                "state": {"running": {"startedAt": "2026-12-03T12:00:05Z"}}}]
        }),
        serde_json::json!({"labels": {
            "app.kubernetes.io/managed-by": "labssh", "labssh.user": "bob", "labssh.env": "default",
            "labssh.ids": "4242-4300"}}),
    );
    let info = info_of(&running).unwrap();
    assert_eq!(info.state, ContainerState::Running);
    assert!(info
        .version
        .image
        .ends_with("@sha256:3fbc632167424a6d997e74f52b878d7cc478225cffac6bc977eedfe51c7f4e79"));
    assert_eq!(info.ids, Some((4242, 4300)));

    let restarting = served(
        serde_json::json!({"phase": "Running", "containerStatuses": [{"name": "student", "ready": false,
            "restartCount": 3, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        none.clone(),
    );
    assert_eq!(
        info_of(&restarting).unwrap().state,
        ContainerState::Creating
    );
    let failed = served(
        serde_json::json!({"phase": "Failed", "reason": "OutOfcpu",
            "message": "Pod was rejected: Node didn't have enough resource: cpu"}),
        none.clone(),
    );
    assert_eq!(info_of(&failed).unwrap().state, ContainerState::Stopped);
    let deleting = served(
        serde_json::json!({"phase": "Running", "containerStatuses": [{"name": "student", "ready": true,
            "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}]}),
        serde_json::json!({"deletionTimestamp": "2026-12-03T12:30:00Z", "deletionGracePeriodSeconds": 5}),
    );
    assert_eq!(info_of(&deleting).unwrap().state, ContainerState::Stopped);
    let foreign = served(
        serde_json::json!({"phase": "Running"}),
        serde_json::json!({"labels": {"app": "web"}}),
    );
    assert_eq!(info_of(&foreign), None);
}

#[test]
fn objects_serialize_with_api_version_and_kind() {
    let pod = serde_json::to_value(build(&config(), "bob", &env()).unwrap()).unwrap();
    assert_eq!(
        (pod["apiVersion"].as_str(), pod["kind"].as_str()),
        (Some("v1"), Some("Pod"))
    );
    let e = env();
    let policy = serde_json::to_value(policy(&config(), &e)).unwrap();
    assert_eq!(policy["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(policy["kind"], "NetworkPolicy");
    let claim = serde_json::to_value(home_claim(&plan(&config(), "bob", &e, &[]))).unwrap();
    assert_eq!(claim["kind"], "PersistentVolumeClaim");
}
