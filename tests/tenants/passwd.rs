//! A new container's passwd and group files: the image's, read once per image by the
//! agent and kept, with the student added, bound read-only from the container's own
//! directory. Bob's entry never shows in alice's container nor hers in his (the kept
//! copy of the image's files is never changed), and alice cannot change her bound
//! files to reach anything of bob's.

use crate::lab::{Lab, LabOptions};
use crate::{as_alice, Bob};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alice_gets_her_own_passwd_files_and_cannot_change_them() {
    let lab = Lab::start(LabOptions::default()).await;
    let bob = Bob::plant(&lab).await;
    let text = as_alice(
        &lab,
        "alice",
        "cat /etc/passwd /etc/group; echo 'bob::0:0::/:/bin/sh' >> /etc/passwd; \
         echo 'x:x:0:alice' >> /etc/group; cat /home/bob/secret; grep ' /etc/passwd ' /proc/mounts",
    )
    .await;
    bob.assert_not_in(&text, "her passwd files");
    assert!(
        text.contains("alice:x:1000:1000:alice:/home/alice:"),
        "{text}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("bob:")),
        "bob's entry is not in alice's files: {text}"
    );
    assert!(
        text.contains(" /etc/passwd ") && text.contains(" ro,"),
        "bound read-only: {text}"
    );
    // As the student the files' mode refuses her first; the bind is read-only anyway.
    assert_eq!(text.matches("can't create /etc/").count(), 2, "{text}");
    let out = lab
        .ssh
        .run("bob", &Lab::bob(), &["cat /etc/passwd /etc/group"])
        .await
        .unwrap();
    let files = labssh_testkit::ssh::stdout(&out);
    assert!(files.contains("bob:x:1000:1000:bob:/home/bob:"), "{files}");
    assert!(
        !files.lines().any(|l| l.starts_with("alice:")),
        "alice's entry is not in bob's files: {files}"
    );
}
