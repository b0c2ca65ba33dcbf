//! The proxy's authentication and limits. Nobody can lock another student out
//! (finding 3): wrong passwords are refused per user *and* source address, only slow
//! the user down elsewhere, and attempts while refused never prolong the refusal; key
//! logins never feel any of it. And the proxy's share of finding 4 (bounded `SetEnv`,
//! a bound on every wait for the client, a login grace time, session channels bounded
//! while open and refused in words) and of finding 6 (`users.toml` stays 0600).
//!
//! Source addresses are picked with `ssh -b 127.0.0.N`: the whole of 127/8 is
//! loopback, so each is a distinct client address to the proxy's limits.

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labssh_proxy::rate_limit::RateLimitConfig;
use labssh_telemetry::metrics::render;
use labssh_testkit::ssh::{stderr, stdout, Auth};
use labssh_testkit::telemetry::prometheus::Exposition;
use russh::client;
use tokio::io::AsyncReadExt;

use crate::lab::{Lab, LabOptions};

/// More wrong passwords than the default limit of 10 per user and address.
const WRONG_TRIES: usize = 12;
/// How long a test waits for something the proxy must do within its own bound
/// (30 s for a client's channel confirmation): generous, for a loaded machine.
const BOUND: Duration = Duration::from_secs(75);

/// `ssh -b from user@lab 'echo in'`.
async fn login(lab: &Lab, user: &str, auth: &Auth, from: &str) -> Output {
    labssh_testkit::ssh::output(
        lab.ssh
            .command_with(user, auth, &["-b", from], &["echo in"]),
    )
    .await
    .expect("ssh")
}

fn logged_in(out: &Output) -> bool {
    stdout(out) == "in\n"
}

/// `n` wrong passwords for `user` from `from`, all at once; each must be refused.
async fn wrong_passwords(lab: &Lab, user: &str, from: &str, n: usize) {
    let wrong = Auth::Password("not-the-password".into());
    let tries = (0..n).map(|_| login(lab, user, &wrong, from));
    for out in futures::future::join_all(tries).await {
        assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    }
}

fn limits(per_address: u32, per_user: u32, window_secs: u64, exempt: &[&str]) -> RateLimitConfig {
    RateLimitConfig {
        max_failures_per_address: per_address,
        max_failures_per_user: per_user,
        window_secs,
        exempt_addresses: exempt.iter().map(|s| s.to_string()).collect(),
    }
}

/// (a) Wrong passwords for bob from one address block that address for bob, never
/// bob himself from where he is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_passwords_from_elsewhere_do_not_lock_bob_out() {
    let lab = Lab::start(LabOptions {
        redis: true,
        rate_limit: Some(RateLimitConfig::default()),
        ..Default::default()
    })
    .await;
    wrong_passwords(&lab, "bob", "127.0.0.2", WRONG_TRIES).await;

    let out = login(&lab, "bob", &Lab::bob(), "127.0.0.3").await;
    assert!(
        logged_in(&out),
        "bob's own password from his own address after {WRONG_TRIES} wrong ones from \
         another: {}",
        stderr(&out)
    );
    // The pair (bob, attacker's address) is what is refused, right password or not.
    let out = login(&lab, "bob", &Lab::bob(), "127.0.0.2").await;
    assert_eq!(out.status.code(), Some(255), "{}", stdout(&out));
    lab.stop().await;
}

/// (b) A NAT a whole class shares is exempt: the attacker may sit behind it too, so
/// failures from it only slow bob's attempts there, and his right password works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_passwords_behind_an_exempt_nat_do_not_lock_bob_out_there() {
    let lab = Lab::start(LabOptions {
        redis: true,
        rate_limit: Some(limits(100, 10, 300, &["127.0.0.4/32"])),
        ..Default::default()
    })
    .await;
    wrong_passwords(&lab, "bob", "127.0.0.4", WRONG_TRIES).await;
    let out = login(&lab, "bob", &Lab::bob(), "127.0.0.4").await;
    assert!(
        logged_in(&out),
        "bob's password from the exempt NAT after {WRONG_TRIES} wrong ones from it: {}",
        stderr(&out)
    );
    lab.stop().await;
}

