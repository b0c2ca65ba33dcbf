//! Half-close on every path: an EOF in either direction travels as an EOF, never as a
//! close, and the other direction keeps flowing until its own EOF. Each forward kind
//! carries 100 exchanges whose answer comes only after the asking side shut its write
//! side down (`printf | nc`, HTTP/1.0); a session's stdin EOF reaches `cat` while its
//! output still comes back; SFTP answers what is pending after the client's EOF.

mod exchange;

use std::net::SocketAddr;
use std::time::Duration;

use crate::file_transfer::{key_config, sftp_batch};
use crate::forwarding::{background, forward, socks5_connect};
use crate::lab::{pattern, Lab, LabOptions};
use exchange::{message, serve, Tally};
use labssh_testkit::process::free_port;
use labssh_testkit::ssh::{stderr, stdout};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Exchanges per forward kind.
const EXCHANGES: u64 = 100;

/// Compiles half_close_probe.c into a static binary (once per test process).
fn probe_binary() -> Vec<u8> {
    static BUILT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            labssh_testkit::process::static_c_binary(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/e2e/half_close_probe.c"
            ))
        })
        .clone()
}

/// A lab with the probe in alice's home.
async fn lab_with_probe() -> Lab {
    let lab = Lab::start(LabOptions::default()).await;
    let out = lab
        .ssh
        .run_with_stdin(
            "alice",
            &Lab::alice(),
            &["cat > ~/probe && chmod 755 ~/probe"],
            &probe_binary(),
        )
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    lab
}

/// Serves exchanges in alice's container on `port` (for as long as the session the
/// returned child holds lives).
async fn probe_server(lab: &Lab, port: u16) -> tokio::process::Child {
    let server = background(lab, "alice", &format!("exec ~/probe serve {port}"));
    lab.wait_listening("alice", "default", port).await;
    server
}

