//! Unix-socket forwarding with the stock OpenSSH client: `ssh -L PORT:/PATH`
//! (`direct-streamlocal@openssh.com`) to a socket inside the container and
//! `ssh -R /PATH:HOST:PORT` (`streamlocal-forward@openssh.com`) from one, byte-exact;
//! the socket reached and made as the student (their uid and gid, the file's
//! permissions); the socket file gone with the forward; and every bad path, another
//! student's socket and forwarding turned off refused with a reason.
//!
//! The test's own end of a socket in the container is reached through the
//! container's init (`/proc/PID/root/...`, the test runs as root, as the agent does):
//! the image has no unix-socket tool, and the kernel treats a socket bound through
//! that path as the container's own file, which is what the helper reaches or makes.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use labssh_proto::pb;
use labssh_testkit::docker::TEST_IMAGE;
use labssh_testkit::process::free_port;
use labssh_testkit::ssh::{stderr, Auth};
use pb::agent_client::AgentClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::process::Child;

use crate::forwarding::{echo_round_trip, forward};
use crate::lab::{connect_when_up, Lab, LabOptions};

const STEP: Duration = Duration::from_secs(30);
/// What the lab's default environment runs students as.
const STUDENT: (u32, u32) = (1000, 1000);

/// Makes sure `user`'s default container runs; the host path of `path` inside it.
async fn in_container(lab: &Lab, user: &str, auth: &Auth, path: &str) -> PathBuf {
    let out = lab.ssh.run(user, auth, &["true"]).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let name = lab.container_name(user, "default");
    let pid = labssh_testkit::docker::docker(&["inspect", "-f", "{{.State.Pid}}", &name]).unwrap();
    PathBuf::from(format!("/proc/{}/root{path}", pid.trim()))
}

/// An echo server on a unix socket at `host_path`, owned by `owner` with `mode`;
/// counts its connections and records each peer's (uid, gid).
struct EchoSocket {
    connections: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<(u32, u32)>>>,
}

impl EchoSocket {
    fn start(host_path: &std::path::Path, owner: (u32, u32), mode: u32) -> EchoSocket {
        let listener = UnixListener::bind(host_path).unwrap();
        std::os::unix::fs::chown(host_path, Some(owner.0), Some(owner.1)).unwrap();
        std::fs::set_permissions(host_path, std::fs::Permissions::from_mode(mode)).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), peers.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                if let Ok(cred) = s.peer_cred() {
                    seen.lock().unwrap().push((cred.uid(), cred.gid()));
                }
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        EchoSocket { connections, peers }
    }
}