/// (c) Attempts while blocked are not counted and do not re-arm the window: the
/// block ends `window_secs` after the first failure however often the attacker
/// knocks. With Redis and with the per-replica fallback.
async fn knocking_while_blocked_does_not_extend_the_block(redis: bool) {
    const WINDOW: Duration = Duration::from_secs(4);
    // The attacker stops knocking this long before the window ends, and bob tries
    // this long after it: before the fix the last knock re-armed the window to
    // `WINDOW` after itself, well past bob's attempt.
    const KNOCK_UNTIL: Duration = Duration::from_millis(3_500);
    const BOB_AT: Duration = Duration::from_millis(4_500);
    let lab = Lab::start(LabOptions {
        redis,
        rate_limit: Some(limits(3, 3, WINDOW.as_secs(), &[])),
        ..Default::default()
    })
    .await;
    let first_failure = Instant::now();
    wrong_passwords(&lab, "bob", "127.0.0.2", 3).await;
    // Blocked now, even for the right password, from that address.
    let out = login(&lab, "bob", &Lab::bob(), "127.0.0.2").await;
    assert_eq!(
        out.status.code(),
        Some(255),
        "blocked after 3 failures: {}",
        stdout(&out)
    );
    let mut knocks = 0;
    while first_failure.elapsed() < KNOCK_UNTIL {
        wrong_passwords(&lab, "bob", "127.0.0.2", 1).await;
        knocks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(knocks > 0, "the attacker never knocked while blocked");
    tokio::time::sleep(BOB_AT.saturating_sub(first_failure.elapsed())).await;
    let out = login(&lab, "bob", &Lab::bob(), "127.0.0.2").await;
    assert!(
        logged_in(&out),
        "bob's password {:?} after the first failure ({knocks} knocks while blocked, \
         window {WINDOW:?}): {}",
        first_failure.elapsed(),
        stderr(&out)
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn knocking_while_blocked_does_not_extend_the_block_in_redis() {
    knocking_while_blocked_does_not_extend_the_block(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn knocking_while_blocked_does_not_extend_the_block_without_redis() {
    knocking_while_blocked_does_not_extend_the_block(false).await;
}

/// (d) Key logins never consult the limiter: bob's key works from an address where
/// his password is blocked, while his password is under attack from everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_login_works_while_the_password_is_under_attack() {
    let lab = Lab::start(LabOptions {
        redis: true,
        rate_limit: Some(limits(5, 3, 300, &[])),
        ..Default::default()
    })
    .await;
    let (key, public) = lab.ssh.keygen("bob_key").unwrap();
    labssh_proxy::users::add_user(&lab.users_file, "bob", None, Some(&public)).unwrap();
    let attack = async {
        for from in ["127.0.0.2", "127.0.0.3"] {
            wrong_passwords(&lab, "bob", from, WRONG_TRIES).await;
        }
    };
    let keys = async {
        let mut ins = 0;
        for from in ["127.0.0.2", "127.0.0.3", "127.0.0.2"] {
            let out = login(&lab, "bob", &Auth::Key(key.clone()), from).await;
            assert!(
                logged_in(&out),
                "bob's key from {from} during the attack: {}",
                stderr(&out)
            );
            ins += 1;
        }
        ins
    };
    let ((), ins) = tokio::join!(attack, keys);
    assert_eq!(ins, 3);
    // After it too, from the address whose password attempts are blocked.
    let out = login(&lab, "bob", &Lab::bob(), "127.0.0.2").await;
    assert_eq!(out.status.code(), Some(255), "{}", stdout(&out));
    let out = login(&lab, "bob", &Auth::Key(key), "127.0.0.2").await;
    assert!(logged_in(&out), "bob's key after: {}", stderr(&out));
    lab.stop().await;
}

/// `SetEnv` is bounded: 64 variables per channel, names up to 256 bytes and values
/// up to 16 KiB; the rest are refused and the session is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn set_env_is_bounded() {
    let lab = Lab::start(LabOptions::default()).await;
    let big = format!("LC_LABSSH_BIG={}", "v".repeat(16 * 1024 + 1));
    let long_name = format!("LC_LABSSH_{}=x", "N".repeat(256));
    // The oversized ones first: they are refused for their size, not the count.
    let mut entries = vec![big, long_name];
    entries.extend((0..200).map(|i| format!("LC_LABSSH_{i}=x")));
    let set_env = format!("SetEnv={}", entries.join(" "));
    let out = labssh_testkit::ssh::output(lab.ssh.command_with(
        "bob",
        &Lab::bob(),
        &["-o", &set_env],
        &["env | grep ^LC_LABSSH_ | cut -d= -f1 | sort"],
    ))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    let mut want: Vec<String> = (0..64).map(|i| format!("LC_LABSSH_{i}")).collect();
    want.sort();
    assert_eq!(
        got.len(),
        64,
        "variables applied: {got:?}\nstderr: {}",
        stderr(&out)
    );
    assert_eq!(got, want);
    lab.stop().await;
}

/// A `forwarded-tcpip` channel the client was offered and never answered.
type Unanswered = (russh::Channel<client::Msg>, client::ChannelOpenHandle);

/// A russh client that asks for `tcpip-forward` and then never answers the
/// `forwarded-tcpip` channels the proxy opens to it.
#[derive(Default, Clone)]
struct Silent {
    /// The unanswered opens, kept so they are never rejected by being dropped.
    pending: Arc<Mutex<Vec<Unanswered>>>,
}

impl client::Handler for Silent {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        _connected_address: &str,
        _connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.pending.lock().unwrap().push((channel, reply));
        Ok(())
    }
}

fn errors(kind: &str) -> f64 {
    Exposition::parse(&render()).unwrap().sum(
        "labssh_errors_total",
        &[("component", "proxy"), ("kind", kind)],
    )
}

/// The proxy waits a bounded time for the client to confirm a `forwarded-tcpip`
/// channel: then the connection accepted in the container is closed and counted, and
/// the client's connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unconfirmed_remote_forward_is_closed_within_the_bound() {
    const CONNECTIONS: usize = 8;
    let lab = Lab::start(LabOptions::default()).await;
    let addr = lab.cluster.as_ref().unwrap().ssh_addr;
    let silent = Silent::default();
    let mut handle = client::connect(Arc::new(client::Config::default()), addr, silent.clone())
        .await
        .unwrap();
    let auth = handle
        .authenticate_password("bob", crate::lab::BOB_PW)
        .await
        .unwrap();
    assert!(auth.success());
    let port = handle.tcpip_forward("127.0.0.1", 0).await.unwrap();
    assert_ne!(port, 0);
    let timeouts_before = errors("forward_open_timeout");

    // Connections to the listener from inside bob's own container (his own `ssh -L`).
    let started = Instant::now();
    let mut inside = Vec::new();
    for i in 0..CONNECTIONS {
        let channel = handle
            .channel_open_direct_tcpip("127.0.0.1", port, "127.0.0.1", 40_000 + i as u32)
            .await
            .unwrap();
        inside.push(channel.into_stream());
    }
    for (i, mut stream) in inside.into_iter().enumerate() {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(BOUND.saturating_sub(started.elapsed()), async {
            stream.read(&mut buf).await
        })
        .await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "connection {i} inside the container not closed {:?} after the forward \
             was announced: {read:?}",
            started.elapsed()
        );
    }
    assert!(
        silent.pending.lock().unwrap().len() >= CONNECTIONS,
        "the proxy announced every connection"
    );
    // Each waiting task ended by counting its timeout: none is left behind.
    let deadline = Instant::now() + Duration::from_secs(10);
    while errors("forward_open_timeout") - timeouts_before < CONNECTIONS as f64 {
        assert!(
            Instant::now() < deadline,
            "timeouts counted: {}",
            errors("forward_open_timeout") - timeouts_before
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The client's connection is still served.
    let mut session = handle.channel_open_session().await.unwrap();
    session.exec(true, "echo still-in").await.unwrap();
    let mut out = Vec::new();
    while let Some(msg) = session.wait().await {
        match msg {
            russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
            russh::ChannelMsg::ExitStatus { .. } => break,
            _ => {}
        }
    }
    assert_eq!(String::from_utf8_lossy(&out), "still-in\n");
    lab.stop().await;
}

/// A client that connects and never authenticates is disconnected after
/// `login_grace_secs`, so idle connections cannot hold the replica's slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_authenticates_is_disconnected() {
    let lab = Lab::start(LabOptions {
        proxy: Some(|c| c.login_grace_secs = 5),
        ..Default::default()
    })
    .await;
    let addr = lab.cluster.as_ref().unwrap().ssh_addr;
    let started = Instant::now();
    // One that sends nothing at all, and one that stops after the key exchange.
    let mut mute = tokio::net::TcpStream::connect(addr).await.unwrap();
    let handle = client::connect(Arc::new(client::Config::default()), addr, Silent::default())
        .await
        .unwrap();
    let mut banner = Vec::new();
    let read = tokio::time::timeout(BOUND, mute.read_to_end(&mut banner)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "a silent connection still open {:?} later",
        started.elapsed()
    );
    assert!(String::from_utf8_lossy(&banner).starts_with("SSH-2.0-labssh"));
    tokio::time::timeout(BOUND.saturating_sub(started.elapsed()), handle)
        .await
        .expect("an unauthenticated connection still open")
        .ok();
    // Logging in still works as ever.
    let out = login(&lab, "bob", &Lab::bob(), "127.0.0.1").await;
    assert!(logged_in(&out), "{}", stderr(&out));
    lab.stop().await;
}

/// `labssh user add` keeps the users file 0600 (it holds password hashes), and
/// makes a new one 0600.
#[test]
fn user_add_keeps_the_users_file_private() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let add = |name: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
            .args(["user", "add", name, "--password-stdin", "--users"])
            .arg(&users)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("labssh");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"pw-of-someone\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mode = || std::fs::metadata(&users).unwrap().permissions().mode() & 0o7777;
    add("alice");
    assert_eq!(mode(), 0o600, "a new users file: {:o}", mode());
    add("bob");
    assert_eq!(mode(), 0o600, "after a second user add: {:o}", mode());
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        text.contains("[users.alice]") && text.contains("[users.bob]"),
        "{text}"
    );
}

