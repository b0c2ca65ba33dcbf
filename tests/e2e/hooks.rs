//! Lifecycle hooks seen through the stock `ssh` client: every kind fires once with its
//! variables (a shell, a command and SFTP are each a login), a webhook reaches a local
//! HTTP server with the JSON, and a failing required login hook refuses shells,
//! commands and SFTP alike with its line on the client's stderr.

use std::time::{Duration, Instant};

use labssh_testkit::ssh::{stderr, stdout};
use labssh_testkit::webhook::WebhookServer;

use crate::lab::{spawn_path, Lab, LabOptions};

/// A hook's `run` appending "EVENT USER ENVIRONMENT UID" to /tmp/hooks-EVENT.
const RECORD: &str = r#"run = ["/bin/sh", "-c", "echo \"$LABSSH_EVENT $LABSSH_USER $LABSSH_ENVIRONMENT $(id -u)\" >> /tmp/hooks-$LABSSH_EVENT"]"#;

/// Polls [`Lab::hook_records`] until `done` holds; panics after 30 s.
async fn wait_recorded(lab: &Lab, user: &str, env: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = lab.hook_records(user, env);
        if done(&seen) {
            return seen;
        }
        assert!(Instant::now() < deadline, "hooks never got there: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

#[tokio::test]
async fn every_kind_of_hook_fires_once_for_ssh_logins() {
    let mut calls = WebhookServer::start("/grades").await;
    let spawn = spawn_path();
    let catalogue = format!(
        r#"
[environments.hooked]
image = "{image}"
spawn = "{spawn}"
uid = 1000
gid = 1000
[[environments.hooked.hooks]]
on = "create"
as = "root"
{RECORD}
[[environments.hooked.hooks]]
on = "start"
{RECORD}
[[environments.hooked.hooks]]
on = "login"
{RECORD}
[[environments.hooked.hooks]]
on = "logout"
{RECORD}
[[environments.hooked.hooks]]
after = "1s"
{RECORD}
[[environments.hooked.hooks]]
every = "1s"
{RECORD}
[[environments.hooked.hooks]]
on = "login"
webhook = "{url}"
"#,
        image = labssh_testkit::docker::TEST_IMAGE,
        url = calls.url,
    );
    let lab = Lab::start(LabOptions {
        catalogue,
        ..Default::default()
    })
    .await;
    let out = lab
        .ssh
        .run("alice+hooked", &Lab::alice(), &["echo ran"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "ran\n", "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("hooks"),
        "hook output reached the client: {}",
        stderr(&out)
    );
    let seen = wait_recorded(&lab, "alice", "hooked", |s| {
        count(s, "logout alice hooked 1000") == 1
            && count(s, "after alice hooked 1000") == 1
            && count(s, "every alice hooked 1000") >= 2
    })
    .await;
    for once in [
        "create alice hooked 0",
        "start alice hooked 1000",
        "login alice hooked 1000",
    ] {
        assert_eq!(count(&seen, once), 1, "{once:?} in {seen:?}");
    }
    let call = calls
        .next(Duration::from_secs(30))
        .await
        .expect("the login webhook");
    assert!(call.head.starts_with("POST /grades "), "{}", call.head);
    let json: serde_json::Value = serde_json::from_str(&call.body).unwrap();
    assert_eq!(
        (
            &json["event"],
            &json["user"],
            &json["environment"],
            &json["agent"]
        ),
        (
            &"login".into(),
            &"alice".into(),
            &"hooked".into(),
            &"agent0".into()
        ),
        "{json}"
    );

    // SFTP is a login too (so a refusing hook cannot be passed by with it).
    let out = lab
        .ssh
        .command_with("alice+hooked", &Lab::alice(), &["-s"], &["sftp"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = wait_recorded(&lab, "alice", "hooked", |s| {
        count(s, "logout alice hooked 1000") == 2
    })
    .await;
    assert_eq!(count(&seen, "login alice hooked 1000"), 2, "{seen}");
    assert_eq!(count(&seen, "create alice hooked 0"), 1, "{seen}");
    assert_eq!(count(&seen, "start alice hooked 1000"), 1, "{seen}");
    assert_eq!(count(&seen, "after alice hooked 1000"), 1, "{seen}");
    lab.stop().await;
}

#[tokio::test]
async fn a_failing_required_login_hook_refuses_with_its_line() {
    let spawn = spawn_path();
    let catalogue = format!(
        r#"
[environments.gate]
image = "{image}"
spawn = "{spawn}"
uid = 1000
gid = 1000
[[environments.gate.hooks]]
on = "login"
required = true
timeout = "10s"
run = ["/bin/sh", "-c", "[ \"$LABSSH_USER\" = bob ] && exit 0; echo hook-stdout; echo \"exam not open yet for $LABSSH_USER\" >&2; echo second line >&2; exit 1"]
"#,
        image = labssh_testkit::docker::TEST_IMAGE,
    );
    let lab = Lab::start(LabOptions {
        catalogue,
        ..Default::default()
    })
    .await;
    let line = "labssh: could not start your session: your lab's login hook refused the login: exam not open yet for alice";
    for args in [&["echo ran"][..], &["-s", "sftp"][..]] {
        let (options, command) = args.split_at(args.len() - 1);
        let out = lab
            .ssh
            .command_with("alice+gate", &Lab::alice(), options, command)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(255), "{args:?}");
        assert_eq!(stdout(&out), "", "{args:?}");
        let err = stderr(&out);
        assert!(err.lines().any(|l| l == line), "{args:?}: {err}");
        assert!(
            !err.contains("second line") && !err.contains("hook-stdout"),
            "{err}"
        );
    }
    let out = lab
        .ssh
        .run("bob+gate", &Lab::bob(), &["echo ran"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "ran\n", "{}", stderr(&out));
    lab.stop().await;
}
