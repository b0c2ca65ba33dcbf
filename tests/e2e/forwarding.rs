//! Port forwarding with the stock OpenSSH client: `ssh -L` to a server inside the
//! container, `ssh -D` (SOCKS), `ssh -R` back to the test, and the policy that keeps
//! students away from each other, the agent, the controller, Redis and the host.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::lab::{connect_when_up, pattern, round_trip, Lab, LabOptions};
use labssh_testkit::process::free_port;
use labssh_testkit::ssh::{stderr, stdout};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Child;

const STEP: Duration = Duration::from_secs(30);

/// Runs `command` in `login`'s container over a session kept open in the background
/// (busybox `nc -ll` servers live as long as it does).
pub(crate) fn background(lab: &Lab, login: &str, command: &str) -> Child {
    lab.ssh
        .command(login, &Lab::alice(), &[command])
        .spawn()
        .expect("spawn ssh")
}

/// Starts `ssh -N` with `options` (forwards) and waits until `local_port` accepts.
pub(crate) async fn forward(lab: &Lab, login: &str, options: &[&str], local_port: u16) -> Child {
    let mut all = vec!["-N", "-o", "ExitOnForwardFailure=yes"];
    all.extend_from_slice(options);
    let mut child = lab
        .ssh
        .command_with(login, &Lab::alice(), &all, &[])
        .spawn()
        .expect("spawn ssh");
    let deadline = Instant::now() + STEP;
    while TcpStream::connect(("127.0.0.1", local_port)).await.is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ssh {options:?} exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "forward on {local_port} never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// `ssh -O cancel -R SPEC` through the control master at `control_opt`
/// (`ControlPath=…`): cancel-tcpip-forward or cancel-streamlocal-forward.
pub(crate) async fn cancel_remote_forward(control_opt: &str, spec: &str) {
    let cancel = tokio::process::Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            control_opt,
            "-O",
            "cancel",
            "-R",
            spec,
            "lab",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
}

/// Sends `total` bytes through an echo service on `stream` while reading the echo
/// back; returns (sha256 sent, sha256 received, bytes received).
pub(crate) async fn echo_round_trip<S>(stream: S, total: usize) -> ([u8; 32], [u8; 32], usize)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let chunk = pattern(1 << 20, 0x5eed);
        let mut hash = Sha256::new();
        let mut sent = 0usize;
        let mut round = 0u8;
        while sent < total {
            let n = (total - sent).min(chunk.len());
            // Vary every MiB so a dropped or repeated chunk changes the hash.
            let mut block = chunk[..n].to_vec();
            block[0] = round;
            round = round.wrapping_add(1);
            wr.write_all(&block).await.unwrap();
            hash.update(&block);
            sent += n;
        }
        wr.shutdown().await.unwrap();
        <[u8; 32]>::from(hash.finalize())
    });
    let mut hash = Sha256::new();
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = rd.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        received += n;
    }
    let sent = writer.await.unwrap();
    (sent, hash.finalize().into(), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_forward_to_an_echo_server_in_the_container_is_byte_exact() {
    let lab = Lab::start(LabOptions::default()).await;
    let _server = background(&lab, "alice", "exec nc -ll -p 7777 -e cat");
    // A web server bound to the container's loopback only: reachable as "localhost".
    let _web = background(
        &lab,
        "alice",
        "mkdir -p /tmp/www && echo hello-localhost > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:7780 -h /tmp/www",
    );
    lab.wait_listening("alice", "default", 7777).await;
    lab.wait_listening("alice", "default", 7780).await;
    let web_port = free_port();
    let web_spec = format!("{web_port}:localhost:7780");
    let mut web_client = forward(&lab, "alice", &["-L", &web_spec], web_port).await;
    let mut s = TcpStream::connect(("127.0.0.1", web_port)).await.unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut page = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut page))
        .await
        .unwrap()
        .unwrap();
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.starts_with("HTTP/1.") && page.contains("hello-localhost"),
        "{page}"
    );
    let _ = web_client.kill().await;
    let port = free_port();
    let spec = format!("{port}:localhost:7777");
    let mut client = forward(&lab, "alice", &["-L", &spec], port).await;

    const TOTAL: usize = 100 << 20;
    let started = Instant::now();
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (sent, received, n) =
        tokio::time::timeout(Duration::from_secs(300), echo_round_trip(stream, TOTAL))
            .await
            .expect("100 MB echo finished");
    assert_eq!(n, TOTAL, "echoed byte count");
    assert_eq!(sent, received, "echoed bytes differ");
    tracing::info!(
        "100 MB echoed through ssh -L in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Several connections at once share the one proxy–agent connection.
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let msg = pattern(100_000, i + 7);
            s.write_all(&msg).await.unwrap();
            s.shutdown().await.unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, msg, "connection {i}");
        }));
    }
    for t in tasks {
        tokio::time::timeout(STEP, t).await.unwrap().unwrap();
    }
    let _ = client.kill().await;
    lab.stop().await;
}

