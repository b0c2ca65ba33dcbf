//! Bad input gets one clear line, never a panic or a hang, and nobody
//! else is affected.

use std::time::Duration;

use crate::lab::{Lab, LabOptions};
use labssh_testkit::ssh::{stderr, stdout, Auth, Ssh};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn student_mistakes_get_clear_messages() {
    let lab = Lab::start(LabOptions::default()).await;

    // Wrong password: plain denial, nothing about which part was wrong.
    let out = lab
        .ssh
        .run("alice", &Auth::Password("wrong".into()), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let err = stderr(&out);
    assert!(err.contains("Permission denied"), "{err}");
    // An unknown user looks exactly the same.
    let out = lab
        .ssh
        .run("mallory", &Auth::Password("wrong".into()), &["true"])
        .await
        .unwrap();
    assert_eq!(stderr(&out).replace("mallory@", "alice@"), err);

    // A username outside the safe set: refused, and told why where the
    // protocol allows it (keyboard-interactive shows instructions).
    for bad in ["Alice", "al!ce", "../bob"] {
        // LogLevel INFO is the client default; the helper quiets it otherwise.
        let out = lab
            .ssh
            .command_with(
                bad,
                &Auth::KeyboardInteractive(crate::lab::ALICE_PW.into()),
                &["-o", "LogLevel=INFO"],
                &["true"],
            )
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(255), "{bad}");
        assert!(
            stderr(&out).contains("labssh: invalid username"),
            "{bad}: {}",
            stderr(&out)
        );
        let out = lab
            .ssh
            .run(bad, &Auth::Password(crate::lab::ALICE_PW.into()), &["true"])
            .await
            .unwrap();
        assert!(
            stderr(&out).contains("Permission denied"),
            "{bad}: {}",
            stderr(&out)
        );
    }

    // Unknown environment: the message lists those there are.
    let out = lab
        .ssh
        .run("alice+nope", &Lab::alice(), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let err = stderr(&out);
    assert!(err.contains("unknown environment 'nope'"), "{err}");
    assert!(
        err.contains("admin, bare, broken, closed, debian, default, open"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    // The container cannot start (its image is missing): the student is told why.
    let out = lab
        .ssh
        .run("alice+broken", &Lab::alice(), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let err = stderr(&out);
    assert!(
        err.contains("labssh/this-image-does-not-exist:never"),
        "{err}"
    );
    assert!(err.starts_with("labssh: "), "{err}");

    // None of this affected anyone: alice and bob log in normally.
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo fine"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "fine\n", "stderr={}", stderr(&out));
    let out = lab
        .ssh
        .run("bob", &Lab::bob(), &["echo fine"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "fine\n", "stderr={}", stderr(&out));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_live_agent_gives_a_clear_message() {
    let lab = Lab::start(LabOptions {
        agents: Some(0),
        ..Default::default()
    })
    .await;
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let err = stderr(&out);
    assert!(
        err.contains("labssh: no backend agent is available"),
        "{err}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_down_gives_a_clear_message() {
    labssh_testkit::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let users_file = dir.path().join("users.toml");
    labssh_proxy::users::add_user(&users_file, "alice", Some(crate::lab::ALICE_PW), None).unwrap();
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let config = labssh_proxy::Config {
        host_keys: vec![dir.path().join("host_key")],
        users_file,
        cache_key_file: dir.path().join("cache.key"),
        controller: format!("http://127.0.0.1:{dead_port}"),
        controller_timeout_secs: 3,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(labssh_proxy::run(listener, config, async {
        let _ = stop_rx.await;
    }));
    let ssh = Ssh::new(addr).unwrap();
    let out = ssh.run("alice", &Lab::alice(), &["true"]).await.unwrap();
    assert_eq!(out.status.code(), Some(255));
    let err = stderr(&out);
    assert!(
        err.contains("labssh: the lab controller is not reachable"),
        "{err}"
    );
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), proxy)
        .await
        .expect("proxy stops")
        .unwrap()
        .unwrap();
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (role, text, key) in [
        (
            "proxy",
            "listen = \"127.0.0.1:2222\"\nusers_fle = \"x\"\n",
            "users_fle",
        ),
        (
            "controller",
            "[environments.default]\nimage = \"x\"\nmemory = 5\n",
            "memory",
        ),
        ("agent", "name = \"a\"\ncapacity = 0\n", "capacity"),
    ] {
        let path = dir.path().join(format!("{role}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
            .arg(role)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{role}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{role}: {err}");
        assert!(!err.contains("panicked"), "{role}: {err}");
    }
}
