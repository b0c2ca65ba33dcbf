//! The example configurations shipped in deploy/ stay valid, with mTLS on and
//! certificates laid out as `labssh certs` issues them.

use std::path::{Path, PathBuf};

use labssh_proto::roles::Role;

/// Where the examples keep the certificates.
const CERTS: &str = "/etc/labssh/certs";

fn deploy(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/config")
        .join(name)
}

/// The example `name` with its certificate directory moved to `certs`, after
/// issuing there every certificate it names (`ROLE-NAME.pem`), as the
/// commands in its comments would.
fn with_certs(name: &str, certs: &Path) -> PathBuf {
    let text = std::fs::read_to_string(deploy(name)).unwrap();
    for line in text.lines() {
        let Some(file) = line
            .trim()
            .strip_prefix("cert = \"")
            .and_then(|rest| rest.strip_suffix(".pem\""))
            .and_then(|path| path.strip_prefix(&format!("{CERTS}/")))
        else {
            continue;
        };
        let (role, holder) = file.split_once('-').unwrap();
        labssh::certs::issue(certs, role.parse::<Role>().unwrap(), holder, &[]).unwrap();
    }
    let path = certs.join(name);
    std::fs::write(&path, text.replace(CERTS, certs.to_str().unwrap())).unwrap();
    path
}

#[test]
fn example_configs_load() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path();
    let controller = labssh_controller::Config::load(with_certs("controller.toml", certs)).unwrap();
    assert_eq!(controller.environments.len(), 5);
    let egress = |env: &str| controller.environments[env].network.to_proto();
    assert_eq!(egress("default").egress, "internet");
    assert_eq!(egress("exam").egress, "none");
    assert_eq!(egress("licensed").allow.len(), 3);
    assert!(controller.environments["admin"].run_as_root);
    assert!(
        controller.tls.enabled(),
        "mTLS on in the controller example"
    );
    let agent = labssh_agent::Config::load(with_certs("agent.toml", certs)).unwrap();
    assert_eq!(agent.capacity, 300);
    assert!(agent.tls.enabled(), "mTLS on in the agent example");
    assert_eq!(
        agent.tls.cert,
        labssh::certs::files(certs, Role::Agent, &agent.name).cert,
        "the agent's certificate is its own node's"
    );
    assert!(agent.controller.starts_with("https://") && agent.advertise.starts_with("https://"));
    let proxy = labssh_proxy::Config::load(&with_certs("proxy.toml", certs)).unwrap();
    assert!(proxy.redis_url.starts_with("redis://"));
    assert!(proxy.tls.enabled(), "mTLS on in the proxy example");
    assert!(proxy.controller.starts_with("https://"));
    // `labssh web` runs from the same file: its [web] is valid, with an /metrics
    // address of its own beside the proxy's.
    assert!(proxy.web.problems().is_empty());
    assert_ne!(proxy.web.http, proxy.http, "web.http and http on one host");
}

