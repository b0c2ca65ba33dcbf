//! Validated credentials are cached in a real Redis under an HMAC, and a
//! Redis outage never stops logins.

use crate::lab::{Lab, LabOptions};
use labssh_testkit::ssh::{stderr, stdout, Auth};

fn keyspace_hits(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("keyspace_hits:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_holds_hmacs_and_serves_repeat_logins() {
    let mut lab = Lab::start(LabOptions {
        redis: true,
        ..Default::default()
    })
    .await;
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo one"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "one\n", "stderr={}", stderr(&out));

    let redis = lab.redis.as_ref().unwrap();
    let keys = redis
        .cli(&["--scan", "--pattern", "labssh:auth:*"])
        .unwrap();
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 1, "one cached credential: {keys:?}");
    let ttl: i64 = redis
        .cli(&["TTL", keys[0]])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 300, "ttl {ttl}");
    // Neither the password nor the user name is stored anywhere in Redis.
    let dump = redis.cli(&["--scan"]).unwrap();
    for key in dump.lines() {
        assert!(
            !key.contains(crate::lab::ALICE_PW) && !key.contains("alice"),
            "{key}"
        );
        let value = redis.cli(&["GET", key]).unwrap();
        assert!(!value.contains(crate::lab::ALICE_PW), "{value}");
    }

    // Second login: answered from the cache.
    let hits_before = keyspace_hits(&redis.cli(&["INFO", "stats"]).unwrap());
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo two"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "two\n");
    let hits_after = keyspace_hits(&redis.cli(&["INFO", "stats"]).unwrap());
    assert!(
        hits_after > hits_before,
        "cache hit: {hits_before} -> {hits_after}"
    );

    // A wrong password is never cached, and is refused even with a cached entry.
    let out = lab
        .ssh
        .run("alice", &Auth::Password("nope".into()), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    let count = redis
        .cli(&["--scan", "--pattern", "labssh:auth:*"])
        .unwrap()
        .lines()
        .count();
    assert_eq!(count, 1);

    // Redis goes down: logins still work (verified directly), wrong ones still fail.
    lab.redis.as_mut().unwrap().stop();
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo three"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "three\n", "stderr={}", stderr(&out));
    let out = lab
        .ssh
        .run("alice", &Auth::Password("nope".into()), &["true"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    lab.stop().await;
}
