//! Alice's forwarded agent (`ssh -A`) stays hers: while it answers her, bob's session
//! sees no socket of hers, and no path he can give `ssh -L` reaches it. A control:
//! bob's own forwarded agent, reached the same way from another of his connections,
//! answers him, so the forwards carry agent traffic.

use std::process::Stdio;
use std::time::Duration;

use labssh_testkit::process::free_port;
use labssh_testkit::ssh::{stderr, Auth};
use labssh_testkit::ssh_agent::TestAgent;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

use crate::lab::{connect_when_up, Lab, LabOptions};

const STEP: Duration = Duration::from_secs(30);
/// SSH_AGENTC_REQUEST_IDENTITIES, framed: length 1, type 11.
const REQUEST_IDENTITIES: [u8; 5] = [0, 0, 0, 1, 11];
/// SSH_AGENT_IDENTITIES_ANSWER.
const IDENTITIES_ANSWER: u8 = 12;

/// `ssh -A login` with `agent`, held open until the child is dropped; the session's
/// `SSH_AUTH_SOCK`.
async fn with_agent(lab: &Lab, login: &str, auth: &Auth, agent: &TestAgent) -> (Child, String) {
    let mut cmd = lab.ssh.command_with(
        login,
        auth,
        &["-A"],
        &["echo \"sock=[$SSH_AUTH_SOCK]\"; read line"],
    );
    cmd.env("SSH_AUTH_SOCK", &agent.socket)
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(STEP, lines.next_line())
        .await
        .expect("the session answers")
        .unwrap()
        .unwrap_or_default();
    let sock = line
        .strip_prefix("sock=[")
        .and_then(|s| s.strip_suffix(']'))
        .filter(|s| s.starts_with("/tmp/labssh-agent."))
        .unwrap_or_else(|| panic!("{login} got no agent socket: {line:?}"))
        .to_owned();
    (child, sock)
}

/// An agent's answer to "list your keys" through the forward at `port`: its first
/// 5 bytes (length and type), or what came before the forward closed.
async fn ask_identities(port: u16) -> Vec<u8> {
    let mut s = connect_when_up(port).await;
    if s.write_all(&REQUEST_IDENTITIES).await.is_err() {
        return Vec::new();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 5];
    let read = async {
        while got.len() < 5 {
            match s.read(&mut buf[got.len()..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(STEP, read).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bob_cannot_reach_alices_agent_socket() {
    let lab = Lab::start(LabOptions::default()).await;
    let (alices_agent, bobs_agent) = (TestAgent::start().unwrap(), TestAgent::start().unwrap());
    let (_alice, alices) = with_agent(&lab, "alice", &Lab::alice(), &alices_agent).await;
    let alice_pid = crate::forwarding::init_pid(&lab, "alice", "default");
    // Alice's socket is live all along: it answers her.
    let host = format!("/proc/{alice_pid}/root{alices}");
    let listed = TestAgent::list(host.as_ref()).unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&alices_agent.fingerprint),
        "alice's agent through {alices}: {listed:?}"
    );

    let (_bob, bobs) = with_agent(&lab, "bob", &Lab::bob(), &bobs_agent).await;
    // Bob's container has no socket of alice's, by her path or in its /tmp.
    let script = format!("test -e '{alices}' && echo present; ls -a /tmp");
    let out = lab.ssh.run("bob", &Lab::bob(), &[&script]).await.unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!seen.contains("present"), "bob sees {alices}: {seen}");
    let own_name = bobs.trim_start_matches("/tmp/");
    let alices_name = alices.trim_start_matches("/tmp/");
    assert!(
        seen.contains(own_name),
        "bob's own socket is listed: {seen}"
    );
    assert!(
        !seen.contains(alices_name),
        "bob's /tmp lists alice's socket: {seen}"
    );

    // Every path bob might give ssh -L, from another connection of his; the first
    // is his own socket, the control.
    let targets = [
        bobs.clone(),
        alices.clone(),
        format!("/proc/{alice_pid}/root{alices}"),
        format!("/proc/1/root{alices}"),
        format!("/tmp/../proc/{alice_pid}/root{alices}"),
    ];
    let ports: Vec<u16> = targets.iter().map(|_| free_port()).collect();
    let mut options = vec!["-N".to_owned()];
    for (target, port) in targets.iter().zip(&ports) {
        options.push("-L".into());
        options.push(format!("{port}:{target}"));
    }
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let _forwards = lab
        .ssh
        .command_with("bob", &Lab::bob(), &options, &[])
        .spawn()
        .unwrap();
    let control = ask_identities(ports[0]).await;
    assert_eq!(
        control.get(4),
        Some(&IDENTITIES_ANSWER),
        "bob's own agent answers through his forward: {control:?}"
    );
    for (target, port) in targets.iter().zip(&ports).skip(1) {
        let got = ask_identities(*port).await;
        assert!(got.is_empty(), "ssh -L {target} reached an agent: {got:?}");
    }
    // Alice's agent still answers her: the attempts neither reached nor broke it.
    let listed = TestAgent::list(host.as_ref()).unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&alices_agent.fingerprint));
    lab.stop().await;
}
