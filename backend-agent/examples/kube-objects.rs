//! Writes the Pod, PersistentVolumeClaim and NetworkPolicy the Kubernetes backend
//! makes for a representative set of environments, one JSON file per object, named
//! `<kind>-<case>.json`, for the schema check (`scripts/validate-kubernetes.sh`):
//!
//!     cargo run -q -p labssh-agent --example kube-objects -- OUTDIR
//!
//! The objects come from the backend's own builders (`objects::pod`, `home_claim`,
//! `network_policy`), so what is checked is what the agent sends.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use labssh_agent::backend::kubernetes::objects::{self, PodPlan};
use labssh_agent::backend::settings_hash;
use labssh_agent::config::KubernetesConfig;
use labssh_proto::pb;

/// The agent's keepalive command, as its config's default.
const KEEPALIVE: [&str; 2] = ["/bin/sleep", "infinity"];

/// One case: a name, the `[kubernetes]` section, the student and the environment.
struct Case {
    name: &'static str,
    config: KubernetesConfig,
    user: &'static str,
    env: pb::Environment,
    ids: Option<(u32, u32)>,
}

fn base_config() -> KubernetesConfig {
    KubernetesConfig {
        init_image: "registry.example.edu/labssh:1.4".into(),
        cluster_cidrs: vec!["10.244.0.0/16".into(), "10.96.0.0/12".into()],
        storage_class: "standard".into(),
        ..Default::default()
    }
}

fn base_env(name: &str) -> pb::Environment {
    pb::Environment {
        name: name.into(),
        image: "labssh/busybox:latest".into(),
        uid: 1000,
        gid: 1000,
        memory_bytes: 512 << 20,
        nano_cpus: 1_000_000_000,
        env: [("LANG".to_owned(), "C.UTF-8".to_owned())].into(),
        ..Default::default()
    }
}

fn egress(policy: &str, allow: &[&str]) -> Option<pb::NetworkPolicy> {
    Some(pb::NetworkPolicy {
        egress: policy.into(),
        allow: allow.iter().map(|s| s.to_string()).collect(),
    })
}

fn cases() -> Vec<Case> {
    let restricted = KubernetesConfig {
        pod_security: "restricted".into(),
        ..base_config()
    };
    vec![
        Case {
            name: "baseline",
            config: base_config(),
            user: "alice",
            env: pb::Environment {
                cap_add: vec!["NET_BIND_SERVICE".into(), "CHOWN".into()],
                ..base_env("default")
            },
            ids: None,
        },
        Case {
            name: "restricted",
            config: restricted.clone(),
            user: "bob",
            env: pb::Environment {
                uid: 0,
                gid: 0,
                uid_from_identity: true,
                gid_from_identity: true,
                cap_add: vec!["NET_BIND_SERVICE".into()],
                ..base_env("default")
            },
            ids: Some((4242, 4300)),
        },
        Case {
            name: "gpu",
            config: KubernetesConfig {
                runtime_class: "nvidia".into(),
                ..base_config()
            },
            user: "carol",
            env: pb::Environment {
                image: "nvcr.io/nvidia/pytorch:24.05-py3".into(),
                memory_bytes: 16 << 30,
                nano_cpus: 4_000_000_000,
                layer_quota_mb: 20_480,
                gpus: Some(pb::GpuRequest {
                    count: 1,
                    ..Default::default()
                }),
                ..base_env("gpu")
            },
            ids: None,
        },
        Case {
            name: "readonly",
            config: restricted,
            user: "dave",
            env: pb::Environment {
                isolation: Some(pb::Isolation {
                    read_only_root: true,
                    tmpfs: vec!["/tmp:size=512m".into(), "/var/cache".into()],
                    shm_size_bytes: 256 << 20,
                    mounts: vec![pb::Mount {
                        source: "course-data".into(),
                        target: "/srv/course".into(),
                    }],
                    seccomp: r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#.into(),
                    ..Default::default()
                }),
                ..base_env("exam")
            },
            ids: None,
        },
        Case {
            name: "egress-none",
            config: base_config(),
            user: "erin",
            env: pb::Environment {
                network: egress("none", &[]),
                ..base_env("exam")
            },
            ids: None,
        },
        Case {
            name: "egress-allow",
            config: base_config(),
            user: "frank",
            env: pb::Environment {
                network: egress(
                    "allow",
                    &["10.0.0.0/8", "192.0.2.7:27000", "licence.example.edu:1947"],
                ),
                ..base_env("licensed")
            },
            ids: None,
        },
        Case {
            name: "underscore-user",
            config: base_config(),
            user: "_lab_x",
            env: base_env("Py_3"),
            ids: None,
        },
        Case {
            name: "exec-only",
            config: KubernetesConfig {
                init_image: String::new(),
                ..base_config()
            },
            user: "grace",
            env: pb::Environment {
                run_as_root: true,
                keepalive_cmd: vec!["/bin/tail".into(), "-f".into(), "/dev/null".into()],
                ..base_env("root")
            },
            ids: None,
        },
    ]
}

fn write(
    dir: &Path,
    kind: &str,
    case: &str,
    value: &impl serde::Serialize,
) -> Result<PathBuf, String> {
    let path = dir.join(format!("{kind}-{case}.json"));
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("{case}: {e}"))?;
    std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn run(dir: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let keepalive: Vec<String> = KEEPALIVE.map(str::to_owned).to_vec();
    let mut written = 0;
    for case in cases() {
        let settings = settings_hash(&case.env);
        let plan = PodPlan {
            agent: "node-a",
            prefix: "labssh",
            node: "node-a",
            config: &case.config,
            user: case.user,
            env: &case.env,
            ids: case.ids,
            settings: &settings,
            keepalive_cmd: &keepalive,
        };
        let pod = objects::pod(&plan).map_err(|e| format!("case {}: {e}", case.name))?;
        write(dir, "pod", case.name, &pod)?;
        write(
            dir,
            "persistentvolumeclaim",
            case.name,
            &objects::home_claim(&plan),
        )?;
        write(
            dir,
            "networkpolicy",
            case.name,
            &objects::network_policy(&plan),
        )?;
        written += 3;
    }
    Ok(written)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: kube-objects OUTDIR");
        return ExitCode::from(2);
    };
    match run(Path::new(&dir)) {
        Ok(n) => {
            eprintln!(
                "kube-objects: wrote {n} objects to {}",
                Path::new(&dir).display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kube-objects: {e}");
            ExitCode::FAILURE
        }
    }
}
