//! Finding 6, forwarding: a name an allow rule gives is resolved by the agent, not
//! by the container whose /etc/hosts a root student controls; and the hard guard
//! knows addresses this host gained after the agent started.
//!
//! Both need root: the first puts a test host in a network namespace of its own
//! (reached through a veth pair, as a LAN host would be), the second adds an address
//! to this host (on a bridge with no ports: this kernel may have no dummy module).

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use labssh_testkit::process::free_port;
use labssh_testkit::ssh::{stderr, stdout};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::STEP;
use crate::lab::{connect_when_up, spawn_path, Lab, LabOptions};

/// Runs `ip args...`; panics unless it succeeds.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A name for this test process's interfaces and namespaces (15 characters at most).
fn tag(what: char) -> String {
    format!("lsq{:05x}{what}", std::process::id() & 0xfffff)
}

/// A third octet that differs between test processes.
fn subnet() -> u8 {
    (std::process::id() % 200) as u8 + 20
}

/// A test host in a network namespace of its own, at `10.213.N.2`, reached from this
/// host through a veth pair (`10.213.N.1`). Removed on drop.
struct TestHost {
    ns: String,
    link: String,
    addr: Ipv4Addr,
}

impl TestHost {
    fn new() -> TestHost {
        let (ns, link, peer) = (tag('n'), tag('h'), tag('p'));
        let n = subnet();
        ip(&["netns", "add", &ns]);
        let host = TestHost {
            ns: ns.clone(),
            link: link.clone(),
            addr: Ipv4Addr::new(10, 213, n, 2),
        };
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["addr", "add", &format!("10.213.{n}.1/30"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.213.{n}.2/30"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        host
    }

    /// A server in the namespace greeting whoever connects to `port` with `greeting`.
    fn serve(&self, port: u16, greeting: &str) -> tokio::process::Child {
        tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "busybox", "nc", "-ll", "-p"])
            .arg(port.to_string())
            .args(["-e", "/bin/echo", greeting])
            .kill_on_drop(true)
            .spawn()
            .expect("busybox nc in the namespace")
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// What a connection to `addr:port` reads before it closes.
async fn greeting(addr: (Ipv4Addr, u16)) -> Option<String> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let mut text = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut text))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&text).into_owned())
}

/// Forwards local port → `target` through `login`'s session (which runs a short
/// command), connects once, and returns (what came back, the client's stderr).
async fn forward_once(lab: &Lab, login: &str, target: &str) -> (String, String) {
    let local = free_port();
    let spec = format!("{local}:{target}");
    let child = lab
        .ssh
        .command_with(
            login,
            &Lab::alice(),
            &["-o", "LogLevel=INFO", "-L", &spec],
            &["sleep 3; echo session-alive"],
        )
        .spawn()
        .unwrap();
    let mut s = connect_when_up(local).await;
    let _ = s.write_all(b"hello\n").await;
    let mut back = Vec::new();
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut back)).await;
    drop(s); // ssh waits for its forwarded connections to close
    let out = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("the session ends")
        .unwrap();
    assert_eq!(stdout(&out), "session-alive\n", "{}", stderr(&out));
    (String::from_utf8_lossy(&back).into_owned(), stderr(&out))
}

/// The name the allow rule gives; `.invalid` never resolves in DNS.
const LICENSE: &str = "license.labssh.invalid";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allowed_names_are_resolved_by_the_agent_not_the_containers_etc_hosts() {
    let lab = Lab::start(LabOptions {
        catalogue: format!(
            r#"
[environments.named]
image = "{}"
spawn = "{}"
run_as_root = true
[environments.named.forwarding]
allow = ["{LICENSE}:7000"]
# The container itself may reach the test hosts' range (private: closed by default).
[environments.named.network]
egress = ["10.213.0.0/16"]
"#,
            labssh_testkit::docker::TEST_IMAGE,
            spawn_path()
        ),
        ..Default::default()
    })
    .await;
    let host = TestHost::new();
    let _server = host.serve(7000, "target-reached");
    let deadline = Instant::now() + STEP;
    while greeting((host.addr, 7000)).await.as_deref() != Some("target-reached\n") {
        assert!(Instant::now() < deadline, "the test host never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A root student points the allowed name at the test host; the container itself
    // can reach it, so only the forwarding policy stands between.
    let script = format!(
        "echo '{} {LICENSE}' >> /etc/hosts && nc -w 10 {LICENSE} 7000 </dev/null",
        host.addr
    );
    let out = lab
        .ssh
        .run("alice+named", &Lab::alice(), &[&script])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "target-reached\n", "{}", stderr(&out));

    let (back, err) = forward_once(&lab, "alice+named", &format!("{LICENSE}:7000")).await;
    assert!(
        !back.contains("target-reached"),
        "ssh -L to an allowed name reached where the container's /etc/hosts points it"
    );
    assert!(
        err.contains(&format!("{LICENSE}:7000: cannot resolve the name"))
            || err.contains(&format!("{LICENSE}:7000: the name did not resolve")),
        "no clear refusal in {err:?}"
    );
    lab.stop().await;
}

/// An address on this host, on a bridge of its own (no ports); removed on drop.
struct HostAddress {
    link: String,
    addr: Ipv4Addr,
}

impl HostAddress {
    fn add() -> HostAddress {
        let link = tag('b');
        ip(&["link", "add", &link, "type", "bridge"]);
        let address = HostAddress {
            link: link.clone(),
            addr: Ipv4Addr::new(10, 213, subnet() + 1, 1),
        };
        ip(&["link", "set", &link, "up"]);
        ip(&["addr", "add", &format!("{}/32", address.addr), "dev", &link]);
        address
    }
}

impl Drop for HostAddress {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_this_host_gains_after_start_is_refused_too() {
    // `open` forwarding, and the container itself may reach the test's addresses
    // on this host (closed by the default egress policy).
    let lab = Lab::start(LabOptions {
        catalogue: format!(
            r#"
[environments.reach]
image = "{}"
spawn = "{}"
uid = 1000
gid = 1000
[environments.reach.forwarding]
allow = ["*:*"]
[environments.reach.network]
egress = ["10.213.0.0/16"]
"#,
            labssh_testkit::docker::TEST_IMAGE,
            spawn_path()
        ),
        ..Default::default()
    })
    .await;
    // A session first, so the guard has been consulted before the address exists.
    let out = lab
        .ssh
        .run("alice+reach", &Lab::alice(), &["echo up"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "up\n", "{}", stderr(&out));
    let address = HostAddress::add();
    let service = TcpListener::bind((address.addr, 0)).await.unwrap();
    let port = service.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = service.accept().await {
            let _ = s.write_all(b"host-reached\n").await;
        }
    });
    // The container can reach it directly: only the guard stands between.
    let script = format!("nc -w 10 {} {port} </dev/null", address.addr);
    let out = lab
        .ssh
        .run("alice+reach", &Lab::alice(), &[&script])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "host-reached\n", "{}", stderr(&out));

    // `*:*` allows everything but the hard limits, which now include this address.
    let (back, err) = forward_once(&lab, "alice+reach", &format!("{}:{port}", address.addr)).await;
    assert!(
        !back.contains("host-reached"),
        "ssh -L reached an address this host gained after the agent started"
    );
    assert!(
        err.contains("administratively prohibited")
            && err.contains("that is the lab server itself"),
        "no clear refusal in {err:?}"
    );
    lab.stop().await;
}
