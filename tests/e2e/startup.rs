//! Starting a cluster (`labssh up`, and every test lab): the SSH port is bound from the
//! start but served only once the agents are live, so a student who connects while it
//! starts waits instead of being told that no agent is available.

use std::time::Duration;

use labssh::cluster::{Cluster, ClusterConfig};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use crate::lab::controller_toml;

#[tokio::test]
async fn the_ssh_port_answers_once_the_agents_are_live() {
    let dir = tempfile::tempdir().unwrap();
    let users_file = dir.path().join("users.toml");
    std::fs::write(&users_file, "").unwrap();
    let controller = labssh_controller::Config::from_toml_str(&controller_toml()).unwrap();
    let proxy = labssh_proxy::Config {
        host_keys: vec![dir.path().join("host_ed25519_key")],
        users_file,
        cache_key_file: dir.path().join("cache.key"),
        ..Default::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // No agent: the cluster is "ready" only when the test says so.
    let config = ClusterConfig {
        controller,
        agents: Vec::new(),
        proxy,
        tls_dir: None,
    };
    let mut cluster = Cluster::start(config, listener).await.unwrap();

    // Connected while the cluster starts: the connection waits, nothing answers.
    let mut early = TcpStream::connect(cluster.ssh_addr).await.unwrap();
    let mut banner = [0u8; 8];
    let waited = tokio::time::timeout(Duration::from_millis(500), early.read_exact(&mut banner));
    assert!(
        waited.await.is_err(),
        "the proxy answered before the agents were live"
    );

    // Ready: the same connection gets the server's banner.
    cluster
        .wait_ready(0, Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), early.read_exact(&mut banner))
        .await
        .expect("the banner within 10 s of ready")
        .unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    cluster.shutdown().await.unwrap();
}
