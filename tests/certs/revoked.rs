//! The revoked keys list: an OpenSSH KRL made with `ssh-keygen -k`, or public keys
//! one per line, refusing certificates (by serial, key id, or their key) and plain
//! key logins, taking effect on the running proxy as the file changes.

use std::path::Path;
use std::process::Output;

use labssh_testkit::ssh::{stderr, stdout, Auth};

use crate::ca::{ssh_keygen, Ca};
use crate::lab::{Lab, LabOptions};

async fn login(lab: &Lab, login: &str, key: &Path) -> Output {
    lab.ssh
        .run(login, &Auth::Key(key.to_path_buf()), &["echo in"])
        .await
        .expect("ssh")
}

fn assert_in(out: &Output, what: &str) {
    assert_eq!(stdout(out), "in\n", "{what}: {}", stderr(out));
}

fn assert_refused(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(255), "{what}: {}", stdout(out));
    assert!(
        stderr(out).contains("Permission denied"),
        "{what}: {}",
        stderr(out)
    );
}

/// Writes a KRL to `path` from `spec` (ssh-keygen's KRL specification lines),
/// for certificates of `ca`.
fn krl(ca: &Ca, path: &Path, spec: &str) {
    let spec_file = ca.dir.path().join("krl.spec");
    std::fs::write(&spec_file, spec).unwrap();
    ssh_keygen(&[
        "-k",
        "-f",
        path.to_str().unwrap(),
        "-s",
        ca.public().to_str().unwrap(),
        spec_file.to_str().unwrap(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_certificates_and_keys_are_refused() {
    let ca = Ca::new();
    let revoked = ca.revoked_path();
    let lab = Lab::start(LabOptions {
        proxy_auth: Some(ca.auth()),
        ..Default::default()
    })
    .await;
    let serial42 = ca.student("serial42", "erin", &["-z", "42"]);
    let serial43 = ca.student("serial43", "erin", &["-z", "43"]);
    let by_id = ca.student("lost-laptop", "erin", &["-z", "44"]);
    // frank logs in with a plain key from the users file.
    let frank = ca.student_key("frank");
    let frank_pub = std::fs::read_to_string(frank.with_extension("pub")).unwrap();
    labssh_proxy::users::add_user(&lab.users_file, "frank", None, Some(frank_pub.trim())).unwrap();
    for key in [&serial42, &serial43, &by_id] {
        assert_in(&login(&lab, "erin", key).await, "before any revocation");
    }
    assert_in(&login(&lab, "frank", &frank).await, "frank before");

    // A KRL by serial and by key id: those two certificates only.
    krl(&ca, &revoked, "serial: 42\nid: lost-laptop\n");
    assert!(std::fs::read(&revoked).unwrap().starts_with(b"SSHKRL\n\0"));
    assert_refused(&login(&lab, "erin", &serial42).await, "serial 42 revoked");
    assert_refused(&login(&lab, "erin", &by_id).await, "key id revoked");
    assert_in(&login(&lab, "erin", &serial43).await, "serial 43 is not");
    assert_in(&login(&lab, "frank", &frank).await, "frank is not");

    // `ssh-keygen -k -u` adds plain keys (by hash): frank's plain key login, and a
    // certificate whose key is listed.
    ssh_keygen(&[
        "-k",
        "-u",
        "-f",
        revoked.to_str().unwrap(),
        frank.with_extension("pub").to_str().unwrap(),
        serial43.with_extension("pub").to_str().unwrap(),
    ]);
    assert_refused(&login(&lab, "frank", &frank).await, "frank's key revoked");
    assert_refused(&login(&lab, "erin", &serial43).await, "its key revoked");

    // A broken file keeps the last list in force.
    std::fs::write(&revoked, b"SSHKRL\n\0 truncated").unwrap();
    assert_refused(
        &login(&lab, "frank", &frank).await,
        "a broken list keeps the last",
    );

    // Plain public keys, one per line: what is listed is refused, nothing else.
    std::fs::write(&revoked, format!("# revoked by hand\n{frank_pub}\n")).unwrap();
    assert_refused(&login(&lab, "frank", &frank).await, "listed by hand");
    assert_in(&login(&lab, "erin", &serial42).await, "no longer listed");
    let serial42_pub = std::fs::read_to_string(serial42.with_extension("pub")).unwrap();
    std::fs::write(&revoked, serial42_pub).unwrap();
    assert_refused(
        &login(&lab, "erin", &serial42).await,
        "a certificate's key by hand",
    );
    assert_in(
        &login(&lab, "frank", &frank).await,
        "frank no longer listed",
    );
    lab.stop().await;
}