/// A russh client that records why the proxy refused its channel opens.
#[derive(Default, Clone)]
struct Refusals {
    said: Arc<Mutex<Vec<String>>>,
}

impl client::Handler for Refusals {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }

    async fn channel_open_failure(
        &mut self,
        _channel: russh::ChannelId,
        _reason: russh::ChannelOpenFailure,
        description: &str,
        _language: &str,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.said.lock().unwrap().push(description.to_owned());
        Ok(())
    }
}

/// One connection holds at most 64 session channels open at once, and hears the
/// limit in words when it asks for more; closing one makes room, so a ControlMaster
/// that opens sessions all day long never runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_channels_are_bounded_while_open_not_over_a_connections_life() {
    const LIMIT: usize = 64;
    let lab = Lab::start(LabOptions::default()).await;
    let addr = lab.cluster.as_ref().unwrap().ssh_addr;
    let client = Refusals::default();
    let mut handle = client::connect(Arc::new(client::Config::default()), addr, client.clone())
        .await
        .unwrap();
    let auth = handle
        .authenticate_password("bob", crate::lab::BOB_PW)
        .await
        .unwrap();
    assert!(auth.success());
    // Channels that have asked for nothing yet hold no process: only the proxy's
    // count is at stake.
    let mut open = Vec::new();
    for i in 0..LIMIT {
        let channel = handle.channel_open_session().await;
        open.push(channel.unwrap_or_else(|e| panic!("channel {i}: {e}")));
    }
    let refused = handle.channel_open_session().await;
    assert!(refused.is_err(), "channel {} opened", LIMIT + 1);
    // russh answers the open before it hands the handler the description: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let said = loop {
        let said = client.said.lock().unwrap().clone();
        if !said.is_empty() || Instant::now() > deadline {
            break said;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        said,
        vec![format!(
            "labssh: too many sessions on one SSH connection ({LIMIT}); close some and try again"
        )]
    );
    // Closing some makes room again, time after time.
    for round in 0..3 {
        let channel = open.pop().unwrap();
        channel.close().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let reopened = loop {
            match handle.channel_open_session().await {
                Ok(channel) => break channel,
                // The proxy counts the close when the client's close reaches it.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("round {round}: no room after a close: {e}"),
            }
        };
        open.push(reopened);
    }
    // And the reopened channel works.
    let channel = open.pop().unwrap();
    channel.exec(true, "echo room").await.unwrap();
    let mut out = Vec::new();
    let mut channel = channel;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(30), channel.wait())
        .await
        .expect("the command ends")
    {
        match msg {
            russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
            russh::ChannelMsg::ExitStatus { .. } => break,
            _ => {}
        }
    }
    assert_eq!(out, b"room\n");
    drop(open);
    lab.stop().await;
}
