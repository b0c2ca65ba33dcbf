//! A client that vanishes in the middle of a forwarded transfer leaves nothing
//! behind: no proxy or agent task, no socket in this process (proxy and agent run in
//! it), no connection in the container, no forward counted as open.
//!
//! Its own test binary, so the process-wide metrics and descriptor counts are this
//! test's alone.

mod lab;

use std::time::{Duration, Instant};

use lab::{connect_when_up, echo_connections, leaks, round_trip, Lab, LabOptions};
use labssh_testkit::process::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(30);

/// What could leak, counted.
#[derive(Debug, Clone, PartialEq)]
struct Counts {
    /// This process's descriptors, tasks and active channels.
    process: leaks::Counts,
    /// Established TCP connections inside the container to the echo port.
    container_conns: usize,
}

fn container_conns(lab: &Lab, port: u16) -> usize {
    let name = lab.container_name("alice", "default");
    let tcp =
        labssh_testkit::docker::docker(&["exec", &name, "cat", "/proc/net/tcp", "/proc/net/tcp6"])
            .unwrap_or_default();
    let local = format!(":{port:04X}");
    tcp.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "01"
        })
        .count()
}

fn counts(lab: &Lab, port: u16) -> Counts {
    Counts {
        process: leaks::Counts::now(),
        container_conns: container_conns(lab, port),
    }
}

/// Counts once they stop changing (earlier connections finish closing).
async fn settled(lab: &Lab, port: u16) -> Counts {
    leaks::settled(STEP, || counts(lab, port)).await
}

/// Waits until nothing exceeds `baseline`.
async fn back_to(lab: &Lab, port: u16, baseline: &Counts, what: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        let now = counts(lab, port);
        let clean = now.process.within(&baseline.process) && now.container_conns == 0;
        if clean {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: leaked: now {now:?}, before {baseline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pushes data through `port` until `stop_after` bytes, then returns the stream with
/// the transfer still going (the echo keeps coming back).
async fn mid_transfer(mut s: TcpStream, stop_after: usize) -> TcpStream {
    let chunk = vec![0x5au8; 256 * 1024];
    let mut sent = 0;
    let mut buf = vec![0u8; 256 * 1024];
    while sent < stop_after {
        s.write_all(&chunk).await.unwrap();
        sent += chunk.len();
        // Read some echo back so both directions are busy.
        let _ = tokio::time::timeout(Duration::from_millis(5), s.read(&mut buf)).await;
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_gone_mid_transfer_leaves_no_tasks_or_sockets() {
    let lab = Lab::start(LabOptions::default()).await;
    const ECHO: u16 = 7790;
    let _server = lab
        .ssh
        .command(
            "alice",
            &Lab::alice(),
            &[&format!("exec nc -ll -p {ECHO} -e cat")],
        )
        .spawn()
        .unwrap();
    // Wait for the server, and warm the proxy–agent connection with one forward.
    let local = free_port();
    let spec = format!("{local}:localhost:{ECHO}");
    let start_client = || {
        lab.ssh
            .command_with("alice", &Lab::alice(), &["-N", "-L", &spec], &[])
            .spawn()
            .unwrap()
    };
    let mut client = start_client();
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", local)).await {
            let _ = s.write_all(b"warm\n").await;
            let _ = s.shutdown().await;
            let mut back = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut back)).await;
            if back == b"warm\n" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "echo through ssh -L never worked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = client.kill().await;
    let _ = client.wait().await;
    drop(client); // its pipes
    let baseline = settled(&lab, ECHO).await;
    assert_eq!(baseline.container_conns, 0, "{baseline:?}");

    // 1. The ssh client is killed mid-transfer (the student closes the laptop).
    let mut client = start_client();
    drop(connect_when_up(local).await);
    // Opened one by one (see `echo_connections`), then all sending at once.
    let streams = echo_connections(local, 3).await;
    let streams: Vec<TcpStream> =
        futures::future::join_all(streams.into_iter().map(|s| mid_transfer(s, 8 << 20))).await;
    let during = counts(&lab, ECHO);
    assert!(
        during.container_conns >= 3,
        "transfers not running: {during:?}"
    );
    assert!(
        during.process.proxy_active >= baseline.process.proxy_active + 3.0,
        "{during:?}"
    );
    client.start_kill().unwrap();
    let _ = client.wait().await;
    drop(client);
    drop(streams);
    back_to(&lab, ECHO, &baseline, "ssh client killed").await;

    // 2. The local application drops its connection mid-transfer; the ssh client
    // stays, and its other forward keeps working.
    let mut client = start_client();
    drop(connect_when_up(local).await);
    let s = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    let s = mid_transfer(s, 8 << 20).await;
    drop(s);
    let ok = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
    assert_eq!(round_trip(ok, b"still here\n").await, b"still here\n");
    let _ = client.kill().await;
    let _ = client.wait().await;
    drop(client);
    back_to(&lab, ECHO, &baseline, "connection dropped").await;
    lab.stop().await;
}
