//! The failure of issue 11: thousands of idle connections from one address used to
//! fill `max_connections`, and every other student's `ssh` was reset.

use std::time::{Duration, Instant};

use labssh_testkit::ssh::{stderr, stdout};

use super::{admitted_of, all_closed, judged_from, Seen, BOUND};
use crate::lab::{Lab, LabOptions};

/// Idle connections in the flood: more than `MAX_CONNECTIONS`.
const FLOOD: usize = 5000;
/// The proxy's `max_connections` here: the flood alone would fill it.
const MAX_CONNECTIONS: usize = 1000;
/// `login_grace_secs` here: longer than the flood takes to open, so the flood's
/// admitted connections are all still held while the first students log in.
const GRACE_SECS: u64 = 10;
/// Logins by a student on another address during the flood.
const LOGINS: usize = 20;

/// 5,000 idle connections from 127.0.0.2 while a student on 127.0.0.1 logs in 20
/// times: every login succeeds; the flood's address has only its
/// `max_unauthenticated_per_address` admitted, the rest are closed at once, and
/// those admitted are closed at the end of the login grace, after which the
/// address counts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_flood_from_one_address_locks_no_student_out() {
    let nofile = labssh_testkit::raise_nofile_limit();
    // Both ends of every connection live in this process (the proxy runs in it).
    assert!(
        nofile > 2 * FLOOD as u64 + 1000,
        "RLIMIT_NOFILE {nofile} is too low for a flood of {FLOOD}"
    );
    let lab = Lab::start(LabOptions {
        proxy: Some(|c| {
            c.login_grace_secs = GRACE_SECS;
            c.max_connections = MAX_CONNECTIONS;
        }),
        ..Default::default()
    })
    .await;
    let addr = lab.cluster.as_ref().unwrap().ssh_addr;
    let started = Instant::now();
    let flood = judged_from(addr, "127.0.0.2", FLOOD).await;
    let flooded = started.elapsed();

    let mut logins = Vec::with_capacity(LOGINS);
    for i in 0..LOGINS {
        let started = Instant::now();
        let out = lab
            .ssh
            .command_with("alice", &Lab::alice(), &["-b", "127.0.0.1"], &["echo in"])
            .output()
            .await
            .unwrap();
        assert_eq!(
            stdout(&out),
            "in\n",
            "login {i} during the flood: {}",
            stderr(&out)
        );
        logins.push(started.elapsed());
    }
    logins.sort();
    // Figures for the report, not asserted.
    eprintln!(
        "flood of {FLOOD} opened and judged in {flooded:?}; {LOGINS} logins during it: \
         median {:?}, slowest {:?}",
        logins[LOGINS / 2],
        logins[LOGINS - 1]
    );

    // The flood's address had only its cap of connections admitted (sent the
    // banner), and the proxy closes every one of them.
    let cap = labssh_proxy::config::DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS;
    let admitted = flood.iter().filter(|(_, s)| *s == Seen::Banner).count();
    assert_eq!(admitted, cap, "flood connections admitted");
    let grace = Duration::from_secs(GRACE_SECS);
    all_closed(flood.into_iter().map(|(s, _)| s).collect(), grace + BOUND).await;
    // Its count is back to nothing: a full cap is admitted again, no more.
    let (open, refused) = admitted_of(addr, "127.0.0.2", cap + 1).await;
    assert_eq!((open.len(), refused), (cap, 1));
    drop(open);
    lab.stop().await;
}
