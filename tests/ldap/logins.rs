//! Password and key logins from the directory, beside the users file.

use labssh_testkit::slapd::{self, Slapd, CAROL_PW};
use labssh_testkit::ssh::{stderr, stdout, Auth};

use crate::lab::{Lab, LabOptions};

/// An ed25519 key pair made with ssh-keygen in `dir`: (private key, public line).
pub fn keygen(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let path = dir.join(name);
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn students_log_in_with_their_directory_password_or_key() {
    let keys = tempfile::tempdir().unwrap();
    let (dave_key, dave_public) = keygen(keys.path(), "dave");
    let (stranger_key, _) = keygen(keys.path(), "stranger");
    let server = Slapd::start(&slapd::account_ldif(
        "dave",
        "dave-pw",
        20002,
        20000,
        &[],
        &[&dave_public],
    ))
    .expect("slapd");
    let lab = Lab::start(LabOptions {
        proxy_auth: Some(crate::auth(&server, server.url())),
        ..Default::default()
    })
    .await;

    // carol is in the directory only; alice in the users file only.
    let out = lab
        .ssh
        .run(
            "carol",
            &Auth::Password(CAROL_PW.into()),
            &["echo hello carol"],
        )
        .await
        .unwrap();
    assert_eq!(stdout(&out), "hello carol\n", "stderr={}", stderr(&out));
    let out = lab
        .ssh
        .run(
            "carol",
            &Auth::KeyboardInteractive(CAROL_PW.into()),
            &["echo kbd"],
        )
        .await
        .unwrap();
    assert_eq!(stdout(&out), "kbd\n", "stderr={}", stderr(&out));
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo file"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "file\n", "stderr={}", stderr(&out));

    // dave's key is in his entry's sshPublicKey, in no users file.
    let out = lab
        .ssh
        .run("dave", &Auth::Key(dave_key.clone()), &["echo key"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "key\n", "stderr={}", stderr(&out));
    // Another key, or dave's key for carol: refused.
    for (user, key) in [("dave", &stranger_key), ("carol", &dave_key)] {
        let out = lab
            .ssh
            .run(user, &Auth::Key(key.clone()), &["true"])
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(255), "{user}");
        assert!(
            stderr(&out).contains("Permission denied"),
            "{user}: {}",
            stderr(&out)
        );
    }

    // A wrong password, an unknown user, an empty password: the plain
    // refusal, nothing about the directory. (A crafted name such as
    // `*)(uid=*` never gets this far: the stock client refuses to send it,
    // and the proxy's login-name rules refuse it; the filter escaping is
    // tested against slapd in labssh-proxy's auth::ldap::tests.)
    for (user, password) in [
        ("carol", "not-carols"),
        ("mallory", CAROL_PW),
        ("carol", ""),
    ] {
        let out = lab
            .ssh
            .run(user, &Auth::Password(password.into()), &["true"])
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(255), "{user}");
        let err = stderr(&out);
        assert!(err.contains("Permission denied"), "{user}: {err}");
        assert!(!err.contains("unavailable"), "{user}: {err}");
    }
    lab.stop().await;
}
