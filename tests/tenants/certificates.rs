//! Alice's OpenSSH user certificate (a trusted CA's, principal `alice`) opens
//! her account only: by no login name does it reach bob's container, and
//! what it runs in is her own container, which holds nothing of bob's.

use labssh_testkit::ssh::{stderr, stdout, Auth};

use crate::ca::Ca;
use crate::lab::{Lab, LabOptions};
use crate::Bob;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alices_certificate_opens_no_login_of_bobs() {
    let ca = Ca::new();
    let lab = Lab::start(LabOptions {
        proxy_auth: Some(ca.auth()),
        ..Default::default()
    })
    .await;
    let bob = Bob::plant(&lab).await;
    let cert = Auth::Key(ca.student("alice-cert", "alice", &[]));

    // Her own account: in, in her own container.
    let out = lab
        .ssh
        .run("alice", &cert, &["cat ~/secret 2>&1; hostname"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    bob.assert_not_in(&stdout(&out), "her own login by certificate");
    assert!(lab.container_id("alice", "default").is_some());

    for login in [
        "bob",
        "bob+default",
        "bob+open",
        "BOB",
        "bob+",
        "alice+../bob",
    ] {
        let out = lab.ssh.run(login, &cert, &["cat ~/secret"]).await.unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        bob.assert_not_in(&text, &format!("her certificate as {login:?}"));
        assert!(
            !out.status.success() && stderr(&out).contains("Permission denied"),
            "{login:?} let in: {text}"
        );
    }
    // Not a certificate for bob signed by a CA the proxy does not trust either.
    let rogue = Ca::new();
    let forged = Auth::Key(rogue.student("bob-forged", "bob", &[]));
    let out = lab
        .ssh
        .run("bob", &forged, &["cat ~/secret"])
        .await
        .unwrap();
    bob.assert_not_in(
        &format!("{}{}", stdout(&out), stderr(&out)),
        "a rogue CA's certificate",
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    lab.stop().await;
}
