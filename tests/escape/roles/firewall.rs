//! Finding 5, the network half: a student's container reaches no cluster address,
//! over IPv4 and IPv6, whether the address is this host's own (INPUT) or another
//! node's (routed, FORWARD), and the agent's rules survive a crash and leave with it.
//!
//! The test builds what it needs and removes it again: a network namespace standing
//! for another node (veth pair, 10.x and ULA addresses chosen at random), and — since
//! containers' networks have no IPv6 and Docker disables it in containers — an
//! IPv6 address on the containers' bridge and in the student's container, set from
//! the host; nothing over IPv6 leaves that bridge, not even to the bridge's own
//! address. Routed IPv6 (another node over FORWARD) needs the host's global IPv6
//! forwarding, which the test does not turn on: there it checks the installed
//! ip6tables rule.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use labssh_testkit::docker::{docker, ensure_test_image, Cleanup};
use labssh_testkit::process::{free_port, Proc};
use labssh_testkit::ssh::{stderr, stdout, Auth, Ssh};

use crate::lab;

const STARTUP: Duration = Duration::from_secs(30);

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `iptables -S` (or ip6tables) of every chain the agent uses, as one text.
fn rules(program: &str) -> String {
    ["INPUT", "FORWARD", "DOCKER-USER"]
        .iter()
        .map(|chain| {
            let out = Command::new(program)
                .args(["-w", "5", "-S", chain])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .collect()
}

/// Addresses for this run, random so concurrent runs do not meet.
struct Addresses {
    /// 10.A.B.0/24: a cluster network (host side .1, other node .2).
    cluster4: String,
    /// 10.A.C.0/24: not a cluster network, the controls (host .1, other node .2).
    open4: String,
    /// fdXX:XXXX:XXXX::/48, split into /64s: :1 on docker0, :2 on the veth.
    ula: String,
}

impl Addresses {
    fn new() -> Addresses {
        let n = u32::from_str_radix(&labssh_testkit::unique("")[..8], 16).unwrap();
        let (a, b) = (200 + (n % 50), (n >> 8) % 254);
        Addresses {
            cluster4: format!("10.{a}.{b}"),
            open4: format!("10.{a}.{}", (b + 1) % 254),
            ula: format!("fd{:02x}:{:x}:{:x}", (n >> 24) & 0xff, n & 0xffff, n >> 16),
        }
    }
}

/// What the test added to the host, removed on drop.
struct Scaffold {
    ns: String,
    host_if: String,
    /// An IPv6 address the test put on the containers' bridge, and that bridge.
    bridge_v6: Option<(String, String)>,
    /// Rules the test itself inserted, deleted again: (program, args after -D).
    rules: Vec<(String, Vec<String>)>,
    /// The listener inside the other node.
    httpd: Option<Proc>,
    /// The agent's rule comment: whatever a failed run left with it goes too.
    identity: Option<String>,
}

impl Drop for Scaffold {
    fn drop(&mut self) {
        self.httpd.take();
        if let Some(identity) = &self.identity {
            for program in ["iptables", "ip6tables"] {
                for line in rules(program).lines() {
                    if let Some(rule) = line.strip_prefix("-A ") {
                        if line.contains(&format!("--comment \"{identity}\"")) {
                            let _ = Command::new("sh")
                                .arg("-c")
                                .arg(format!("{program} -w 5 -D {rule}"))
                                .status();
                        }
                    }
                }
            }
        }
        for (program, rule) in &self.rules {
            let _ = Command::new(program)
                .args(["-w", "5", "-D"])
                .args(rule)
                .status();
        }
        if let Some((addr, bridge)) = &self.bridge_v6 {
            let _ = Command::new("ip")
                .args(["-6", "addr", "del", addr, "dev", bridge])
                // The bridge may be gone with its network already.
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn labssh(role: &str, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labssh"));
    cmd.arg(role).arg("--config").arg(config);
    cmd
}

/// Waits (up to [`STARTUP`]) until the controller on `port` has a live agent.
async fn wait_registered(port: u16) {
    let deadline = std::time::Instant::now() + STARTUP;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let mut client = labssh_proto::pb::controller_client::ControllerClient::new(channel);
    loop {
        if let Ok(reply) = client
            .list_agents(labssh_proto::pb::ListAgentsRequest {})
            .await
        {
            if reply.into_inner().agents.iter().any(|a| a.live) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no agent registered within {STARTUP:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to [`STARTUP`]) until the agent says its firewall is in place; it
/// binds its port first, so the port alone says nothing.
async fn firewall_installed(agent: &Proc) {
    let deadline = std::time::Instant::now() + STARTUP;
    while !agent
        .log_text()
        .contains("containers cannot reach these ports")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no firewall within {STARTUP:?}: {}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A listener that accepts and drops connections, so `nc` connects and exits 0.
fn listen(addr: &str) -> u16 {
    let listener = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_reach_no_cluster_address() {
    labssh_testkit::init_tracing();
    tokio::task::spawn_blocking(ensure_test_image)
        .await
        .unwrap()
        .unwrap();
    let ip = Addresses::new();
    let tag = labssh_testkit::unique("");
    let mut scaffold = Scaffold {
        ns: format!("lsfw{}", &tag[..6]),
        host_if: format!("lsfw{}h", &tag[..6]),
        bridge_v6: None,
        rules: Vec::new(),
        httpd: None,
        identity: None,
    };
    let peer_if = format!("lsfw{}n", &tag[..6]);
    let (ns, hif) = (scaffold.ns.clone(), scaffold.host_if.clone());

    // Another node: a namespace behind a veth pair, routed from this host.
    run("ip", &["netns", "add", &ns]);
    run(
        "ip",
        &[
            "link", "add", &hif, "type", "veth", "peer", "name", &peer_if,
        ],
    );
    run("ip", &["link", "set", &peer_if, "netns", &ns]);
    for addr in [
        format!("{}.1/24", ip.cluster4),
        format!("{}.1/24", ip.open4),
        format!("{}.9/32", ip.open4),
    ] {
        run("ip", &["addr", "add", &addr, "dev", &hif]);
    }
    run(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{}:2::1/64", ip.ula),
            "dev",
            &hif,
            "nodad",
        ],
    );
    run("ip", &["link", "set", &hif, "up"]);
    for addr in [
        format!("{}.2/24", ip.cluster4),
        format!("{}.2/24", ip.open4),
    ] {
        run("ip", &["-n", &ns, "addr", "add", &addr, "dev", &peer_if]);
    }
    run("ip", &["-n", &ns, "link", "set", &peer_if, "up"]);
    run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
    run(
        "ip",
        &[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &format!("{}.1", ip.cluster4),
        ],
    );
    let www = tempfile::tempdir().unwrap();
    let other_port = free_port();
    let mut httpd = Command::new("ip");
    httpd.args(["netns", "exec", &ns, "busybox", "httpd", "-f", "-p"]);
    httpd.arg(other_port.to_string()).arg("-h").arg(www.path());
    scaffold.httpd = Some(Proc::start("httpd", httpd, www.path()).unwrap());

    // Listeners on this host.
    let host_cluster = listen(&format!("{}.1:0", ip.cluster4));
    let host_open = listen(&format!("{}.1:0", ip.open4));
    let controller_other = listen(&format!("{}.9:0", ip.open4));
    let v6_cluster = listen(&format!("[{}:2::1]:0", ip.ula));
    let v6_protected = free_port();
    listen(&format!("[::]:{v6_protected}"));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = labssh_testkit::unique("fw");
    let _cleanup = Cleanup {
        prefix: prefix.clone(),
    };
    labssh_proxy::users::add_user(&d.join("users.toml"), "alice", Some(lab::ALICE_PW), None)
        .unwrap();
    let (cport, aport, sport) = (free_port(), free_port(), free_port());
    std::fs::write(
        d.join("controller.toml"),
        // The allow-list names the controls and the cluster's addresses alike: the
        // cluster's stay refused all the same.
        format!(
            "listen = \"0.0.0.0:{cport}\"\n{}\n[environments.default.network]\n\
             egress = [\"{}.0/24\", \"{}.0/24\"]\n",
            lab::controller_toml(),
            ip.open4,
            ip.cluster4
        ),
    )
    .unwrap();
    // The agent finds the controller at an address of its own: that address is a
    // cluster address without being listed.
    let controller_ip = format!("{}.9", ip.open4);
    std::fs::write(
        d.join("agent.toml"),
        format!(
            "name = \"fw\"\nlisten = \"0.0.0.0:{aport}\"\nadvertise = \"http://127.0.0.1:{aport}\"\n\
             controller = \"http://{controller_ip}:{cport}\"\ncontainer_prefix = \"{prefix}\"\n\
             firewall_ports = [{v6_protected}]\n\
             cluster_networks = [\"{c}.0/24\", \"{u}:2::/64\"]\n",
            c = ip.cluster4,
            u = ip.ula,
        ),
    )
    .unwrap();
    crate::lab::write_proxy_toml(d, sport, cport);

    // Rules of this agent left by a crashed run, and of another agent with the same
    // name on another port (a concurrent test lab), which must survive.
    let identity = format!("labssh-agent fw 0.0.0.0:{aport}");
    let neighbour = "labssh-agent fw 0.0.0.0:1".to_string();
    scaffold.identity = Some(identity.clone());
    for (program, comment, port) in [
        ("iptables", &identity, "9"),
        ("ip6tables", &identity, "9"),
        ("iptables", &neighbour, "10"),
        ("ip6tables", &neighbour, "10"),
    ] {
        let rule: Vec<String> = [
            "INPUT",
            "-i",
            "docker0",
            "-p",
            "tcp",
            "--dport",
            port,
            "-m",
            "comment",
            "--comment",
            comment,
            "-j",
            "REJECT",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut insert = vec!["-w".to_string(), "5".into(), "-I".into()];
        insert.extend(rule.iter().cloned());
        run(
            program,
            &insert.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        if comment == &neighbour {
            scaffold.rules.push((program.to_string(), rule));
        }
    }

    let mut controller = Proc::start(
        "controller",
        labssh("controller", &d.join("controller.toml")),
        d,
    )
    .unwrap();
    controller.wait_port(cport, STARTUP).unwrap();
    let mut agent = Proc::start("agent", labssh("agent", &d.join("agent.toml")), d).unwrap();
    agent.wait_port(aport, STARTUP).unwrap();
    firewall_installed(&agent).await;
    let mut proxy = Proc::start("proxy", labssh("proxy", &d.join("proxy.toml")), d).unwrap();
    proxy.wait_port(sport, STARTUP).unwrap();

    let count = |program: &str, comment: &str| {
        rules(program)
            .lines()
            .filter(|l| l.contains(&format!("--comment \"{comment}\"")))
            .count()
    };
    wait_registered(cport).await;
    // The student's container, given IPv6 from the host.
    let ssh = Ssh::new(format!("127.0.0.1:{sport}").parse().unwrap()).unwrap();
    let alice = Auth::Password(lab::ALICE_PW.into());
    let out = ssh.run("alice", &alice, &["true"]).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let container = labssh_agent::backend::docker::container_name(&prefix, "alice", "default");
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &container])
        .unwrap()
        .trim()
        .to_string();
    let network = docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
        &container,
    ])
    .unwrap();
    let bridge = docker(&[
        "network",
        "inspect",
        "-f",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
        network.trim(),
    ])
    .unwrap()
    .trim()
    .to_string();
    let bridge_v6 = format!("{}:1::1/64", ip.ula);
    run(
        "ip",
        &["-6", "addr", "add", &bridge_v6, "dev", &bridge, "nodad"],
    );
    scaffold.bridge_v6 = Some((bridge_v6, bridge.clone()));
    let nsenter = |args: &[&str]| {
        let mut all = vec!["-t", pid.as_str(), "-n"];
        all.extend(args);
        run("nsenter", &all)
    };
    nsenter(&["sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6"]);
    nsenter(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{}:1::2/64", ip.ula),
        "dev",
        "eth0",
        "nodad",
    ]);
    nsenter(&[
        "ip",
        "-6",
        "route",
        "add",
        &format!("{}::/48", ip.ula),
        "via",
        &format!("{}:1::1", ip.ula),
    ]);
    let v6_open = listen(&format!("[{}:1::1]:0", ip.ula));

    // (what, address, port, reachable?)
    let checks: Vec<(&str, String, u16, bool)> = vec![
        (
            "v4 control: this host, no cluster network",
            format!("{}.1", ip.open4),
            host_open,
            true,
        ),
        (
            "v4 control: other node, no cluster network",
            format!("{}.2", ip.open4),
            other_port,
            true,
        ),
        (
            "v4 cluster network on this host (INPUT)",
            format!("{}.1", ip.cluster4),
            host_cluster,
            false,
        ),
        (
            "v4 cluster network on another node (FORWARD)",
            format!("{}.2", ip.cluster4),
            other_port,
            false,
        ),
        (
            "v4 controller address from the URL, its port",
            controller_ip.clone(),
            cport,
            false,
        ),
        (
            "v4 controller address from the URL, another port",
            controller_ip.clone(),
            controller_other,
            false,
        ),
        (
            "v6: the bridge's own address, an open port (no IPv6 leaves a containers' bridge)",
            format!("{}:1::1", ip.ula),
            v6_open,
            false,
        ),
        (
            "v6 firewall_ports port on this host",
            format!("{}:1::1", ip.ula),
            v6_protected,
            false,
        ),
        (
            "v6 cluster network on this host (INPUT)",
            format!("{}:2::1", ip.ula),
            v6_cluster,
            false,
        ),
    ];
    let script: String = checks
        .iter()
        .map(|(_, addr, port, _)| {
            format!("nc -w 2 {addr} {port} </dev/null >/dev/null 2>&1; echo rc=$?; ")
        })
        .collect();
    let out = ssh.run("alice", &alice, &[&script]).await.unwrap();
    let seen: Vec<bool> = stdout(&out).lines().map(|l| l.trim() == "rc=0").collect();
    assert_eq!(
        seen.len(),
        checks.len(),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    let wrong: Vec<String> = checks
        .iter()
        .zip(&seen)
        .filter(|((_, _, _, want), got)| want != *got)
        .map(|((what, addr, port, want), _)| {
            format!(
                "{what} ({addr} port {port}) should be {}",
                if *want { "reachable" } else { "unreachable" }
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "from the container: {wrong:#?}\nagent log: {}",
        agent.log_text()
    );
    let installed = (count("iptables", &identity), count("ip6tables", &identity));
    // For Docker's default bridge, per family: a rule per port (agent, controller,
    // firewall_ports) and, per cluster network of the family, one in INPUT and one
    // for routed traffic; v4 has the listed /24 and the controller's address, v6
    // the listed /64. The containers' bridge has a block of its own.
    let on_docker0 = |program: &str| {
        rules(program)
            .lines()
            .filter(|l| {
                l.contains(&format!("--comment \"{identity}\"")) && l.contains("-i docker0 ")
            })
            .count()
    };
    assert_eq!(
        (on_docker0("iptables"), on_docker0("ip6tables")),
        (3 + 2 * 2, 3 + 2),
        "{}",
        rules("iptables")
    );
    let on_bridge = |program: &str| rules(program).matches(&format!("-i {bridge} ")).count();
    assert!(on_bridge("iptables") > 10, "{}", rules("iptables"));
    assert_eq!(on_bridge("ip6tables"), 2, "{}", rules("ip6tables"));
    let stale_gone = |program: &str| {
        !rules(program).contains(&format!("--dport 9 -m comment --comment \"{identity}\""))
    };
    assert!(
        stale_gone("iptables") && stale_gone("ip6tables"),
        "stale rules removed: {}",
        rules("iptables")
    );
    assert_eq!(
        count("iptables", &neighbour),
        1,
        "a neighbour's rule is kept"
    );
    assert_eq!(
        count("ip6tables", &neighbour),
        1,
        "a neighbour's rule is kept"
    );

    // Routed IPv6 is not exercised (see the module comment); its rule is there.
    let v6 = rules("ip6tables");
    assert!(
        v6.lines()
            .any(|l| l.contains(&format!("-d {}:2::/64", ip.ula))
                && (l.starts_with("-A FORWARD") || l.starts_with("-A DOCKER-USER"))
                && l.contains(&identity)),
        "ip6tables forward rule: {v6}"
    );

    // A crash leaves the rules; the next start replaces them, one copy each.
    agent.kill();
    assert_eq!(
        (count("iptables", &identity), count("ip6tables", &identity)),
        installed
    );
    let mut agent = Proc::start("agent2", labssh("agent", &d.join("agent.toml")), d).unwrap();
    agent.wait_port(aport, STARTUP).unwrap();
    firewall_installed(&agent).await;
    // The containers' bridge's block follows the rest at start.
    let deadline = std::time::Instant::now() + STARTUP;
    while (count("iptables", &identity), count("ip6tables", &identity)) != installed {
        assert!(
            std::time::Instant::now() < deadline,
            "rules after a restart: {}",
            rules("iptables")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    controller.kill();
    proxy.kill();
    agent.terminate();
    for _ in 0..600 {
        if !agent.running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (count("iptables", &identity), count("ip6tables", &identity)),
        (0, 0),
        "rules removed at shutdown: {}\nagent log: {}",
        rules("iptables"),
        agent.log_text()
    );
    assert_eq!(
        count("iptables", &neighbour),
        1,
        "a neighbour's rule is kept"
    );
}
