//! `max_auth_tries`: the failure that reaches it disconnects the client with
//! OpenSSH's words, before it can try again.

use labssh_testkit::ssh::{stderr, Auth};

use super::{metric, refused};
use crate::lab::{Lab, LabOptions};

/// Password prompts the client would go on answering: more than the limit.
const PROMPTS: &str = "NumberOfPasswordPrompts=5";

/// With `max_auth_tries = 2`, a client answering wrong passwords is disconnected
/// after the second ("Too many authentication failures"): the third is never
/// checked. The proxy (russh) offers the password method once per connection, so
/// the client's further tries come by keyboard-interactive, which counts the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_allowed_failure_disconnects_the_client() {
    let lab = Lab::start(LabOptions {
        proxy: Some(|c| c.max_auth_tries = 2),
        ..Default::default()
    })
    .await;
    let wrong = |pw: &str| Auth::Password(pw.into());
    let before = refused("max_auth_tries");
    let out = lab
        .ssh
        .command_with(
            "alice",
            &wrong("not-hers"),
            &[
                "-o",
                PROMPTS,
                "-o",
                "PreferredAuthentications=password,keyboard-interactive",
            ],
            &["true"],
        )
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Too many authentication failures"),
        "{}",
        stderr(&out)
    );
    assert!(refused("max_auth_tries") > before);

    // Keyboard-interactive only, counted by the checks that ran: exactly two
    // (no other test of this binary answers keyboard-interactive wrongly).
    let checked = || {
        metric(
            "labssh_auth_attempts_total",
            &[("method", "keyboard-interactive"), ("result", "rejected")],
        )
    };
    let (checked_before, before) = (checked(), refused("max_auth_tries"));
    let out = lab
        .ssh
        .command_with(
            "bob",
            &Auth::KeyboardInteractive("not-his".into()),
            &["-o", PROMPTS],
            &["true"],
        )
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Too many authentication failures"),
        "{}",
        stderr(&out)
    );
    assert_eq!(checked() - checked_before, 2.0, "checked attempts");
    assert!(refused("max_auth_tries") > before);

    // The right password still gets in.
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo in"])
        .await
        .unwrap();
    assert_eq!(
        labssh_testkit::ssh::stdout(&out),
        "in\n",
        "{}",
        stderr(&out)
    );
    lab.stop().await;
}
