//! `ssh -L` and `ssh -D` towards bob's container, by every address and name alice might
//! use, from an environment whose catalogue allows forwarding anywhere (`alice+open`)
//! and from a root one whose `/etc/hosts` alice controls (`alice+admin`). A control
//! forward to alice's own server proves the forwards themselves carry data.

use std::time::Duration;

use labssh_testkit::process::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::lab::{connect_when_up, Lab, LabOptions};
use crate::{as_alice, Bob, BOB_PORT};

/// How long one read through a forward may take before it counts as "nothing".
const READ: Duration = Duration::from_secs(20);
/// The port alice's own control server listens on.
const OWN_PORT: u16 = 7780;

/// Everything that comes back on a connection through `port` until EOF (or
/// [`READ`]); an unanswered connection gives nothing.
async fn read_through(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let mut got = Vec::new();
    let _ = tokio::time::timeout(READ, s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// A SOCKS5 CONNECT to `host:port` (by name) through `proxy`; everything it reads.
async fn read_through_socks(proxy: u16, host: &str, port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", proxy)).await else {
        return String::new();
    };
    let mut req = vec![5, 1, 0, 5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    if s.write_all(&req).await.is_err() {
        return String::new();
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(READ, s.read_to_end(&mut got)).await;
    // The method choice and reply header are binary; the secret is text after them.
    String::from_utf8_lossy(&got).into_owned()
}

/// `ssh -N` as `login` with one `-L` per target (each on its own local port) and a
/// `-D`; returns the session and the local ports, in the order of `targets`.
fn forwards(lab: &Lab, login: &str, targets: &[String]) -> (Child, Vec<u16>, u16) {
    let mut options = Vec::new();
    let mut ports = Vec::new();
    for target in targets {
        let port = free_port();
        ports.push(port);
        options.push("-L".to_string());
        options.push(format!("{port}:{target}"));
    }
    let socks = free_port();
    options.push("-D".into());
    options.push(socks.to_string());
    options.push("-N".into());
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let child = lab
        .ssh
        .command_with(login, &Lab::alice(), &options, &[])
        .spawn()
        .expect("spawn ssh");
    (child, ports, socks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_forward_reaches_bobs_container() {
    let lab = Lab::start(LabOptions::default()).await;
    let bob = Bob::plant(&lab).await;
    // Alice's own server, in the environment that may forward anywhere.
    let _own = lab
        .ssh
        .command(
            "alice+open",
            &Lab::alice(),
            &[&format!(
                "echo alice-own > ~/own; {}",
                crate::serve_file("~/own", OWN_PORT)
            )],
        )
        .spawn()
        .unwrap();
    lab.wait_listening("alice", "open", OWN_PORT).await;
    let bob_name = lab.container_name("bob", "default");
    let mut targets = vec![
        format!("localhost:{OWN_PORT}"),
        format!("{}:{BOB_PORT}", bob.ip),
        format!("[::ffff:{}]:{BOB_PORT}", bob.ip),
        format!("{bob_name}:{BOB_PORT}"),
        format!("0.0.0.0:{BOB_PORT}"),
        format!("[::]:{BOB_PORT}"),
    ];
    for v6 in &bob.ipv6 {
        targets.push(format!("[{v6}]:{BOB_PORT}"));
        if v6.starts_with("fe80") {
            targets.push(format!("[{v6}%eth0]:{BOB_PORT}"));
        }
    }
    let (mut session, ports, socks) = forwards(&lab, "alice+open", &targets);
    drop(connect_when_up(ports[0]).await);
    assert_eq!(
        read_through(ports[0]).await,
        "alice-own\n",
        "the control forward to alice's own server carries data"
    );
    for (target, port) in targets.iter().zip(&ports).skip(1) {
        let got = read_through(*port).await;
        bob.assert_not_in(&got, &format!("ssh -L {target}"));
    }
    for host in [bob.ip.as_str(), bob_name.as_str(), "0.0.0.0"] {
        let got = read_through_socks(socks, host, BOB_PORT).await;
        bob.assert_not_in(&got, &format!("ssh -D to {host}"));
    }
    let _ = session.kill().await;

    // DNS rebinding: a name alice makes resolve to bob's address in her own
    // container's /etc/hosts (she is root in alice+admin).
    as_alice(
        &lab,
        "alice+admin",
        &format!("echo '{} rebound.example' >> /etc/hosts", bob.ip),
    )
    .await;
    let rebound = vec![format!("rebound.example:{BOB_PORT}")];
    let (mut session, ports, socks) = forwards(&lab, "alice+admin", &rebound);
    drop(connect_when_up(socks).await);
    bob.assert_not_in(&read_through(ports[0]).await, "ssh -L to a rebound name");
    let got = read_through_socks(socks, "rebound.example", BOB_PORT).await;
    bob.assert_not_in(&got, "ssh -D to a rebound name");
    let _ = session.kill().await;
    lab.stop().await;
}

/// Serves `text` to every connection on a unix socket at `path` inside `user`'s
/// `env` container (bound through its init's root: the image has no unix-socket
/// tool), open to anyone there (0666); counts the connections.
fn serve_socket(
    lab: &Lab,
    user: &str,
    env: &str,
    path: &str,
    text: String,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::Ordering;
    let host_path = format!("/proc/{}/root{path}", init_pid(lab, user, env));
    let listener = tokio::net::UnixListener::bind(&host_path).unwrap();
    std::fs::set_permissions(&host_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(text.as_bytes()).await;
        }
    });
    count
}

/// `ssh -L PORT:/PATH` towards a socket in bob's container, by every path alice might
/// try, as a student and as root in her own container: each path names her own
/// container's files, or is refused. A control forward to her own socket proves the
/// forwards carry data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_unix_socket_forward_reaches_bobs_socket() {
    use std::sync::atomic::Ordering;
    let lab = Lab::start(LabOptions::default()).await;
    let bob = Bob::plant(&lab).await;
    let bobs = serve_socket(&lab, "bob", "default", "/tmp/bob.sock", bob.secret.clone());
    let bob_pid = init_pid(&lab, "bob", "default");
    for login in ["alice", "alice+admin"] {
        let env = login.strip_prefix("alice+").unwrap_or("default");
        as_alice(&lab, login, "true").await;
        let own = serve_socket(&lab, "alice", env, "/tmp/own.sock", "alice-own\n".into());
        let targets: Vec<String> = [
            "/tmp/own.sock".to_owned(),
            "/tmp/bob.sock".to_owned(),
            format!("/proc/{bob_pid}/root/tmp/bob.sock"),
            "/proc/1/root/tmp/bob.sock".to_owned(),
            "/tmp/../proc/1/root/tmp/bob.sock".to_owned(),
            "/.labssh/run/helper.sock".to_owned(),
        ]
        .into();
        let (mut session, ports, socks) = forwards(&lab, login, &targets);
        drop(connect_when_up(socks).await);
        assert_eq!(
            read_through(ports[0]).await,
            "alice-own\n",
            "the control forward to alice's own socket carries data ({login})"
        );
        assert_eq!(own.load(Ordering::SeqCst), 1);
        for (target, port) in targets.iter().zip(&ports).skip(1) {
            let got = read_through(*port).await;
            bob.assert_not_in(&got, &format!("{login}: ssh -L {target}"));
        }
        let _ = session.kill().await;
    }
    assert_eq!(
        bobs.load(Ordering::SeqCst),
        0,
        "a forward reached bob's socket"
    );
    lab.stop().await;
}

/// The host pid of the init of `user`'s `env` container.
pub(crate) fn init_pid(lab: &Lab, user: &str, env: &str) -> String {
    let name = lab.container_name(user, env);
    labssh_testkit::docker::docker(&["inspect", "-f", "{{.State.Pid}}", &name])
        .unwrap()
        .trim()
        .to_owned()
}
