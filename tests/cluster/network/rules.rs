//! A network's rules: one block per bridge naming the agent instance, in force
//! before a container joins, put back whole when something deletes one of them,
//! and gone when the agent shuts down.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{bridge_of, networks_of, private, reads, serve, sh, HostAddress};
use crate::lab::{Lab, LabOptions};

/// The agent's firewall puts missing rules back every 30 s.
const REPAIRED_WITHIN: Duration = Duration::from_secs(90);

/// `program -S chain`.
fn listing(program: &str, chain: &str) -> String {
    let out = Command::new(program)
        .args(["-w", "5", "-S", chain])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rules of `bridge` by `comment` in `chain`, in order.
fn block(program: &str, chain: &str, bridge: &str, comment: &str) -> Vec<String> {
    listing(program, chain)
        .lines()
        .filter(|l| l.contains(&format!("-i {bridge} ")) && l.contains(comment))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_rules_are_repaired_and_leave_with_the_agent() {
    let lab = Lab::start(LabOptions::default()).await;
    let host = HostAddress::add('r', private(4));
    let port = serve(std::net::SocketAddr::from((host.addr, 0)), "host-reached").await;
    assert_eq!(sh(&lab, "alice", &Lab::alice(), "echo up").await, "up\n");
    let (networks, _) = networks_of(&lab.container_name("alice", "default"));
    let bridge = bridge_of(&networks[0]);
    let agent = lab.cluster.as_ref().unwrap().agent_addrs[0];
    let comment = format!("--comment \"labssh-agent agent0 {agent}\"");

    let input = block("iptables", "INPUT", &bridge, &comment);
    let last = input.last().cloned().unwrap_or_default();
    assert!(
        last.contains("! --ctstate RELATED,ESTABLISHED") && last.contains("-j REJECT"),
        "the host refused last: {input:#?}"
    );
    assert!(
        input
            .iter()
            .any(|l| l.contains(&format!("--dport {}", agent.port()))),
        "the agent's port first: {input:#?}"
    );
    let forward = block("iptables", "DOCKER-USER", &bridge, &comment);
    assert!(
        forward
            .iter()
            .any(|l| l.contains(&format!("-o {bridge} ")) && l.contains("-j REJECT")),
        "{forward:#?}"
    );
    assert!(
        forward.iter().any(|l| l.contains("-d 169.254.0.0/16")),
        "{forward:#?}"
    );
    assert_eq!(block("ip6tables", "INPUT", &bridge, &comment).len(), 1);
    assert_eq!(block("ip6tables", "FORWARD", &bridge, &comment).len(), 1);
    assert_eq!(
        reads(&lab, "alice", &Lab::alice(), &host.addr.to_string(), port).await,
        ""
    );

    // Someone deletes the host's refusal; the agent puts the block back, in the
    // same order. (Whether the container reached the host meanwhile depends on
    // when the repair runs, so it is not checked.)
    let deleted = Command::new("sh")
        .arg("-c")
        .arg(format!("iptables -w 5 {}", last.replacen("-A ", "-D ", 1)))
        .status()
        .unwrap();
    assert!(deleted.success());
    let deadline = Instant::now() + REPAIRED_WITHIN;
    while block("iptables", "INPUT", &bridge, &comment) != input {
        assert!(
            Instant::now() < deadline,
            "not repaired: {:#?}",
            block("iptables", "INPUT", &bridge, &comment)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        reads(&lab, "alice", &Lab::alice(), &host.addr.to_string(), port).await,
        ""
    );

    lab.stop().await;
    for (program, chain) in [
        ("iptables", "INPUT"),
        ("iptables", "DOCKER-USER"),
        ("ip6tables", "INPUT"),
        ("ip6tables", "FORWARD"),
    ] {
        assert_eq!(
            block(program, chain, &bridge, &comment),
            Vec::<String>::new(),
            "{program} {chain} after shutdown"
        );
    }
}
