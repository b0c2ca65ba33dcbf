//! The proxy's audit log (`[audit] path`), one JSON line per event, checked field by
//! field against what the stock ssh client did: a login, a failed one, a session's
//! start and end with its exit status and bytes, a forwarded connection's open and
//! close, SFTP's changes to files with their paths; and no password of the test,
//! right or wrong, nor any file's content, appears anywhere in it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use labssh_testkit::ssh::{stderr, Auth};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::lab::{Lab, LabOptions, ALICE_PW};

const STEP: Duration = Duration::from_secs(30);
/// A password nobody has, tried for bob.
const WRONG_PW: &str = "not-bobs-password-4711";
/// The echo server in alice's container.
const ECHO: u16 = 7797;

/// The audit log beside the lab's users file.
fn audit_path(users_file: &std::path::Path) -> std::path::PathBuf {
    users_file.with_file_name("audit.log")
}

/// For [`LabOptions::proxy`]: the lab's proxy writes its audit log beside the users
/// file, where [`wait_for`] reads it.
pub(crate) fn audit_beside_users(c: &mut labssh_proxy::Config) {
    c.audit.path = audit_path(&c.users_file).display().to_string();
}

/// The controller's audit log, in a directory of its own for one test.
pub(crate) struct ControllerAudit {
    dir: tempfile::TempDir,
}

impl ControllerAudit {
    pub(crate) fn new() -> ControllerAudit {
        ControllerAudit {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("controller-audit.log")
    }

    /// The `[audit]` table for [`LabOptions::catalogue`].
    pub(crate) fn catalogue(&self) -> String {
        format!("[audit]\npath = \"{}\"\n", self.path().display())
    }

    /// Waits until at least `count` lines of `event` are written; the whole log
    /// and those lines, in order.
    pub(crate) async fn until(&self, event: &str, count: usize) -> (String, Vec<Value>) {
        let deadline = Instant::now() + STEP;
        loop {
            let text = std::fs::read_to_string(self.path()).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|e| e["event"] == event)
                .collect();
            if lines.len() >= count || Instant::now() > deadline {
                return (text, lines);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The events logged so far.
fn events(lab: &Lab) -> Vec<Value> {
    std::fs::read_to_string(audit_path(&lab.users_file))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits for an event named `event` matching `which`; returns it.
pub(crate) async fn wait_for(lab: &Lab, event: &str, which: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(found) = events(lab)
            .into_iter()
            .find(|e| e["event"] == event && which(e))
        {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {event} event in {:#?}",
            events(lab)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_sessions_and_forwards_are_audited_without_secrets() {
    let lab = Lab::start(LabOptions {
        proxy: Some(audit_beside_users),
        ..Default::default()
    })
    .await;

    // A login and a session with an exit status and output.
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo hi; exit 3"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let login = wait_for(&lab, "login", |e| e["user"] == "alice").await;
    assert_eq!(login["method"], "password");
    assert_eq!(login["authenticator"], "users_file");
    assert!(login["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(login["ts"].as_str().unwrap().ends_with('Z'));
    assert!(login["proxy"].as_str().unwrap().contains(':'));
    let conn = login["conn"].clone();
    let start = wait_for(&lab, "session_start", |e| e["conn"] == conn).await;
    assert_eq!(start["kind"], "exec");
    assert_eq!(start["environment"], "default");
    assert_eq!(start["agent"], "agent0");
    assert_eq!(
        start["container"],
        lab.container_name("alice", "default").as_str()
    );
    let end = wait_for(&lab, "session_end", |e| e["conn"] == conn).await;
    assert_eq!(end["ending"], "exited");
    assert_eq!(end["exit_status"], 3);
    assert_eq!(end["bytes_to_client"], 3);
    assert_eq!(end["channel"], start["channel"]);

    // A failed login: the name tried and the method, nothing offered.
    let out = lab
        .ssh
        .run("bob", &Auth::Password(WRONG_PW.into()), &["true"])
        .await
        .unwrap();
    assert!(!out.status.success());
    let failed = wait_for(&lab, "login_failed", |e| e["user"] == "bob").await;
    assert_eq!(failed["method"], "password");
    assert!(failed["reason"].is_string());

    // A forwarded connection (ssh -W) to an echo server in the container.
    let mut server = lab
        .ssh
        .command(
            "alice",
            &Lab::alice(),
            &[&format!("exec nc -ll -p {ECHO} -e cat")],
        )
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    lab.wait_listening("alice", "default", ECHO).await;
    let mut cmd = lab.ssh.command_with(
        "alice",
        &Lab::alice(),
        &["-W", &format!("localhost:{ECHO}")],
        &[],
    );
    cmd.stdin(Stdio::piped());
    let mut client = cmd.spawn().unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"ping\n").await.unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let mut back = [0u8; 5];
    tokio::time::timeout(STEP, stdout.read_exact(&mut back))
        .await
        .expect("echoed")
        .unwrap();
    assert_eq!(&back, b"ping\n");
    drop(stdin);
    let _ = tokio::time::timeout(STEP, client.wait()).await;
    let destination = format!("localhost:{ECHO}");
    let open = wait_for(&lab, "forward_open", |e| {
        e["destination"] == destination.as_str()
    })
    .await;
    assert_eq!(open["user"], "alice");
    assert_eq!(open["kind"], "direct-tcpip");
    let close = wait_for(&lab, "forward_close", |e| {
        e["destination"] == destination.as_str()
    })
    .await;
    assert_eq!(close["conn"], open["conn"]);
    let _ = server.kill().await;

    // SFTP's changes to files, each with its path; never the file's bytes.
    let cfg = crate::file_transfer::key_config(&lab);
    let local = tempfile::tempdir().unwrap();
    let content = "audited-file-content-0815";
    std::fs::write(local.path().join("up.txt"), content).unwrap();
    crate::file_transfer::sftp_batch(
        &lab,
        &cfg,
        "alice",
        local.path(),
        "put up.txt /home/alice/up.txt\nrename /home/alice/up.txt /home/alice/moved.txt\n\
         mkdir /home/alice/d\nrmdir /home/alice/d\nrm /home/alice/moved.txt\nls /home/alice\n",
    )
    .await;
    let changes: Vec<(String, String, String)> = {
        let deadline = Instant::now() + STEP;
        loop {
            let found: Vec<(String, String, String)> = events(&lab)
                .into_iter()
                .filter(|e| e["event"] == "sftp")
                .map(|e| {
                    (
                        e["op"].as_str().unwrap().to_owned(),
                        e["path"].as_str().unwrap().to_owned(),
                        e["to"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            if found.len() >= 5 || Instant::now() > deadline {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let want = [
        ("write", "/home/alice/up.txt", ""),
        ("rename", "/home/alice/up.txt", "/home/alice/moved.txt"),
        ("mkdir", "/home/alice/d", ""),
        ("rmdir", "/home/alice/d", ""),
        ("remove", "/home/alice/moved.txt", ""),
    ];
    let got: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(got, want);

    // No secret anywhere, and no file content.
    let text = std::fs::read_to_string(audit_path(&lab.users_file)).unwrap();
    for secret in [ALICE_PW, WRONG_PW, content] {
        assert!(
            !text.contains(secret),
            "{secret:?} in the audit log:\n{text}"
        );
    }
    lab.stop().await;
}
