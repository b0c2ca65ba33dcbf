//! Students' containers cannot reach the agent's or the controller's ports,
//! even when those listen on an address routable from the containers and the
//! environment's egress allow-list names that address.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use labssh_testkit::docker::{ensure_test_image, Cleanup};
use labssh_testkit::process::{free_port, Proc};
use labssh_testkit::ssh::{stderr, stdout, Auth, Ssh};

const STARTUP: Duration = Duration::from_secs(30);

fn labssh(role: &str, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_labssh"));
    cmd.arg(role).arg("--config").arg(config);
    cmd
}

/// Whether a TCP connection from inside the student's container to
/// `ip:port` succeeds (busybox nc: exit 0 when it connected).
async fn reachable_from_container(ssh: &Ssh, ip: &str, port: u16) -> bool {
    let out = ssh
        .run(
            "alice",
            &Auth::Password(crate::lab::ALICE_PW.into()),
            &[&format!(
                "nc -w 2 {ip} {port} </dev/null >/dev/null 2>&1; echo rc=$?"
            )],
        )
        .await
        .unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("rc="), "{text} {}", stderr(&out));
    text.trim() == "rc=0"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_cannot_reach_agent_or_controller_ports() {
    labssh_testkit::init_tracing();
    tokio::task::spawn_blocking(ensure_test_image)
        .await
        .unwrap()
        .unwrap();
    // The host's address on the containers' bridge (docker0).
    let addr = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .unwrap();
    let gateway = String::from_utf8_lossy(&addr.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        gateway.parse::<std::net::Ipv4Addr>().is_ok(),
        "docker0 gateway: {gateway:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = labssh_testkit::unique("iso");
    let _cleanup = Cleanup {
        prefix: prefix.clone(),
    };
    labssh_proxy::users::add_user(
        &d.join("users.toml"),
        "alice",
        Some(crate::lab::ALICE_PW),
        None,
    )
    .unwrap();

    // Controller and agent listen on every address, including the bridge
    // gateway that containers can route to.
    let (cport, aport, sport) = (free_port(), free_port(), free_port());
    // The default environment may reach every port of the gateway address: the
    // agent's and controller's ports stay refused all the same.
    std::fs::write(
        d.join("controller.toml"),
        format!(
            "listen = \"0.0.0.0:{cport}\"\n{}\n[environments.default.network]\negress = [\"{gateway}\"]\n",
            crate::lab::controller_toml()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("agent.toml"),
        format!(
            "name = \"iso\"\nlisten = \"0.0.0.0:{aport}\"\nadvertise = \"http://127.0.0.1:{aport}\"\n\
             controller = \"http://127.0.0.1:{cport}\"\ncontainer_prefix = \"{prefix}\"\n"
        ),
    )
    .unwrap();
    crate::lab::write_proxy_toml(d, sport, cport);
    // A rule left behind by a killed run of this agent from before rules named
    // the agent's listen address: the agent removes it when it starts. (Rules
    // of the current form, cluster networks and IPv6 are tested in
    // tests/escape/roles/firewall.rs.)
    let stale = Command::new("iptables")
        .args([
            "-w", "5", "-I", "INPUT", "-i", "docker0", "-p", "tcp", "--dport", "9", "-m", "comment",
        ])
        .args([
            "--comment",
            "labssh-agent iso",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ])
        .status()
        .unwrap();
    assert!(stale.success());
    let mut controller = Proc::start(
        "controller",
        labssh("controller", &d.join("controller.toml")),
        d,
    )
    .unwrap();
    controller.wait_port(cport, STARTUP).unwrap();
    let mut agent = Proc::start("agent", labssh("agent", &d.join("agent.toml")), d).unwrap();
    agent.wait_port(aport, STARTUP).unwrap();
    let mut proxy = Proc::start("proxy", labssh("proxy", &d.join("proxy.toml")), d).unwrap();
    proxy.wait_port(sport, STARTUP).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let rules_now = String::from_utf8_lossy(
        &Command::new("iptables")
            .args(["-S", "INPUT"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !rules_now.contains("--dport 9 "),
        "stale rule removed at start: {rules_now}"
    );

    // From the host, both ports answer on the gateway address.
    for port in [cport, aport] {
        std::net::TcpStream::connect((gateway.as_str(), port))
            .unwrap_or_else(|e| panic!("host reaches {gateway}:{port}: {e}"));
    }
    // A control: a port nobody protects is reachable from the container,
    // so the check below can tell reachable from not.
    let control = std::net::TcpListener::bind((gateway.as_str(), 0)).unwrap();
    let control_port = control.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in control.incoming().take(4) {
            drop(conn);
        }
    });
    let ssh = Ssh::new(format!("127.0.0.1:{sport}").parse().unwrap()).unwrap();
    assert!(
        reachable_from_container(&ssh, &gateway, control_port).await,
        "control port should be reachable; agent log: {}",
        agent.log_text()
    );
    assert!(
        !reachable_from_container(&ssh, &gateway, aport).await,
        "agent port reachable from a container"
    );
    assert!(
        !reachable_from_container(&ssh, &gateway, cport).await,
        "controller port reachable from a container"
    );

    // The rules go away with the agent.
    let rules = || {
        String::from_utf8_lossy(
            &Command::new("iptables")
                .args(["-S", "INPUT"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    // This agent instance's rules (other instances named `iso`, killed by an earlier
    // run on this machine, keep theirs: they are not this agent's to remove).
    let mine = format!("labssh-agent iso 0.0.0.0:{aport}");
    assert!(rules().contains(&mine), "{}", rules());
    controller.kill();
    proxy.kill();
    agent.terminate();
    // It drains sessions (up to 3 s) and removes every rule first.
    for _ in 0..600 {
        if !agent.running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !rules().contains(&mine),
        "rules removed at shutdown: {}",
        rules()
    );
}
