//! Students' containers on networks of their own (issue 11): no container reaches
//! another student's, a link-local address, this host or anything its environment's
//! egress policy does not allow; containers from before move at their next login;
//! each network's rules are repaired and leave with the agent.
//!
//! Addresses "elsewhere" are put on this host, on a bridge with no ports (this kernel
//! may have no dummy module), so no traffic leaves the machine.

mod egress;
mod migration;
mod rules;
mod students;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use labssh_testkit::ssh::{stderr, stdout, Auth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::lab::{spawn_path, Lab};
use labssh_testkit::docker::TEST_IMAGE;

/// How long one connection attempt from a container may take.
const TRY: Duration = Duration::from_secs(10);

/// Runs `ip args...`; panics unless it succeeds.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A number that differs between test processes, for names and addresses.
fn run_id() -> u32 {
    std::process::id()
}

/// An address on this host, on a bridge of its own with no ports; removed on drop.
pub struct HostAddress {
    link: String,
    pub addr: Ipv4Addr,
}

impl HostAddress {
    /// `addr`/32 on a new portless bridge; `what` tells this test's links apart.
    pub fn add(what: char, addr: Ipv4Addr) -> HostAddress {
        let link = format!("lsn{:05x}{what}", run_id() & 0xfffff);
        // Whatever a killed run of this test left.
        let _ = Command::new("ip").args(["link", "del", &link]).output();
        ip(&["link", "add", &link, "type", "bridge"]);
        let address = HostAddress { link, addr };
        ip(&["link", "set", &address.link, "up"]);
        ip(&["addr", "add", &format!("{addr}/32"), "dev", &address.link]);
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

/// `10.214.N.host`, N from the test process: a private address for this run.
pub fn private(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 214, (run_id() % 200) as u8 + 20, host)
}

/// A TCP server on `addr` (port 0: any) greeting every connection with `greeting`
/// and a newline; returns its port.
pub async fn serve(addr: SocketAddr, greeting: &'static str) -> u16 {
    let listener = TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(format!("{greeting}\n").as_bytes()).await;
        }
    });
    port
}

/// What this host reads from `addr:port` (a control: the server is up).
pub async fn host_reads(addr: Ipv4Addr, port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect((addr, port)).await.unwrap();
    let mut text = Vec::new();
    tokio::time::timeout(TRY, s.read_to_end(&mut text))
        .await
        .expect("the server closes")
        .unwrap();
    String::from_utf8_lossy(&text).into_owned()
}

/// Runs `script` in `login`'s container; its stdout, panicking with stderr if it
/// failed to run at all.
pub async fn sh(lab: &Lab, login: &str, auth: &Auth, script: &str) -> String {
    let out = lab.ssh.run(login, auth, &[script]).await.unwrap();
    assert!(
        out.status.code().is_some(),
        "{login}: {script}: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// What `login`'s container reads from `host port` with busybox nc (empty when it
/// cannot connect).
pub async fn reads(lab: &Lab, login: &str, auth: &Auth, host: &str, port: u16) -> String {
    let script = format!(
        "nc -w {} {host} {port} </dev/null 2>/dev/null; true",
        TRY.as_secs() / 2
    );
    sh(lab, login, auth, &script).await
}

/// The names of the networks `container` is on, and its IPv4 address on them.
pub fn networks_of(container: &str) -> (Vec<String>, String) {
    let text = labssh_testkit::docker::docker(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.IPAddress}}\n{{end}}",
        container,
    ])
    .unwrap();
    let mut names = Vec::new();
    let mut address = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        names.push(parts.next().unwrap_or_default().to_owned());
        address = parts.next().unwrap_or_default().to_owned();
    }
    (names, address)
}

/// The bridge interface of the Docker network `network`.
pub fn bridge_of(network: &str) -> String {
    labssh_testkit::docker::docker(&[
        "network",
        "inspect",
        "-f",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
        network,
    ])
    .unwrap()
    .trim()
    .to_owned()
}

/// `[environments.NAME]` with `egress` as its network policy.
pub fn environment(name: &str, egress: &str) -> String {
    format!(
        "[environments.{name}]\nimage = \"{TEST_IMAGE}\"\nspawn = \"{}\"\nuid = 1000\ngid = 1000\n\
         [environments.{name}.network]\negress = {egress}\n",
        spawn_path()
    )
}
