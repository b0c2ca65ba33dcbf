//! Brute-force protection: one address hammering wrong passwords is blocked,
//! while legitimate students elsewhere log in normally throughout, the one
//! under attack included.

use crate::lab::{Lab, LabOptions};
use labssh_proxy::rate_limit::RateLimitConfig;
use labssh_testkit::ssh::{stderr, stdout, Auth};

/// russh offers the password method once per connection, so each wrong
/// password is one ssh process.
const TRIES_PER_CONNECTION: usize = 1;
const CONNECTIONS: usize = 1000;
const PARALLEL: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_wrong_passwords_are_blocked_without_hurting_others() {
    let lab = Lab::start(LabOptions {
        redis: true,
        rate_limit: Some(RateLimitConfig {
            max_failures_per_address: 20,
            max_failures_per_user: 50,
            window_secs: 300,
            exempt_addresses: Vec::new(),
        }),
        ..Default::default()
    })
    .await;
    let attacker = ["-b", "127.0.0.2"];
    let student = ["-b", "127.0.0.3"];
    let tries = TRIES_PER_CONNECTION.to_string();

    let attack = async {
        for wave in 0..CONNECTIONS / PARALLEL {
            let runs = (0..PARALLEL).map(|_| {
                let mut cmd = lab.ssh.command_with(
                    "alice",
                    &Auth::Password("not-her-password".into()),
                    &[
                        &attacker[..],
                        &["-o", &format!("NumberOfPasswordPrompts={tries}")],
                    ]
                    .concat(),
                    &["true"],
                );
                async move { cmd.output().await.unwrap() }
            });
            for out in futures::future::join_all(runs).await {
                assert_eq!(
                    out.status.code(),
                    Some(255),
                    "wave {wave}: {}",
                    stderr(&out)
                );
            }
        }
    };
    let student_logins = async {
        let mut ok = 0;
        for _ in 0..10 {
            let out = lab
                .ssh
                .command_with("bob", &Lab::bob(), &student, &["echo in"])
                .output()
                .await
                .unwrap();
            assert_eq!(
                stdout(&out),
                "in\n",
                "bob during the attack: {}",
                stderr(&out)
            );
            ok += 1;
        }
        ok
    };
    let ((), ok) = tokio::join!(attack, student_logins);
    assert_eq!(ok, 10);

    let redis = lab.redis.as_ref().unwrap();
    let count: u64 = redis
        .cli(&["GET", "labssh:rl:v1:addr:127.0.0.2"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Refused attempts are not counted (so they cannot prolong the block): the
    // count stops at the limit, plus the attempts of the wave already past the
    // check when it was reached.
    assert!(
        (20..20 + PARALLEL as u64).contains(&count),
        "counted up to the limit only: {count}"
    );
    // Blocked means blocked before any check: even alice's real password is
    // refused from the attacking address...
    let out = lab
        .ssh
        .command_with("alice", &Lab::alice(), &attacker, &["true"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", stdout(&out));
    // ...while alice herself, from her own address, only waits a little: someone
    // else's failures never lock a student out. Nor bob, from any address.
    let out = lab
        .ssh
        .command_with("alice", &Lab::alice(), &student, &["echo in"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        stdout(&out),
        "in\n",
        "alice from her address: {}",
        stderr(&out)
    );
    let out = lab
        .ssh
        .run("bob", &Lab::bob(), &["echo still-in"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "still-in\n", "{}", stderr(&out));
    lab.stop().await;
}
