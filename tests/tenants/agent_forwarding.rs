//! Alice's forwarded agent (`ssh -A`) stays hers: while it answers her session, bob's
//! session sees no socket of hers, and no path he can give `ssh -L` reaches it. Only
//! processes of the SSH connection itself use an agent socket, so even bob's own
//! socket, reached from another of his connections, does not answer; his session's
//! own ssh-add does (the control: his agent forwarding works).

use std::process::Stdio;
use std::time::Duration;

use labssh_testkit::process::free_port;
use labssh_testkit::ssh::{stderr, Auth};
use labssh_testkit::ssh_agent::TestAgent;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::lab::{connect_when_up, Lab, LabOptions};

const STEP: Duration = Duration::from_secs(30);
/// SSH_AGENTC_REQUEST_IDENTITIES, framed: length 1, type 11.
const REQUEST_IDENTITIES: [u8; 5] = [0, 0, 0, 1, 11];

/// `ssh -A login` with `agent` into the Debian image, held open: each line written to
/// it runs the image's `ssh-add -l` in the session, which prints how many keys of
/// the test agent it listed.
struct AgentSession {
    sock: String,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    _child: Child,
}

impl AgentSession {
    async fn start(lab: &Lab, login: &str, auth: &Auth, agent: &TestAgent) -> AgentSession {
        let script = "echo \"sock=[$SSH_AUTH_SOCK]\"; \
                      while read line; do ssh-add -l | grep -c labssh-agent-test; done";
        let mut cmd = lab.ssh.command_with(login, auth, &["-A"], &[script]);
        cmd.env("SSH_AUTH_SOCK", &agent.socket)
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = next(&mut lines).await;
        let sock = line
            .strip_prefix("sock=[")
            .and_then(|s| s.strip_suffix(']'))
            .filter(|s| s.starts_with("/tmp/labssh-agent."))
            .unwrap_or_else(|| panic!("{login} got no agent socket: {line:?}"))
            .to_owned();
        AgentSession {
            sock,
            stdin,
            lines,
            _child: child,
        }
    }

    /// Whether the session's own ssh-add lists the test agent's key.
    async fn lists_its_key(&mut self) -> bool {
        self.stdin.write_all(b"\n").await.unwrap();
        next(&mut self.lines).await == "1"
    }
}

async fn next(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(STEP, lines.next_line())
        .await
        .expect("the session answers")
        .unwrap()
        .unwrap_or_default()
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
    tokio::task::spawn_blocking(labssh_testkit::docker::ensure_debian_image)
        .await
        .unwrap()
        .expect("Debian image");
    let lab = Lab::start(LabOptions::default()).await;
    let (alices_agent, bobs_agent) = (TestAgent::start().unwrap(), TestAgent::start().unwrap());
    let mut alice = AgentSession::start(&lab, "alice+debian", &Lab::alice(), &alices_agent).await;
    let alices = alice.sock.clone();
    let alice_pid = crate::forwarding::init_pid(&lab, "alice", "debian");
    // Alice's socket is live all along: it answers her session.
    assert!(
        alice.lists_its_key().await,
        "alice's agent through {alices}"
    );

    let mut bob = AgentSession::start(&lab, "bob+debian", &Lab::bob(), &bobs_agent).await;
    let bobs = bob.sock.clone();
    assert!(bob.lists_its_key().await, "bob's agent through {bobs}");
    // Bob's container has no socket of alice's, by her path or in its /tmp.
    let script = format!("test -e '{alices}' && echo present; ls -a /tmp");
    let out = lab
        .ssh
        .run("bob+debian", &Lab::bob(), &[&script])
        .await
        .unwrap();
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
    // From another connection of his, even his own socket's path is refused.
    let other = format!("SSH_AUTH_SOCK={bobs} ssh-add -l | grep -c labssh-agent-test");
    let out = lab
        .ssh
        .run("bob+debian", &Lab::bob(), &[&other])
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "bob's other connection used his agent socket: {}",
        stderr(&out)
    );

    // Every path bob might give ssh -L, from another connection of his.
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
        .command_with("bob+debian", &Lab::bob(), &options, &[])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for (target, port) in targets.iter().zip(&ports) {
        let got = ask_identities(*port).await;
        assert!(got.is_empty(), "ssh -L {target} reached an agent: {got:?}");
    }
    // Both agents still answer their own sessions: the attempts neither reached nor
    // broke them.
    assert!(
        alice.lists_its_key().await,
        "alice's agent after bob's attempts"
    );
    assert!(bob.lists_its_key().await, "bob's agent after his attempts");
    lab.stop().await;
}
