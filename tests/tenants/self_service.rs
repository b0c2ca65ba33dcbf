//! The self-service login (`ssh alice+@lab reset`): alice acts only on her own
//! containers. No command, argument or login name stops, resets or lists bob's, and
//! her reset ends only her own sessions.

use labssh_testkit::ssh::{stderr, stdout};

use crate::lab::{Lab, LabOptions};
use crate::Bob;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alices_self_service_never_touches_bobs_container_or_sessions() {
    let lab = Lab::start(LabOptions::default()).await;
    let bob = Bob::plant(&lab).await;
    let bobs = lab.container_id("bob", "default").unwrap();
    let bob_name = lab.container_name("bob", "default");
    // Commands naming bob, through her own self-service login.
    for command in [
        "reset bob",
        "stop bob",
        "reset ../bob",
        "stop bob+default",
        "stop default bob",
        "reset --user bob",
        "start /home/bob",
    ] {
        let out = lab
            .ssh
            .run("alice+", &Lab::alice(), &[command])
            .await
            .expect("ssh runs");
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert_ne!(
            out.status.code(),
            Some(0),
            "`alice+ {command}` succeeded: {text}"
        );
        bob.assert_not_in(&text, &format!("alice+ {command}"));
    }
    // Bob's self-service login names, with her password.
    for login in ["bob+", "BOB+", "bob++", "alice+bob+", "b\u{43e}b+"] {
        let out = lab
            .ssh
            .run(login, &Lab::alice(), &["reset"])
            .await
            .expect("ssh runs");
        assert_eq!(out.status.code(), Some(255), "{login}: {}", stderr(&out));
    }
    // Her listing names her environments and her containers only.
    let out = lab.ssh.run("alice+", &Lab::alice(), &[]).await.unwrap();
    let listing = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !listing.contains("bob") && !listing.contains(&bob_name),
        "alice's listing names bob's: {listing}"
    );
    // A reset of her own (she has no container yet: refused) and then with one.
    let out = lab
        .ssh
        .run("alice+", &Lab::alice(), &["reset"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("alice has no container of 'default'"),
        "{}",
        stderr(&out)
    );
    lab.ssh
        .run("alice", &Lab::alice(), &["true"])
        .await
        .unwrap();
    let out = lab
        .ssh
        .run("alice+", &Lab::alice(), &["reset"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("is made anew from its image"), "{said}");
    // Bob's container is the same one, and his session still serves his secret.
    assert_eq!(
        lab.container_id("bob", "default").as_deref(),
        Some(bobs.as_str())
    );
    let served = labssh_testkit::docker::docker(&[
        "exec",
        &bob_name,
        "sh",
        "-c",
        &format!("nc 127.0.0.1 {} < /dev/null", crate::BOB_PORT),
    ])
    .unwrap_or_default();
    assert_eq!(
        served.trim(),
        bob.secret,
        "bob's session ended with alice's reset"
    );
    lab.stop().await;
}