/// `deploy/kubernetes/{relative}` as the pod reads it: each `/etc/labssh/tls` Secret
/// laid out in its own directory as `make-secrets.sh` does (`ca.pem` beside
/// `cert.pem`/`key.pem`, or the agents' `agent-NODE.pem`), the DaemonSet's
/// placeholders filled in as its init container does.
fn kubernetes_config(relative: &str, role: Role, holder: &str, tls: &Path) -> PathBuf {
    let issued = labssh::certs::issue(tls, role, holder, &[]).unwrap();
    let files = labssh::certs::files(tls, role, holder);
    if role != Role::Agent {
        std::fs::copy(&files.cert, tls.join("cert.pem")).unwrap();
        std::fs::copy(&files.key, tls.join("key.pem")).unwrap();
    }
    drop(issued);
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(relative);
    let text = std::fs::read_to_string(source)
        .unwrap()
        .replace("/etc/labssh/tls", tls.to_str().unwrap())
        .replace("@NODE_NAME@", "node-7")
        .replace("@POD_IP@", "10.244.3.9")
        .replace("@IMAGE@", "registry.example.edu/labssh:1.4");
    let path = tls.join(relative.replace('/', "-"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn kubernetes_configs_load() {
    let tls = |name: &str, dir: &Path| {
        let path = dir.join(name);
        std::fs::create_dir(&path).unwrap();
        path
    };
    let dir = tempfile::tempdir().unwrap();
    let controller = kubernetes_config(
        "base/config/controller.toml",
        Role::Controller,
        "labssh",
        &tls("controller", dir.path()),
    );
    let controller = labssh_controller::Config::load(controller).unwrap();
    assert!(controller.tls.enabled());
    let agent = kubernetes_config(
        "base/config/agent.toml",
        Role::Agent,
        "node-7",
        &tls("agent", dir.path()),
    );
    let agent = labssh_agent::Config::load(agent).unwrap();
    assert_eq!(agent.backend, labssh_agent::config::BackendKind::Kubernetes);
    assert_eq!(agent.name, "node-7");
    assert_eq!(
        agent.kubernetes.init_image,
        "registry.example.edu/labssh:1.4"
    );
    assert_eq!(agent.kubernetes.seccomp_dir, "/var/lib/kubelet/seccomp");
    assert!(agent.tls.enabled() && agent.advertise.contains("10.244.3.9"));
    for (name, relative) in [
        ("proxy", "base/config/proxy.toml"),
        ("proxy-production", "overlays/production/proxy.toml"),
    ] {
        let proxy = kubernetes_config(relative, Role::Proxy, "labssh", &tls(name, dir.path()));
        let proxy = labssh_proxy::Config::load(&proxy).unwrap();
        assert!(proxy.tls.enabled(), "{relative}");
        assert!(proxy.controller.starts_with("https://"), "{relative}");
        // The web front door's [web] (web.yaml runs `labssh web` from this file):
        // a port above 1024 (no capability in the pod) for the Service's 443, and
        // web.http a port of its own.
        assert!(proxy.web.problems().is_empty(), "{relative}");
        let port = |addr: &str| addr.parse::<std::net::SocketAddr>().unwrap().port();
        assert!(port(&proxy.web.listen) >= 1024, "{relative}");
        assert_ne!(port(&proxy.web.http), port(&proxy.http), "{relative}");
        assert_ne!(port(&proxy.web.listen), port(&proxy.listen), "{relative}");
        assert!(
            proxy.web.cookie_key_file.starts_with("/etc/labssh/users")
                && proxy.web.tls_cert.starts_with("/etc/labssh/web-tls"),
            "{relative}: the Secrets' mounts"
        );
    }
}

/// Every unit in deploy/systemd runs `labssh ROLE --config /etc/labssh/FILE` with a
/// FILE of deploy/config that loads for that role (the web front door: the proxy's,
/// with its `[web]`), as labssh but the agent, with the capability to bind a port below 1024 if
/// its config listens on one, and `/etc/labssh` writable where it makes keys.
#[test]
fn systemd_units_match_configs() {
    let units = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut roles = Vec::new();
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        let unit = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let value = |key: &str| -> Vec<&str> {
            unit.lines()
                .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .collect()
        };
        let exec: Vec<&str> = value("ExecStart")[0].split_whitespace().collect();
        let [bin, role, "--config", config] = exec[..] else {
            panic!("{name}: ExecStart {exec:?}");
        };
        assert_eq!(bin, "/usr/local/bin/labssh", "{name}");
        assert_eq!(name, format!("labssh-{role}.service"));
        let file = config.strip_prefix("/etc/labssh/").unwrap();
        if role != "agent" {
            // The agent runs as root (it drives Docker); every other role as labssh.
            assert_eq!(value("User"), ["labssh"], "{name}");
        }
        let writable = value("ReadWritePaths");
        let can_write = |p: &Path| writable.iter().any(|w| p.starts_with(w));
        let low_port = |addr: &str| addr.parse::<std::net::SocketAddr>().unwrap().port() < 1024;
        let (listen, keys): (String, Vec<PathBuf>) = match role {
            "proxy" | "web" => {
                assert_eq!(
                    file, "proxy.toml",
                    "{name}: the web front door runs from proxy.toml"
                );
                let proxy = labssh_proxy::Config::load(&with_certs(file, dir.path())).unwrap();
                assert!(proxy.web.problems().is_empty(), "{name}");
                if role == "web" {
                    assert_ne!(proxy.web.http, proxy.http, "{name}: web.http is its own");
                    // Only the certificates moved (with_certs): the keys' paths
                    // are the example's.
                    (proxy.web.listen, vec![proxy.web.cookie_key_file])
                } else {
                    (proxy.listen, vec![proxy.cache_key_file])
                }
            }
            "controller" => {
                let c = labssh_controller::Config::load(with_certs(file, dir.path())).unwrap();
                (c.listen.to_string(), Vec::new())
            }
            "agent" => {
                let a = labssh_agent::Config::load(with_certs(file, dir.path())).unwrap();
                (a.listen, Vec::new())
            }
            other => panic!("{name}: unknown role {other}"),
        };
        if low_port(&listen) {
            assert_eq!(
                value("AmbientCapabilities"),
                ["CAP_NET_BIND_SERVICE"],
                "{name}: listens on {listen}"
            );
        }
        for key in keys {
            assert!(
                can_write(&key),
                "{name}: {} is made on first start, outside ReadWritePaths {writable:?}",
                key.display()
            );
        }
        roles.push(role.to_owned());
    }
    roles.sort();
    assert_eq!(roles, ["agent", "controller", "proxy", "web"]);
}
