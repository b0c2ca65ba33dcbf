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
}
