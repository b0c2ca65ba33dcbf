//! Lifecycle hooks: alice's hooks run only in alice's container and see only her
//! variables, bob's only in his; nothing a hook prints reaches any student; alice's
//! logins stuck in a slow hook do not hold bob's up.

use std::process::Stdio;
use std::time::{Duration, Instant};

use labssh_testkit::ssh::{stderr, stdout};

use crate::lab::{spawn_path, Lab, LabOptions};
use crate::{as_alice, eventually};

/// Records "EVENT USER ENVIRONMENT UID" in /tmp/hooks-EVENT and prints to both
/// streams; for alice's logins in `slow`, first waits for /tmp/release.
const HOOK: &str = r#"run = ["/bin/sh", "-c", "if [ \"$LABSSH_ENVIRONMENT\" = slow ] && [ \"$LABSSH_USER\" = alice ]; then while [ ! -e /tmp/release ]; do sleep 0.1; done; fi; echo \"$LABSSH_EVENT $LABSSH_USER $LABSSH_ENVIRONMENT $(id -u)\" >> /tmp/hooks-$LABSSH_EVENT; echo HOOK-OUT-$LABSSH_USER; echo HOOK-ERR-$LABSSH_USER >&2"]"#;

fn catalogue() -> String {
    let (image, spawn) = (labssh_testkit::docker::TEST_IMAGE, spawn_path());
    let env = |name: &str| {
        format!(
            r#"
[environments.{name}]
image = "{image}"
spawn = "{spawn}"
uid = 1000
gid = 1000
[[environments.{name}.hooks]]
on = "login"
timeout = "50s"
{HOOK}
[[environments.{name}.hooks]]
every = "1s"
{HOOK}
"#
        )
    };
    env("hooked") + &env("slow")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hooks_stay_in_their_students_container() {
    let lab = Lab::start(LabOptions {
        catalogue: catalogue(),
        ..Default::default()
    })
    .await;
    let alice = as_alice(&lab, "alice+hooked", "true").await;
    let bob = lab
        .ssh
        .run("bob+hooked", &Lab::bob(), &["echo bob-done"])
        .await
        .unwrap();
    assert_eq!(stdout(&bob), "bob-done\n", "{}", stderr(&bob));
    for (who, text) in [
        ("alice", alice),
        ("bob", format!("{}{}", stdout(&bob), stderr(&bob))),
    ] {
        assert!(
            !text.contains("HOOK-"),
            "a hook's output reached {who}: {text}"
        );
    }
    for (user, other) in [("alice", "bob"), ("bob", "alice")] {
        let mut seen = String::new();
        eventually(
            Duration::from_secs(30),
            "timers and login hooks ran",
            || {
                seen = lab.hook_records(user, "hooked");
                seen.contains(&format!("login {user} hooked 1000"))
                    && seen.contains(&format!("every {user} hooked 1000"))
            },
        )
        .await;
        assert!(
            seen.lines().all(|l| l.split(' ').nth(1) == Some(user)),
            "{other}'s hooks ran in {user}'s container, or with her variables: {seen}"
        );
    }

    // Alice's logins stuck in their hook; bob's go through meanwhile.
    let stuck: Vec<_> = (0..3)
        .map(|_| {
            let mut cmd = lab
                .ssh
                .command("alice+slow", &Lab::alice(), &["echo alice-in"]);
            cmd.stdin(Stdio::null());
            cmd.spawn().expect("spawn alice's ssh")
        })
        .collect();
    let alice_container = lab.container_name("alice", "slow");
    let deadline = Instant::now() + Duration::from_secs(30);
    while labssh_testkit::docker::docker(&["exec", &alice_container, "true"]).is_err() {
        assert!(
            Instant::now() < deadline,
            "alice's slow container never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bob = lab
        .ssh
        .run("bob+slow", &Lab::bob(), &["echo bob-in"])
        .await
        .unwrap();
    assert_eq!(stdout(&bob), "bob-in\n", "{}", stderr(&bob));
    let mut stuck: Vec<_> = stuck.into_iter().collect();
    for child in &mut stuck {
        assert!(
            child.try_wait().unwrap().is_none(),
            "alice's login should still wait for /tmp/release"
        );
    }
    labssh_testkit::docker::docker(&["exec", &alice_container, "touch", "/tmp/release"]).unwrap();
    for child in stuck {
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("alice's logins finish once released")
            .unwrap();
        assert_eq!(stdout(&out), "alice-in\n", "{}", stderr(&out));
    }
    lab.stop().await;
}
