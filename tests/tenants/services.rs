//! Discovery: bob's server is in the registry (an operator sees `7779-bob`), but
//! alice's self-service listing names nothing of his by any argument, and her proxy's
//! certificate cannot list everyone's (tests/escape/roles.rs).

use std::time::{Duration, Instant};

use labssh_testkit::ssh::{stderr, stdout};

use crate::lab::{Lab, LabOptions};
use crate::{Bob, BOB_PORT};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alice_never_sees_bobs_services() {
    let lab = Lab::start(LabOptions::default()).await;
    let bob = Bob::plant(&lab).await;
    let bobs = format!("{BOB_PORT}-bob");
    // The registry has it, so what alice is shown below is filtered, not empty.
    let url = format!("http://{}", lab.cluster.as_ref().unwrap().controller_addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_labssh"))
            .args(["services", "--user", "bob", "--controller", &url])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.lines().any(|l| l.starts_with(&format!("{bobs} "))) {
            break;
        }
        assert!(Instant::now() < deadline, "{bobs} never listed: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Alice's own server, so her listing is not empty either.
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["httpd -p 8080 -h /tmp"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = lab
            .ssh
            .run("alice+", &Lab::alice(), &["services"])
            .await
            .unwrap();
        let listing = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !listing.contains("bob") && !listing.contains(&BOB_PORT.to_string()),
            "alice's services name bob's: {listing}"
        );
        bob.assert_not_in(&listing, "alice+ services");
        if listing.contains("8080-alice ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "8080-alice never listed: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for command in ["services bob", "services --user bob", "services 7779-bob"] {
        let out = lab
            .ssh
            .run("alice+", &Lab::alice(), &[command])
            .await
            .unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert_ne!(
            out.status.code(),
            Some(0),
            "`alice+ {command}` succeeded: {text}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with(&format!("{bobs} "))),
            "`alice+ {command}` lists bob's: {text}"
        );
    }
}