/// A SOCKS5 CONNECT by domain name; returns the reply code (0 = succeeded), or
/// `None` when the client closed the connection instead of replying.
async fn socks5_try(proxy: SocketAddr, host: &str, port: u16) -> Option<(u8, TcpStream)> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap(); // v5, one method: no authentication
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.unwrap();
    assert_eq!(choice, [5, 0], "SOCKS method");
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.ok()?;
    // Skip the bound address in the reply.
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await.ok()?;
            len[0] as usize + 2
        }
        other => panic!("bad SOCKS address type {other}"),
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip).await.ok()?;
    Some((head[1], s))
}

/// A SOCKS5 CONNECT that must succeed.
pub(crate) async fn socks5_connect(proxy: SocketAddr, host: &str, port: u16) -> TcpStream {
    match socks5_try(proxy, host, port).await {
        Some((0, s)) => s,
        Some((code, _)) => panic!("SOCKS CONNECT {host}:{port}: reply {code}"),
        None => panic!("SOCKS CONNECT {host}:{port}: closed without a reply"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamic_forward_works_as_a_socks_proxy() {
    let lab = Lab::start(LabOptions::default()).await;
    let _server = background(&lab, "alice", "exec nc -ll -p 7778 -e cat");
    lab.wait_listening("alice", "default", 7778).await;
    let port = free_port();
    let spec = port.to_string();
    let mut client = forward(&lab, "alice", &["-D", &spec], port).await;
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();

    for host in ["localhost", "127.0.0.1"] {
        let s = socks5_connect(proxy, host, 7778).await;
        assert_eq!(round_trip(s, b"through socks\n").await, b"through socks\n");
    }
    // A destination that fails is a closed SOCKS connection (OpenSSH may reply
    // before the channel opens), not a hang, and the proxy goes on.
    for (host, port) in [("example.invalid", 80), ("localhost", 1)] {
        let outcome = tokio::time::timeout(STEP, async {
            match socks5_try(proxy, host, port).await {
                None => true,
                Some((code, _)) if code != 0 => true,
                Some((_, mut s)) => {
                    let mut buf = [0u8; 8];
                    matches!(s.read(&mut buf).await, Ok(0) | Err(_))
                }
            }
        })
        .await
        .expect("a failed SOCKS CONNECT ends promptly");
        assert!(outcome, "SOCKS CONNECT {host}:{port} did not fail");
    }
    let s = socks5_connect(proxy, "localhost", 7778).await;
    assert_eq!(
        round_trip(s, b"again\n").await,
        b"again\n",
        "still works afterwards"
    );
    let _ = client.kill().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_forward_reaches_a_server_on_the_test_side_and_can_be_cancelled() {
    let lab = Lab::start(LabOptions::default()).await;
    // The test side: greets, then echoes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"hello from the test side\n").await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });

    let control = lab.ssh.dir().join("control.sock");
    let control_opt = format!("ControlPath={}", control.display());
    let spec = format!("9000:127.0.0.1:{}", target.port());
    let mut master = lab
        .ssh
        .command_with(
            "alice",
            &Lab::alice(),
            &[
                "-N",
                "-M",
                "-o",
                &control_opt,
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                &spec,
            ],
            &[],
        )
        .spawn()
        .unwrap();
    lab.wait_listening("alice", "default", 9000).await;

    let out = lab
        .ssh
        .run(
            "alice",
            &Lab::alice(),
            &["(echo ping; sleep 1) | nc 127.0.0.1 9000"],
        )
        .await
        .unwrap();
    assert_eq!(
        stdout(&out),
        "hello from the test side\nping\n",
        "stderr: {}",
        stderr(&out)
    );
    // Listening is on the container's loopback only (sshd's GatewayPorts=no).
    let tcp = labssh_testkit::docker::docker(&[
        "exec",
        &lab.container_name("alice", "default"),
        "cat",
        "/proc/net/tcp",
    ])
    .unwrap();
    assert!(
        tcp.contains(&format!("0100007F:{:04X} 00000000:0000 0A", 9000)),
        "{tcp}"
    );

    // cancel-tcpip-forward through the control master.
    cancel_remote_forward(&control_opt, &spec).await;
    let deadline = Instant::now() + STEP;
    loop {
        if !lab.listening("alice", "default", 9000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "listener still open after cancel"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = master.kill().await;
    lab.stop().await;
}

/// The docker0 address: the host, as containers see it.
fn bridge_gateway() -> String {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// Runs `command` in a session that also forwards a local port to `target`, makes
/// one connection through the forward (which must be refused) and returns the
/// session's output: the refusal appears on stderr, the session carries on.
async fn refused_in_session(
    lab: &Lab,
    login: &str,
    target: &str,
    command: &str,
) -> std::process::Output {
    let local = free_port();
    let spec = format!("{local}:{target}");
    let child = lab
        .ssh
        .command_with(
            login,
            &Lab::alice(),
            &["-o", "LogLevel=INFO", "-L", &spec],
            &[command],
        )
        .spawn()
        .unwrap();
    drop(connect_when_up(local).await);
    refused_through(local).await;
    tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("the session ends")
        .unwrap()
}

/// A client connection through `ssh -L` must fail (the channel is refused: the
/// client closes the local connection at once).
async fn refused_through(local_port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", local_port)).await.unwrap();
    let _ = s.write_all(b"x").await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(STEP, s.read(&mut buf))
        .await
        .expect("refused forward closes promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "a refused forward returned data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarding_never_reaches_other_students_the_agent_the_controller_redis_or_the_host() {
    let lab = Lab::start(LabOptions {
        redis: true,
        ..Default::default()
    })
    .await;
    // Bob's container, with a server in it.
    let _bob_server = lab
        .ssh
        .command("bob", &Lab::bob(), &["exec nc -ll -p 7779 -e cat"])
        .spawn()
        .unwrap();
    lab.wait_listening("bob", "default", 7779).await;
    let bob_ip = labssh_testkit::docker::docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &lab.container_name("bob", "default"),
    ])
    .unwrap()
    .trim()
    .to_string();
    let gateway = bridge_gateway();
    let cluster = lab.cluster.as_ref().unwrap();
    let redis_port: u16 = lab
        .redis
        .as_ref()
        .unwrap()
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    // Something that really answers on the host's bridge address: without the
    // policy, a container could reach it.
    let host_service = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = host_service.accept().await {
            let _ = s.write_all(b"host secret\n").await;
        }
    });
    let targets = [
        ("bob's container", bob_ip.clone(), 7779u16),
        ("the agent", gateway.clone(), cluster.agent_addrs[0].port()),
        (
            "the controller",
            gateway.clone(),
            cluster.controller_addr.port(),
        ),
        ("Redis", gateway.clone(), redis_port),
        ("a service on the host", gateway.clone(), host_port),
        ("the proxy", gateway.clone(), cluster.ssh_addr.port()),
    ];
    // Both with the default policy and with one that allows everything.
    for login in ["alice", "alice+open"] {
        for (what, ip, port) in &targets {
            // The session runs a command and stays up while the forward is refused.
            let out = refused_in_session(
                &lab,
                login,
                &format!("{ip}:{port}"),
                "sleep 3; echo session-alive",
            )
            .await;
            let (out_text, err_text) = (stdout(&out), stderr(&out));
            assert_eq!(out_text, "session-alive\n", "{login} → {what}: {err_text}");
            assert!(out.status.success(), "{login} → {what}: {err_text}");
            assert!(
                err_text.contains("administratively prohibited")
                    && err_text.contains("labssh: forwarding to"),
                "{login} → {what} ({ip}:{port}): no clear refusal in {err_text:?}"
            );
        }
    }
    // The default policy names what is allowed.
    let out = refused_in_session(&lab, "alice", "198.51.100.7:443", "sleep 2; echo ok").await;
    let err_text = stderr(&out);
    assert!(
        err_text
            .contains("is not allowed in environment 'default'; allowed: only your own container"),
        "{err_text}"
    );
    // Bob's server is still fine for bob.
    let local = free_port();
    let spec = format!("{local}:localhost:7779");
    let mut bob = lab
        .ssh
        .command_with("bob", &Lab::bob(), &["-N", "-L", &spec], &[])
        .spawn()
        .unwrap();
    let s = connect_when_up(local).await;
    assert_eq!(round_trip(s, b"bob\n").await, b"bob\n");
    let _ = bob.kill().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarding_turned_off_is_refused_with_a_reason() {
    let lab = Lab::start(LabOptions::default()).await;
    let out = refused_in_session(&lab, "alice+closed", "localhost:22", "sleep 2; echo up").await;
    assert_eq!(stdout(&out), "up\n");
    assert!(
        stderr(&out).contains("turned off in environment 'closed'"),
        "{}",
        stderr(&out)
    );
    // -R is refused too: with ExitOnForwardFailure the client says so and exits.
    let out = labssh_testkit::ssh::output(lab.ssh.command_with(
        "alice+closed",
        &Lab::alice(),
        &["-o", "ExitOnForwardFailure=yes", "-R", "9100:127.0.0.1:1"],
        &["echo should-not-run"],
    ))
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("remote port forwarding failed"),
        "{}",
        stderr(&out)
    );
    lab.stop().await;
}

/// `ssh -W host:port` (stdio forwarding, what ProxyJump uses): alice's stdin and
/// stdout become one connection from her container, byte-exact; the forwarding policy
/// holds for it as for `ssh -L`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stdio_forwarding_reaches_the_container_under_the_same_policy() {
    let lab = Lab::start(LabOptions::default()).await;
    let _server = background(&lab, "alice", "exec nc -ll -p 7783 -e cat");
    lab.wait_listening("alice", "default", 7783).await;
    let sent = pattern(300_000, 0x57d10);
    let mut cmd = lab
        .ssh
        .command_with("alice", &Lab::alice(), &["-W", "localhost:7783"], &[]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writing = {
        let sent = sent.clone();
        tokio::spawn(async move {
            stdin.write_all(&sent).await.unwrap();
            // EOF on stdin: an EOF on the channel, cat ends, the connection closes.
            drop(stdin);
        })
    };
    let out = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("ssh -W finished")
        .unwrap();
    writing.await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), sent.len(), "echoed byte count");
    assert!(out.stdout == sent, "echoed bytes differ");

    // Link-local (the cloud's metadata service) is refused, as for ssh -L, and the
    // client says why (at LogLevel INFO; the first -o given wins).
    let out = labssh_testkit::ssh::output(lab.ssh.command_with(
        "alice",
        &Lab::alice(),
        &["-o", "LogLevel=INFO", "-W", "169.254.169.254:80"],
        &[],
    ))
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("stdio forwarding failed") && text.contains("link-local"),
        "{text}"
    );
    lab.stop().await;
}
