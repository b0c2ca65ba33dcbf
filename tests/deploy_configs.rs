//! The example configurations shipped in deploy/ stay valid.

use std::path::PathBuf;

fn deploy(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/config")
        .join(name)
}

#[test]
fn example_configs_load() {
    let controller = labssh_controller::Config::load(deploy("controller.toml")).unwrap();
    assert_eq!(controller.environments.len(), 3);
    assert!(controller.environments["admin"].run_as_root);
    let agent = labssh_agent::Config::load(deploy("agent.toml")).unwrap();
    assert_eq!(agent.capacity, 300);
    let proxy = labssh_proxy::Config::load(&deploy("proxy.toml")).unwrap();
    assert!(proxy.redis_url.starts_with("redis://"));
}