/// Makes [`EXCHANGES`] exchanges, each on a connection `connect` opens.
async fn tally<F, Fut>(seed: u64, mut connect: F) -> Tally
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = TcpStream>,
{
    let mut tally = Tally::default();
    for i in 0..EXCHANGES {
        let msg = message(i, seed);
        let got = exchange::exchange(connect().await, &msg).await;
        tally.count(&msg, got);
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_forward_carries_an_eof_and_the_answer_after_it() {
    let lab = lab_with_probe().await;
    let _server = probe_server(&lab, 7801).await;
    let port = free_port();
    let spec = format!("{port}:localhost:7801");
    let mut client = forward(&lab, "alice", &["-L", &spec], port).await;
    let got = tally(1, || async {
        TcpStream::connect(("127.0.0.1", port)).await.unwrap()
    })
    .await;
    assert_eq!(got, Tally::all_ok(EXCHANGES), "ssh -L");
    let _ = client.kill().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamic_forward_carries_an_eof_and_the_answer_after_it() {
    let lab = lab_with_probe().await;
    let _server = probe_server(&lab, 7802).await;
    let port = free_port();
    let mut client = forward(&lab, "alice", &["-D", &port.to_string()], port).await;
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    let got = tally(2, || socks5_connect(proxy, "localhost", 7802)).await;
    assert_eq!(got, Tally::all_ok(EXCHANGES), "ssh -D");
    let _ = client.kill().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_forward_carries_an_eof_and_the_answer_after_it() {
    let lab = lab_with_probe().await;
    // The test side answers only after the container's side shut its write side.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    serve(listener);
    let spec = format!("7803:127.0.0.1:{}", target.port());
    let mut master = lab
        .ssh
        .command_with(
            "alice",
            &Lab::alice(),
            &["-N", "-o", "ExitOnForwardFailure=yes", "-R", &spec],
            &[],
        )
        .spawn()
        .unwrap();
    lab.wait_listening("alice", "default", 7803).await;
    // `nc` does what the probe does: busybox nc shuts its write side at stdin's EOF.
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo ping | nc 127.0.0.1 7803"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "5:\ngnip", "nc: {}", stderr(&out));
    let command = format!("~/probe exchange 7803 {EXCHANGES} 3");
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &[&command])
        .await
        .unwrap();
    let summary = stdout(&out);
    let got = Tally::parse(summary.trim())
        .unwrap_or_else(|| panic!("probe said {summary:?}, stderr {}", stderr(&out)));
    assert_eq!(got, Tally::all_ok(EXCHANGES), "ssh -R");
    let _ = master.kill().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_stdin_eof_reaches_the_command_and_its_output_still_comes_back() {
    let lab = Lab::start(LabOptions::default()).await;
    for size in [0usize, 1, (64 << 10) + 1] {
        let input = pattern(size, size as u64 + 5);
        let out = lab
            .ssh
            .run_with_stdin("alice", &Lab::alice(), &["cat; echo done"], &input)
            .await
            .unwrap();
        let mut want = input.clone();
        want.extend_from_slice(b"done\n");
        assert_eq!(out.status.code(), Some(0), "{size} bytes: {}", stderr(&out));
        assert_eq!(out.stdout.len(), want.len(), "{size} bytes: output length");
        assert!(out.stdout == want, "{size} bytes: output differs");
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sftp_answers_what_is_pending_at_the_clients_eof_and_ends_cleanly() {
    let lab = Lab::start(LabOptions::default()).await;
    let cfg = key_config(&lab);
    let work = tempfile::tempdir().unwrap();
    let data = pattern((1 << 20) + 3, 17);
    std::fs::write(work.path().join("up.bin"), &data).unwrap();
    // The batch ends with the download: its requests are still pending when sftp's
    // stdin (the batch) ends.
    sftp_batch(
        &lab,
        &cfg,
        "alice",
        work.path(),
        "put up.bin half-close.bin\nget half-close.bin back.bin\n",
    )
    .await;
    let back = std::fs::read(work.path().join("back.bin")).unwrap();
    assert!(back == data, "sftp get returned different bytes");

    // Raw: the version handshake and many requests at once, then EOF straight away.
    // Every request is answered, then the server ends and so does the session.
    const REQUESTS: u32 = 200;
    let mut input = sftp_packet(1, &3u32.to_be_bytes()); // SSH_FXP_INIT, version 3
    for id in 1..=REQUESTS {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&1u32.to_be_bytes());
        body.push(b'.');
        // SSH_FXP_REALPATH and SSH_FXP_STAT by turns.
        input.extend(sftp_packet(if id % 2 == 0 { 16 } else { 17 }, &body));
    }
    let mut cmd = lab
        .ssh
        .command_with("alice", &Lab::alice(), &["-s"], &["sftp"]);
    cmd.stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the sftp session ends after its EOF")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answers = sftp_packets(&out.stdout);
    assert_eq!(
        answers.first().map(|a| a.0),
        Some(2),
        "SSH_FXP_VERSION first"
    );
    let mut ids: Vec<(u8, u32)> = answers[1..]
        .iter()
        .map(|(kind, body)| (*kind, u32::from_be_bytes(body[..4].try_into().unwrap())))
        .collect();
    ids.sort_by_key(|a| a.1);
    let want: Vec<(u8, u32)> = (1..=REQUESTS)
        .map(|id| (if id % 2 == 0 { 104 } else { 105 }, id)) // NAME, ATTRS
        .collect();
    assert_eq!(ids, want, "an answer for every request sent before the EOF");
    lab.stop().await;
}

/// One SFTP packet: length, type, body.
fn sftp_packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32 + 1).to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(body);
    out
}

/// The (type, body) of each SFTP packet in `bytes`; panics on a cut-off one.
fn sftp_packets(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 5, "a cut-off SFTP packet");
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert!(len >= 1 && bytes.len() >= 4 + len, "a cut-off SFTP packet");
        out.push((bytes[4], bytes[5..4 + len].to_vec()));
        bytes = &bytes[4 + len..];
    }
    out
}
