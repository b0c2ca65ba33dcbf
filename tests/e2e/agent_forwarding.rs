//! Agent forwarding with the stock OpenSSH client and a real `ssh-agent`: `ssh -A`
//! gives the session `SSH_AUTH_SOCK`, a socket in the container owned by the student
//! with mode 0600, through which `ssh-add -l` reaches the client's agent (each
//! connection an `auth-agent@openssh.com` channel); the socket goes with the SSH
//! connection; without `-A`, or with `forward_agent = false`, there is none.
//!
//! Only processes of the connection may use the socket: the Debian image's ssh-add in
//! the session lists the key; the same student's other connection, and root on the
//! host through the container's root, are refused.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use labssh_proto::pb;
use labssh_testkit::ssh::stderr;
use labssh_testkit::ssh_agent::TestAgent;
use pb::agent_client::AgentClient;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::lab::{Lab, LabOptions};

const STEP: Duration = Duration::from_secs(30);
/// Prints the session's agent socket (the line `sock=[PATH]`) and nothing else.
const PRINT_SOCK: &str = "echo \"sock=[$SSH_AUTH_SOCK]\"";

/// The host path of `path` inside `user`'s `env` container.
fn host_path(lab: &Lab, user: &str, env: &str, path: &str) -> PathBuf {
    let name = lab.container_name(user, env);
    let pid = labssh_testkit::docker::docker(&["inspect", "-f", "{{.State.Pid}}", &name]).unwrap();
    PathBuf::from(format!("/proc/{}/root{path}", pid.trim()))
}