/// Waits until `host_path` exists (`true`) or is gone (`false`).
async fn wait_file(host_path: &std::path::Path, present: bool) {
    let deadline = Instant::now() + STEP;
    while host_path.symlink_metadata().is_ok() != present {
        assert!(
            Instant::now() < deadline,
            "{} never {}",
            host_path.display(),
            if present { "appeared" } else { "went away" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `ssh -L LOCAL:PATH` in a session running `sleep 2`, one connection through it
/// (which must be refused: closed without a byte), and the client's stderr, where
/// OpenSSH prints the reason.
async fn refused_local(lab: &Lab, login: &str, auth: &Auth, path: &str) -> String {
    let local = free_port();
    let spec = format!("{local}:{path}");
    let child = lab
        .ssh
        .command_with(
            login,
            auth,
            &["-o", "LogLevel=INFO", "-L", &spec],
            &["sleep 2"],
        )
        .spawn()
        .unwrap();
    let mut s = connect_when_up(local).await;
    let _ = s.write_all(b"x").await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(STEP, s.read(&mut buf))
        .await
        .expect("a refused forward closes promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "a refused forward to {path} returned data");
    let out = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("the session ends")
        .unwrap();
    assert!(
        out.status.success(),
        "the session goes on: {}",
        stderr(&out)
    );
    stderr(&out)
}

/// `ssh -R PATH:...` with ExitOnForwardFailure: the client must give up on it. SSH's
/// answer to a refused global request carries no text; the proxy logs the reason.
async fn refused_remote(lab: &Lab, login: &str, path: &str) {
    let spec = format!("{path}:127.0.0.1:1");
    let out = labssh_testkit::ssh::output(lab.ssh.command_with(
        login,
        &Lab::alice(),
        &["-o", "ExitOnForwardFailure=yes", "-R", &spec],
        &["echo should-not-run"],
    ))
    .await
    .unwrap();
    assert!(!out.status.success(), "-R {path} was allowed");
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "remote port forwarding failed for listen path {path}"
        )),
        "{text}"
    );
}

/// The agent's Forward call for alice's socket at `path`, as a client other than
/// OpenSSH could ask through the proxy: (prohibited, message) of its refusal.
async fn agent_forward(lab: &Lab, path: &str) -> (bool, String) {
    let mut agent = agent(lab).await;
    let first = pb::ForwardInput {
        msg: Some(pb::forward_input::Msg::Open(pb::ForwardOpen {
            user: "alice".into(),
            environment: "default".into(),
            socket_path: path.into(),
            ..Default::default()
        })),
    };
    let input = futures::stream::iter([first]).chain(futures::stream::pending());
    let mut out = agent.forward(input).await.unwrap().into_inner();
    match tokio::time::timeout(STEP, out.next()).await {
        Ok(Some(Ok(pb::ForwardOutput {
            msg: Some(pb::forward_output::Msg::Error(e)),
        }))) => (e.prohibited, e.message),
        other => panic!("forward to {path}: {other:?}"),
    }
}

/// The agent's Listen call for alice's socket at `path`: (prohibited, message).
async fn agent_listen(lab: &Lab, path: &str) -> (bool, String) {
    let mut agent = agent(lab).await;
    let request = pb::ListenRequest {
        user: "alice".into(),
        environment: "default".into(),
        socket_path: path.into(),
        ..Default::default()
    };
    let mut events = agent.listen(request).await.unwrap().into_inner();
    match tokio::time::timeout(STEP, events.next()).await {
        Ok(Some(Ok(pb::ListenEvent {
            msg: Some(pb::listen_event::Msg::Error(e)),
        }))) => (e.prohibited, e.message),
        other => panic!("listen on {path}: {other:?}"),
    }
}

async fn agent(lab: &Lab) -> AgentClient<tonic::transport::Channel> {
    let cluster = lab.cluster.as_ref().unwrap();
    AgentClient::connect(format!("http://{}", cluster.agent_addrs[0]))
        .await
        .unwrap()
}

/// `ssh -N` with `options`, kept open in the background.
fn background_forward(lab: &Lab, options: &[&str]) -> Child {
    let mut all = vec!["-N", "-o", "ExitOnForwardFailure=yes"];
    all.extend_from_slice(options);
    lab.ssh
        .command_with("alice", &Lab::alice(), &all, &[])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unix_sockets_forward_both_ways_byte_exact_as_the_student() {
    let lab = Lab::start(LabOptions::default()).await;
    // -L PORT:/PATH to a socket in the container.
    let host_path = in_container(&lab, "alice", &Lab::alice(), "/tmp/echo.sock").await;
    let echo = EchoSocket::start(&host_path, STUDENT, 0o600);
    let port = free_port();
    let spec = format!("{port}:/tmp/echo.sock");
    let mut client = forward(&lab, "alice", &["-L", &spec], port).await;
    const TOTAL: usize = 20 << 20;
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (sent, received, n) = tokio::time::timeout(STEP * 4, echo_round_trip(stream, TOTAL))
        .await
        .expect("the echo through ssh -L PORT:/PATH finished");
    assert_eq!(n, TOTAL, "echoed byte count");
    assert_eq!(sent, received, "echoed bytes differ");
    // Every connection (forward() probed the port first) came from the student, not
    // from root.
    let peers = echo.peers.lock().unwrap().clone();
    assert!(
        !peers.is_empty() && peers.iter().all(|p| *p == STUDENT),
        "{peers:?}"
    );
    let _ = client.kill().await;

    // -R /PATH:HOST:PORT: a socket in the container, back to the test side.
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = target.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = target.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    let control = lab.ssh.dir().join("control.sock");
    let control_opt = format!("ControlPath={}", control.display());
    let spec = format!("/tmp/app.sock:127.0.0.1:{target_port}");
    let mut master = background_forward(&lab, &["-M", "-o", &control_opt, "-R", &spec]);
    let app = host_path.with_file_name("app.sock");
    wait_file(&app, true).await;
    // The student's socket, theirs alone: sshd's 0600.
    let meta = app.symlink_metadata().unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!((meta.uid(), meta.gid()), STUDENT);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let stream = UnixStream::connect(&app).await.unwrap();
    let (sent, received, n) = tokio::time::timeout(STEP * 4, echo_round_trip(stream, TOTAL))
        .await
        .expect("the echo through ssh -R /PATH finished");
    assert_eq!(n, TOTAL, "echoed byte count");
    assert_eq!(sent, received, "echoed bytes differ");

    // Cancelled through the control master: the socket file goes with it.
    crate::forwarding::cancel_remote_forward(&control_opt, &spec).await;
    wait_file(&app, false).await;
    let _ = master.kill().await;

    // And when the SSH connection ends.
    let spec = format!("/tmp/gone.sock:127.0.0.1:{target_port}");
    let mut client = background_forward(&lab, &["-R", &spec]);
    let gone = host_path.with_file_name("gone.sock");
    wait_file(&gone, true).await;
    let _ = client.kill().await;
    let _ = client.wait().await;
    wait_file(&gone, false).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unix_socket_forwards_are_refused_with_a_reason() {
    // A container made for Docker exec has no helper to act as the student in it.
    let catalogue = format!(
        "[environments.exec]\nimage = \"{TEST_IMAGE}\"\nspawn = \"exec\"\nuid = 1000\ngid = 1000\n"
    );
    let lab = Lab::start(LabOptions {
        catalogue,
        ..Default::default()
    })
    .await;
    let alice = Lab::alice();
    let host_path = in_container(&lab, "alice", &alice, "/tmp/alice.sock").await;
    // Anyone in alice's container may connect to this one.
    let alices = EchoSocket::start(&host_path, STUDENT, 0o666);
    // Root's own, closed to the student.
    let _roots = EchoSocket::start(&host_path.with_file_name("root.sock"), (0, 0), 0o600);

    let err = refused_local(&lab, "alice", &alice, "/tmp/root.sock").await;
    assert!(
        err.contains("/tmp/root.sock") && err.contains("Permission denied"),
        "{err}"
    );
    let err = refused_local(&lab, "alice", &alice, "/tmp/none.sock").await;
    assert!(err.contains("No such file or directory"), "{err}");
    let err = refused_local(&lab, "alice", &alice, "run/jupyter.sock").await;
    assert!(err.contains("is not absolute"), "{err}");
    // The stock client refuses a path longer than a socket takes itself ("Bad local
    // forwarding specification"); another client reaches the agent, which refuses it.
    let long = format!("/tmp/{}", "a".repeat(103));
    let (prohibited, err) = agent_forward(&lab, &long).await;
    assert!(
        prohibited && err.contains("108 bytes long") && err.contains("at most 107"),
        "{err}"
    );
    let (prohibited, err) = agent_listen(&lab, &long).await;
    assert!(prohibited && err.contains("108 bytes long"), "{err}");
    let (prohibited, err) = agent_listen(&lab, "tmp/r.sock").await;
    assert!(prohibited && err.contains("is not absolute"), "{err}");
    // Paths that lead out of the container's files, or to labssh's own socket.
    let err = refused_local(&lab, "alice", &alice, "/proc/1/root/tmp/alice.sock").await;
    assert!(err.contains("under /proc"), "{err}");
    let err = refused_local(&lab, "alice", &alice, "/tmp/../proc/1/root/x.sock").await;
    assert!(err.contains("'..'"), "{err}");
    let err = refused_local(&lab, "alice", &alice, "/.labssh/run/helper.sock").await;
    assert!(err.contains("labssh's own"), "{err}");

    // Bob's path names a file of his own container: alice's socket is not there.
    let bob = Lab::bob();
    let err = refused_local(&lab, "bob", &bob, "/tmp/alice.sock").await;
    assert!(err.contains("No such file or directory"), "{err}");
    assert_eq!(
        alices.connections.load(Ordering::SeqCst),
        0,
        "bob reached alice's socket"
    );

    // Forwarding turned off, both ways; and bad paths for -R.
    let err = refused_local(&lab, "alice+closed", &alice, "/tmp/alice.sock").await;
    assert!(err.contains("turned off in environment 'closed'"), "{err}");
    refused_remote(&lab, "alice+closed", "/tmp/closed.sock").await;
    refused_remote(&lab, "alice", "/proc/1/root/tmp/r.sock").await;
    // A path taken already, and a directory the student may not write to; the
    // agent's words for what the proxy only logs.
    refused_remote(&lab, "alice", "/tmp/alice.sock").await;
    refused_remote(&lab, "alice", "/etc/r.sock").await;
    let (prohibited, err) = agent_listen(&lab, "/tmp/alice.sock").await;
    assert!(
        !prohibited && err.contains("Address already in use"),
        "{err}"
    );
    let (prohibited, err) = agent_listen(&lab, "/etc/r.sock").await;
    assert!(!prohibited && err.contains("Permission denied"), "{err}");
    let root = host_path.parent().and_then(|tmp| tmp.parent()).unwrap();
    assert!(root.join("etc/r.sock").symlink_metadata().is_err());
    let err = refused_local(&lab, "alice+exec", &alice, "/tmp/alice.sock").await;
    assert!(err.contains("needs labssh-init in the container"), "{err}");
    refused_remote(&lab, "alice+exec", "/tmp/exec.sock").await;
    // Nothing above reached alice's socket; a good forward still does.
    assert_eq!(alices.connections.load(Ordering::SeqCst), 0);
    let port = free_port();
    let spec = format!("{port}:/tmp/alice.sock");
    let mut client = forward(&lab, "alice", &["-L", &spec], port).await;
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (sent, received, n) = echo_round_trip(stream, 1 << 16).await;
    assert_eq!((n, sent), (1 << 16, received));
    let _ = client.kill().await;
    lab.stop().await;
}
