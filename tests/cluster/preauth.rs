//! Limits before authentication (issue 11): connections that never log in cannot
//! lock the class out. Idle TCP floods, per-address and overall caps on
//! unauthenticated connections, failed attempts per connection, and keepalives that
//! reap dead clients — each driven with real sockets and the stock `ssh` client.
//!
//! Source addresses are picked by binding to 127.0.0.N: the whole of 127/8 is
//! loopback, so each is a distinct client address to the proxy's limits.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use labssh_telemetry::metrics::render;
use labssh_testkit::ssh::{stderr, stdout, Auth};
use labssh_testkit::telemetry::prometheus::Exposition;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

mod auth_tries;
mod flood;
mod keepalive;
mod limits;

use crate::lab::Lab;

/// How long a test waits for something the proxy must do within its own bound:
/// generous, for a loaded machine.
const BOUND: Duration = Duration::from_secs(60);
/// Pause between the tries of [`logs_in_eventually`].
const RETRY: Duration = Duration::from_millis(200);
/// Connections opened at once while flooding, so the listen backlog keeps up.
const FLOOD_BATCH: usize = 250;

/// `n` TCP connections from `from` (a loopback address) to `addr` that never send
/// a byte.
async fn idle_from(addr: SocketAddr, from: &str, n: usize) -> Vec<TcpStream> {
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        let batch = FLOOD_BATCH.min(n - streams.len());
        let connects = (0..batch).map(|_| async move {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(local).unwrap();
            tokio::time::timeout(BOUND, socket.connect(addr))
                .await
                .expect("connect within the bound")
                .expect("connect")
        });
        streams.extend(futures::future::join_all(connects).await);
    }
    streams
}

/// What the proxy did with a connection that sent nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// It sent its SSH banner: the connection was admitted.
    Banner,
    /// It closed the connection without a byte: refused.
    Refused,
}

/// Waits (within [`BOUND`]) for the proxy's first bytes on `stream` or its close.
async fn first_bytes(stream: &mut TcpStream) -> Seen {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Seen::Refused,
        Ok(Ok(n)) => {
            assert!(
                buf[..n].starts_with(b"SSH-2.0-labssh"),
                "not a banner: {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
            Seen::Banner
        }
        Err(_) => panic!("neither a banner nor a close within {BOUND:?}"),
    }
}

/// Reads every stream to its end; panics if the proxy leaves any open past
/// `bound`.
async fn all_closed(streams: Vec<TcpStream>, bound: Duration) {
    let reads = streams.into_iter().map(|mut s| async move {
        let mut rest = Vec::new();
        if tokio::time::timeout(bound, s.read_to_end(&mut rest))
            .await
            .is_err()
        {
            panic!("a connection still open {bound:?} on");
        }
    });
    futures::future::join_all(reads).await;
}

/// `n` idle connections from `from`, each with what the proxy did with it. A
/// batch is opened only once the proxy has judged the one before, so the listen
/// backlog never overflows: past it the kernel answers with SYN cookies, and a
/// client that never sends a byte could be left with a connection the server
/// never knew of.
async fn judged_from(addr: SocketAddr, from: &str, n: usize) -> Vec<(TcpStream, Seen)> {
    let mut judged = Vec::with_capacity(n);
    while judged.len() < n {
        let batch = idle_from(addr, from, FLOOD_BATCH.min(n - judged.len())).await;
        let seen = batch.into_iter().map(|mut s| async move {
            let seen = first_bytes(&mut s).await;
            (s, seen)
        });
        judged.extend(futures::future::join_all(seen).await);
    }
    judged
}

/// How many of `n` fresh idle connections from `from` the proxy admits, and how
/// many it refuses; the admitted ones are returned still open.
async fn admitted_of(addr: SocketAddr, from: &str, n: usize) -> (Vec<TcpStream>, usize) {
    let (admitted, refused): (Vec<_>, Vec<_>) = judged_from(addr, from, n)
        .await
        .into_iter()
        .partition(|(_, seen)| *seen == Seen::Banner);
    (
        admitted.into_iter().map(|(s, _)| s).collect(),
        refused.len(),
    )
}

/// Like [`admitted_of`], each connection from the balancer `from` opening with
/// a PROXY v2 header that names `client`.
async fn admitted_behind(
    addr: SocketAddr,
    from: &str,
    client: SocketAddr,
    n: usize,
) -> (Vec<TcpStream>, usize) {
    let mut open = Vec::new();
    let mut refused = 0;
    for mut s in idle_from(addr, from, n).await {
        s.write_all(&labssh_proxy::proxy_protocol::encode(client))
            .await
            .unwrap();
        match first_bytes(&mut s).await {
            Seen::Banner => open.push(s),
            Seen::Refused => refused += 1,
        }
    }
    (open, refused)
}

/// The process-wide sum of a metric's samples with these labels (every lab of
/// this binary adds to it: compare before and after).
fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    Exposition::parse(&render()).unwrap().sum(name, labels)
}

/// `labssh_proxy_refused_total{reason}`.
fn refused(reason: &str) -> f64 {
    metric("labssh_proxy_refused_total", &[("reason", reason)])
}

/// `ssh -b from user@lab 'echo in'` until it gets in: a connection the client
/// closed stops counting once the proxy sees it close, a moment later. Panics if
/// no login gets in within [`BOUND`].
async fn logs_in_eventually(lab: &Lab, user: &str, auth: &Auth, from: &str) {
    let deadline = Instant::now() + BOUND;
    loop {
        let out = lab
            .ssh
            .command_with(user, auth, &["-b", from], &["echo in"])
            .output()
            .await
            .unwrap();
        if stdout(&out) == "in\n" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user} from {from} never got in: {}",
            stderr(&out)
        );
        tokio::time::sleep(RETRY).await;
    }
}
