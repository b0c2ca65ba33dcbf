//! Failure 1 and 2 of issue 11: students reached each other's containers directly
//! (all on Docker's default bridge, inter-container traffic on), and containers
//! reached link-local addresses (a cloud's metadata service).

use std::net::SocketAddr;

use super::{bridge_of, host_reads, networks_of, reads, serve, sh, HostAddress};
use crate::lab::{Lab, LabOptions};

/// Bob's listener: answers every connection with this.
const SECRET: &str = "bob-secret";
/// Bob's port.
const PORT: u16 = 9999;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn students_cannot_reach_each_others_containers() {
    let lab = Lab::start(LabOptions::default()).await;
    // Alice's container exists first, then bob listens on every address of his.
    assert_eq!(sh(&lab, "alice", &Lab::alice(), "echo up").await, "up\n");
    let listen = format!("while true; do echo {SECRET} | nc -l -p {PORT}; done");
    let _bob = lab
        .ssh
        .command("bob", &Lab::bob(), &[&listen])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    lab.wait_listening("bob", "default", PORT).await;
    let bob_name = lab.container_name("bob", "default");
    let (bob_networks, bob_ip) = networks_of(&bob_name);
    assert!(!bob_ip.is_empty(), "bob's address on {bob_networks:?}");
    // The listener is really up and serves on bob's address.
    for host in ["127.0.0.1", bob_ip.as_str()] {
        assert_eq!(
            reads(&lab, "bob", &Lab::bob(), host, PORT).await,
            format!("{SECRET}\n"),
            "bob reaches his own listener on {host}"
        );
    }
    // No IPv6 beyond loopback in either container: no fe80:: to try between them.
    for (login, auth) in [("alice", Lab::alice()), ("bob", Lab::bob())] {
        let v6 = sh(&lab, login, &auth, "cat /proc/net/if_inet6").await;
        assert!(
            v6.lines().all(|l| l.trim_end().ends_with(" lo")),
            "{login} has IPv6 beyond loopback: {v6}"
        );
    }
    // Alice, by his address, his container's name on the network and his host name.
    for host in [bob_ip.as_str(), bob_name.as_str(), "bob-default"] {
        let got = reads(&lab, "alice", &Lab::alice(), host, PORT).await;
        assert!(
            !got.contains(SECRET),
            "alice read bob's listener at {host}: {got:?}"
        );
    }
    // Nor any other port of his.
    let scan = format!(
        "for p in 22 80 {PORT}; do nc -w 2 {bob_ip} $p </dev/null >/dev/null 2>&1 && echo open $p; done; true"
    );
    assert_eq!(sh(&lab, "alice", &Lab::alice(), &scan).await, "");
    // Both on the agent's own network, not Docker's default.
    let (alice_networks, _) = networks_of(&lab.container_name("alice", "default"));
    assert_eq!(bob_networks, alice_networks, "one network for both");
    assert!(
        bob_networks[0].starts_with(&format!("{}-net-", lab.cleanup.prefix)),
        "the agent's network, not Docker's default: {bob_networks:?}"
    );
    assert!(bridge_of(&bob_networks[0]).starts_with("lsh"));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_cannot_reach_link_local_addresses() {
    let lab = Lab::start(LabOptions::default()).await;
    let n = (super::run_id() % 200) as u8 + 20;
    let metadata = HostAddress::add('l', std::net::Ipv4Addr::new(169, 254, n, 254));
    let port = serve(SocketAddr::from((metadata.addr, 0)), "metadata").await;
    // This host reaches it: the address answers.
    assert_eq!(host_reads(metadata.addr, port).await, "metadata\n");
    let ip = metadata.addr.to_string();
    for (login, auth) in [("alice", Lab::alice()), ("alice+admin", Lab::alice())] {
        let got = reads(&lab, login, &auth, &ip, port).await;
        assert!(!got.contains("metadata"), "{login} reached {ip}: {got:?}");
    }
    lab.stop().await;
}
