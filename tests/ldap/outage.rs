//! The directory goes down mid-run and comes back.

use std::time::{Duration, Instant};

use labssh_testkit::slapd::{Slapd, CAROL_PW, ERIN_PW};
use labssh_testkit::ssh::{stderr, stdout, Auth};

use crate::lab::{Lab, LabOptions};

/// Generous bound on one refused ssh login with the directory down: the
/// authenticator's 2 s timeout, key exchange, the rejection delay. A hang
/// would reach the ssh helper's 90 s.
const PROMPT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cached_student_gets_in_while_the_directory_is_down() {
    let mut server = Slapd::start("").expect("slapd");
    let lab = Lab::start(LabOptions {
        proxy_auth: Some(crate::auth(&server, server.url())),
        ..Default::default()
    })
    .await;
    let carol = Auth::Password(CAROL_PW.into());
    let out = lab
        .ssh
        .run("carol", &carol, &["echo before"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "before\n", "stderr={}", stderr(&out));

    server.stop();
    // carol's password was validated a moment ago: the cache answers
    // (auth_cache_ttl_secs, 300 s here).
    let out = lab
        .ssh
        .run("carol", &carol, &["echo cached"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "cached\n", "stderr={}", stderr(&out));
    // Only what was validated: a wrong password for carol is not let in.
    let out = lab
        .ssh
        .run("carol", &Auth::Password("not-carols".into()), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    // erin never logged in: she is told the service is unavailable, not
    // that her password is wrong (keyboard-interactive can show text).
    let started = Instant::now();
    let out = lab
        .ssh
        .command_with(
            "erin",
            &Auth::KeyboardInteractive(ERIN_PW.into()),
            &["-o", "LogLevel=INFO"],
            &["true"],
        )
        .output()
        .await
        .unwrap();
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains(crate::UNAVAILABLE),
        "{}",
        stderr(&out)
    );
    // With a plain password prompt there is no way to show text: refused.
    let out = lab
        .ssh
        .run("erin", &Auth::Password(ERIN_PW.into()), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    // The users file does not depend on the directory.
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo file"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "file\n", "stderr={}", stderr(&out));

    // Back on the same port: erin logs in.
    server.start_again().unwrap();
    let out = lab
        .ssh
        .run("erin", &Auth::Password(ERIN_PW.into()), &["echo back"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "back\n", "stderr={}", stderr(&out));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_directory_that_never_answers_costs_the_timeout_not_a_hang() {
    // Accepts connections (the kernel does, into the backlog) and never
    // says a word: a directory hung, or a firewall swallowing the replies.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Slapd::start("").expect("slapd");
    let url = format!("ldap://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let lab = Lab::start(LabOptions {
        proxy_auth: Some(crate::auth(&server, url)),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let out = lab
        .ssh
        .command_with(
            "carol",
            &Auth::KeyboardInteractive(CAROL_PW.into()),
            &["-o", "LogLevel=INFO"],
            &["true"],
        )
        .output()
        .await
        .unwrap();
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains(crate::UNAVAILABLE),
        "{}",
        stderr(&out)
    );
    lab.stop().await;
    drop(silent);
}
