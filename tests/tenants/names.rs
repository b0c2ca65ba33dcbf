//! Crafted login names: none of them lands alice in bob's container, in a container of
//! a new name, or anywhere but a clear refusal.

use labssh_testkit::ssh::{stderr, stdout};

use crate::lab::{Lab, LabOptions};
use crate::{as_alice, Bob};

/// Login names alice might try with her own password to get at bob.
fn crafted() -> Vec<String> {
    let mut names: Vec<String> = [
        "bob",
        "BOB",
        "Bob",
        "bob+default",
        "alice+../bob",
        "alice+../../bob",
        "alice/../bob",
        "../bob",
        "alice+bob",
        "alice+default+bob",
        "alice@bob",
        "alice\tbob",
        // Cyrillic о and Latin b: looks like "bob".
        "b\u{43e}b",
        // A fullwidth plus and a zero-width space.
        "alice\u{ff0b}bob",
        "alice\u{200b}",
        "ALICE",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    names.push("b".repeat(300));
    names.push(format!("alice+{}", "x".repeat(300)));
    names.push(format!("bob{}", "\u{301}".repeat(40)));
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_login_name_takes_alice_into_bobs_container() {
    let lab = Lab::start(LabOptions::default()).await;
    let bob = Bob::plant(&lab).await;
    // Alice's own login works, and cannot read bob's secret.
    let mine = as_alice(&lab, "alice", "cat ~/secret /home/bob/secret 2>&1").await;
    bob.assert_not_in(&mine, "her own login");
    let before = lab.cleanup.containers();
    for login in crafted() {
        let out = lab
            .ssh
            .run(
                &login,
                &Lab::alice(),
                &["cat ~/secret /home/bob/secret; hostname"],
            )
            .await
            .expect("ssh runs");
        let text = format!("{}{}", stdout(&out), stderr(&out));
        bob.assert_not_in(&text, &format!("login name {login:?}"));
        assert_ne!(
            out.status.code(),
            Some(0),
            "login {login:?} with alice's password got a session: {text}"
        );
        assert!(
            !stderr(&out).is_empty(),
            "login {login:?} was refused without a word"
        );
    }
    assert_eq!(
        lab.cleanup.containers(),
        before,
        "a crafted name made a container"
    );
    lab.stop().await;
}
