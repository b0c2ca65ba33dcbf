//! `max_unauthenticated_per_address` (with exempt addresses and behind PROXY
//! protocol) and `max_startups`, with idle TCP connections.

use std::net::SocketAddr;
use std::time::Duration;

use labssh_proxy::config::DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS as CAP;
use labssh_proxy::rate_limit::RateLimitConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use super::{
    admitted_behind, admitted_of, first_bytes, idle_from, logs_in_eventually, refused, Seen, BOUND,
};
use crate::lab::{Lab, LabOptions};

/// Longer than any of these tests takes to open and judge its connections, so
/// none of those admitted is closed by the grace while it is counted.
const GRACE_SECS: u64 = 30;

/// The 33rd idle connection from one address is refused; another address is not
/// affected, nor an exempt one (a campus NAT) at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_has_at_most_its_cap_of_unauthenticated_connections() {
    let lab = Lab::start(LabOptions {
        proxy: Some(|c| c.login_grace_secs = GRACE_SECS),
        rate_limit: Some(RateLimitConfig {
            exempt_addresses: vec!["127.0.0.5".into()],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let addr = lab.cluster.as_ref().unwrap().ssh_addr;
    let before = refused("max_unauthenticated_per_address");

    let (capped, refused_here) = admitted_of(addr, "127.0.0.3", CAP + 1).await;
    assert_eq!((capped.len(), refused_here), (CAP, 1), "127.0.0.3");
    let (other, none) = admitted_of(addr, "127.0.0.4", CAP).await;
    assert_eq!((other.len(), none), (CAP, 0), "127.0.0.4 is not affected");
    let (nat, none) = admitted_of(addr, "127.0.0.5", 2 * CAP).await;
    assert_eq!((nat.len(), none), (2 * CAP, 0), "the exempt 127.0.0.5");
    assert!(refused("max_unauthenticated_per_address") > before);

    // A student on the capped address logs in once its connections are gone.
    drop(capped);
    logs_in_eventually(&lab, "bob", &Lab::bob(), "127.0.0.3").await;
    drop((other, nat));
    lab.stop().await;
}

/// Behind a balancer the client its PROXY header names is what is capped, not
/// the balancer; and a balancer's connection that never sends its header is
/// closed at the end of the login grace all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_a_balancer_the_header_address_is_capped() {
    let lab = Lab::start(LabOptions {
        proxy: Some(|c| {
            c.login_grace_secs = GRACE_SECS;
            c.proxy_protocol.trusted = vec!["127.0.0.6".into()];
        }),
        ..Default::default()
    })
    .await;
    let addr = lab.cluster.as_ref().unwrap().ssh_addr;
    let mut silent = idle_from(addr, "127.0.0.6", 1).await.remove(0);

    let flooder: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let (held, refused_here) = admitted_behind(addr, "127.0.0.6", flooder, CAP + 1).await;
    assert_eq!((held.len(), refused_here), (CAP, 1), "{flooder}");
    let student: SocketAddr = "203.0.113.8:40000".parse().unwrap();
    let (other, none) = admitted_behind(addr, "127.0.0.6", student, 1).await;
    assert_eq!((other.len(), none), (1, 0), "{student}");

    // Silent from accept: no header, no SSH version. Its banner comes once the
    // proxy stops waiting for a header; then the grace closes it.
    let mut seen = Vec::new();
    let grace = Duration::from_secs(GRACE_SECS);
    tokio::time::timeout(grace + BOUND, silent.read_to_end(&mut seen))
        .await
        .expect("a silent connection from the balancer still open")
        .ok();
    drop((held, other));
    lab.stop().await;
}

/// `max_startups = "1:100:2"`: with one connection not logged in, every new one
/// is refused, from any address; logged-in connections never count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_startups_refuses_past_start_and_ignores_logged_in_connections() {
    let lab = Lab::start(LabOptions {
        proxy: Some(|c| {
            c.login_grace_secs = GRACE_SECS;
            c.max_startups = "1:100:2".into();
        }),
        ..Default::default()
    })
    .await;
    let addr = lab.cluster.as_ref().unwrap().ssh_addr;
    let before = refused("max_startups");

    // A student logged in, with a session left open.
    let mut session = lab
        .ssh
        .command_with(
            "bob",
            &Lab::bob(),
            &["-b", "127.0.0.7"],
            &["echo in; exec sleep 120"],
        )
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(session.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(BOUND, lines.next_line()).await;
    assert_eq!(first.unwrap().unwrap().as_deref(), Some("in"));

    // It does not count: one idle connection is admitted...
    let mut idle = idle_from(addr, "127.0.0.8", 1).await.remove(0);
    assert_eq!(first_bytes(&mut idle).await, Seen::Banner);
    // ...and with it not logged in, the next is refused, whatever its address.
    for from in ["127.0.0.9", "127.0.0.10"] {
        let mut next = idle_from(addr, from, 1).await.remove(0);
        assert_eq!(first_bytes(&mut next).await, Seen::Refused, "{from}");
    }
    assert!(refused("max_startups") >= before + 2.0);

    // Once it is gone, a login gets in again.
    drop(idle);
    logs_in_eventually(&lab, "alice", &Lab::alice(), "127.0.0.9").await;
    session.kill().await.unwrap();
    lab.stop().await;
}