/// Waits until nothing is at `path` any more.
async fn wait_gone(path: &Path) {
    let deadline = Instant::now() + STEP;
    while path.symlink_metadata().is_ok() {
        assert!(
            Instant::now() < deadline,
            "{} outlived the connection",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The session's next line of output.
async fn next<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut tokio::io::Lines<R>) -> String {
    tokio::time::timeout(STEP, lines.next_line())
        .await
        .expect("the session answers")
        .unwrap()
        .unwrap_or_default()
}

/// `ssh [options] login 'PRINT_SOCK; ls -a /tmp'` with the test agent in the client's
/// environment: the socket the session saw ("" for none) and the names in its /tmp.
async fn sock_seen(
    lab: &Lab,
    login: &str,
    options: &[&str],
    agent: &TestAgent,
) -> (String, String) {
    let script = format!("{PRINT_SOCK}; ls -a /tmp");
    let mut cmd = lab
        .ssh
        .command_with(login, &Lab::alice(), options, &[&script]);
    cmd.env("SSH_AUTH_SOCK", &agent.socket);
    let out = labssh_testkit::ssh::output(cmd).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let sock = first
        .strip_prefix("sock=[")
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("no sock line in {text:?}"));
    (sock.to_owned(), rest.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ssh_a_reaches_the_clients_agent_as_the_student_until_logout() {
    tokio::task::spawn_blocking(labssh_testkit::docker::ensure_debian_image)
        .await
        .unwrap()
        .expect("Debian image");
    let lab = Lab::start(LabOptions::default()).await;
    let agent = TestAgent::start().unwrap();
    // The image's own ssh-add, in the session and in a subshell of it (a descendant
    // of a descendant); the session then holds the connection open until its stdin
    // ends.
    let script = format!(
        "{PRINT_SOCK}; stat -c '%u %a %F' \"$SSH_AUTH_SOCK\"; \
         ssh-add -l -E sha256; echo \"listed=$?\"; \
         (ssh-add -l -E sha256 | grep -c labssh-agent-test); read line; echo done"
    );
    let mut cmd = lab
        .ssh
        .command_with("alice+debian", &Lab::alice(), &["-A"], &[&script]);
    cmd.env("SSH_AUTH_SOCK", &agent.socket)
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = next(&mut lines).await;
    let path = first
        .strip_prefix("sock=[")
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("no sock line: {first:?}"))
        .to_owned();
    assert!(
        path.starts_with("/tmp/labssh-agent.") && path.ends_with(".sock"),
        "SSH_AUTH_SOCK={path:?}"
    );
    // The student's, closed to everyone else in the container.
    assert_eq!(next(&mut lines).await, "1000 600 socket");
    // A real agent round trip: the container's socket → an auth-agent channel → the
    // client's ssh-agent, which lists the key it holds.
    let listed = next(&mut lines).await;
    assert!(
        listed.contains(&agent.fingerprint),
        "ssh-add -l: {listed:?}"
    );
    assert_eq!(next(&mut lines).await, "listed=0");
    // And again from a subshell: each connection is a channel of its own.
    assert_eq!(next(&mut lines).await, "1");

    // A process of another connection of the same student is refused, and so is
    // root on the host going through the container's root.
    let other = format!("SSH_AUTH_SOCK={path} ssh-add -l -E sha256; echo \"other=$?\"");
    let out = lab
        .ssh
        .run("alice+debian", &Lab::alice(), &[&other])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains(&agent.fingerprint) && !text.contains("other=0"),
        "another connection used the agent socket: {text}"
    );
    let host = host_path(&lab, "alice", "debian", &path);
    let listed = TestAgent::list(&host).unwrap();
    assert!(
        !listed.status.success()
            && !String::from_utf8_lossy(&listed.stdout).contains(&agent.fingerprint),
        "the host's root used the agent socket: {listed:?}"
    );

    // Logout: the connection ends, and the socket with it.
    stdin.write_all(b"\n").await.unwrap();
    drop(stdin);
    assert_eq!(next(&mut lines).await, "done");
    let status = tokio::time::timeout(STEP, child.wait())
        .await
        .expect("the client exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    wait_gone(&host).await;

    // Without -A (the agent still in the client's environment): no socket.
    let (sock, tmp) = sock_seen(&lab, "alice", &[], &agent).await;
    assert_eq!(sock, "", "SSH_AUTH_SOCK without -A");
    assert!(!tmp.contains("labssh-agent"), "left in /tmp: {tmp}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forward_agent_false_refuses_it_with_a_reason() {
    let catalogue = crate::lab::environment_toml("noagent", "forward_agent = false");
    let lab = Lab::start(LabOptions {
        catalogue,
        ..Default::default()
    })
    .await;
    let agent = TestAgent::start().unwrap();
    let (sock, tmp) = sock_seen(&lab, "alice+noagent", &["-A"], &agent).await;
    assert_eq!(sock, "", "SSH_AUTH_SOCK with forward_agent = false");
    assert!(!tmp.contains("labssh-agent"), "made anyway: {tmp}");
    // The agent's reason, as the proxy hears it (OpenSSH asks without a reply).
    let (prohibited, message) = listen_agent_socket(&lab, "noagent").await;
    assert!(
        prohibited && message.contains("agent forwarding (ssh -A) is turned off"),
        "{message}"
    );
    // The same login in an environment that allows it gets its socket: the refusal
    // is the setting's, not the test's.
    let (sock, _) = sock_seen(&lab, "alice", &["-A"], &agent).await;
    assert!(sock.starts_with("/tmp/labssh-agent."), "{sock:?}");
    lab.stop().await;
}

/// The agent's Listen call for an agent socket of alice's in `env`, as the proxy
/// makes it: the (prohibited, message) of its refusal.
async fn listen_agent_socket(lab: &Lab, env: &str) -> (bool, String) {
    listen_refused(
        lab,
        pb::ListenRequest {
            user: "alice".into(),
            environment: env.into(),
            socket_path: "/tmp/labssh-agent.test.sock".into(),
            agent: true,
            ..Default::default()
        },
    )
    .await
}

/// The agent's answer to `request` (a Listen call as the proxy makes it), which
/// must be a refusal: its (prohibited, message).
pub(crate) async fn listen_refused(lab: &Lab, request: pb::ListenRequest) -> (bool, String) {
    let cluster = lab.cluster.as_ref().unwrap();
    let mut agent = AgentClient::connect(format!("http://{}", cluster.agent_addrs[0]))
        .await
        .unwrap();
    let asked = format!("{request:?}");
    let mut events = agent.listen(request).await.unwrap().into_inner();
    match tokio::time::timeout(STEP, events.next()).await {
        Ok(Some(Ok(pb::ListenEvent {
            msg: Some(pb::listen_event::Msg::Error(e)),
        }))) => (e.prohibited, e.message),
        other => panic!("{asked}: {other:?}"),
    }
}
