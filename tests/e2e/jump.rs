//! A student's own sshd in their container (the Debian image's, run as the student
//! on a high port), reached two ways a stock OpenSSH client offers: `ssh -J` through
//! labssh (ProxyJump: the jump is `ssh -W localhost:PORT`, a direct-tcpip channel into
//! the container), and from a `ssh -A` session, the forwarded agent's key
//! authenticating the inner `ssh`.

use std::process::Stdio;
use std::time::Duration;

use labssh_testkit::ssh::{stderr, stdout};
use labssh_testkit::ssh_agent::TestAgent;

use crate::file_transfer::key_config;
use crate::lab::{Lab, LabOptions};

const STEP: Duration = Duration::from_secs(60);
/// Where the student's sshd listens in the container.
const SSHD_PORT: u16 = 2222;
/// Client options for the student's sshd, whose host key is new each run.
const INNER: [&str; 6] = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_jump_and_the_forwarded_agent_reach_the_students_own_sshd() {
    tokio::task::spawn_blocking(labssh_testkit::docker::ensure_debian_image)
        .await
        .unwrap()
        .expect("Debian image");
    let lab = Lab::start(LabOptions::default()).await;
    let cfg = key_config(&lab);
    let key = lab.ssh.dir().join("alice-key");
    let laptop_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let agent = TestAgent::start().unwrap();
    let listed = std::process::Command::new("ssh-add")
        .arg("-L")
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .unwrap();
    let agent_key = String::from_utf8(listed.stdout).unwrap();

    // The student's sshd: their keys authorised, a host key of their own, no root.
    let script = format!(
        "umask 077; mkdir -p ~/.ssh; printf '%s\\n%s\\n' '{}' '{}' > ~/.ssh/authorized_keys; \
         rm -f ~/.sshd_key ~/.sshd_key.pub; ssh-keygen -q -t ed25519 -N '' -f ~/.sshd_key; \
         exec /usr/sbin/sshd -D -e -p {SSHD_PORT} -h ~/.sshd_key -o PidFile=none \
         -o UsePAM=no -o StrictModes=no -o ListenAddress=127.0.0.1",
        laptop_key.trim(),
        agent_key.trim()
    );
    let mut server = lab.ssh.command("alice+debian", &Lab::alice(), &[&script]);
    server.stdin(Stdio::null()).kill_on_drop(true);
    let _server = server.spawn().unwrap();
    lab.wait_listening("alice", "debian", SSHD_PORT).await;

    // ProxyJump through labssh, authenticated at the sshd with the laptop's key.
    let port = SSHD_PORT.to_string();
    let cfg_arg = cfg.display().to_string();
    let key_arg = key.display().to_string();
    let mut args = vec![
        "-F",
        &cfg_arg,
        "-J",
        "alice+debian@lab",
        "-p",
        &port,
        "-i",
        &key_arg,
        "-o",
        "IdentitiesOnly=yes",
    ];
    args.extend(INNER);
    args.extend(["alice@localhost", "echo jumped; id -un"]);
    let out = tokio::time::timeout(
        STEP,
        labssh_testkit::ssh::output(lab.ssh.tool("ssh", &args)),
    )
    .await
    .expect("ssh -J finished")
    .unwrap();
    assert_eq!(stdout(&out), "jumped\nalice\n", "{}", stderr(&out));

    // From a session with the laptop's agent forwarded: the inner ssh has no key of
    // its own in the container, only the agent's.
    let inner = format!(
        "ssh {} -p {SSHD_PORT} localhost 'echo via-agent'",
        INNER.join(" ")
    );
    let mut cmd = lab
        .ssh
        .command_with("alice+debian", &Lab::alice(), &["-A"], &[&inner]);
    cmd.env("SSH_AUTH_SOCK", &agent.socket);
    let out = tokio::time::timeout(STEP, labssh_testkit::ssh::output(cmd))
        .await
        .expect("the inner ssh finished")
        .unwrap();
    assert_eq!(stdout(&out), "via-agent\n", "{}", stderr(&out));
    // Without -A the same inner ssh has nothing to offer: the agent did the work.
    let out =
        labssh_testkit::ssh::output(lab.ssh.command("alice+debian", &Lab::alice(), &[&inner]))
            .await
            .unwrap();
    assert_ne!(stdout(&out), "via-agent\n", "{}", stderr(&out));
    lab.stop().await;
}
