//! Egress policies: `none` leaves a container its loopback only (and `ssh -L` into
//! it still works); an allow-list opens exactly what it lists, even a private
//! address the default policy keeps closed.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;

use super::{environment, host_reads, private, reads, serve, sh, HostAddress, TRY};
use crate::lab::{connect_when_up, Lab, LabOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exam_mode_leaves_loopback_only_and_forwarding_works() {
    let lab = Lab::start(LabOptions {
        catalogue: environment("exam", "\"none\""),
        ..Default::default()
    })
    .await;
    let host = HostAddress::add('e', private(1));
    let port = serve(SocketAddr::from((host.addr, 0)), "host-reached").await;
    assert_eq!(host_reads(host.addr, port).await, "host-reached\n");
    // Every address of this host, the docker0 gateway among them.
    let any = serve(SocketAddr::from(([0, 0, 0, 0], 0)), "host-reached").await;

    let interfaces = sh(&lab, "alice+exam", &Lab::alice(), "ls /sys/class/net").await;
    assert_eq!(interfaces.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    for (addr, port) in [
        (host.addr.to_string(), port),
        ("172.17.0.1".to_owned(), any),
        ("1.1.1.1".to_owned(), 53),
    ] {
        let got = reads(&lab, "alice+exam", &Lab::alice(), &addr, port).await;
        assert!(
            !got.contains("host-reached"),
            "exam reached {addr}: {got:?}"
        );
    }

    // ssh -L into the container's own loopback still works.
    let listen = "while true; do echo exam-local | nc -l -p 7777; done";
    let _listener = lab
        .ssh
        .command("alice+exam", &Lab::alice(), &[listen])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    lab.wait_listening("alice", "exam", 7777).await;
    let local = labssh_testkit::process::free_port();
    let spec = format!("{local}:127.0.0.1:7777");
    let forward = lab
        .ssh
        .command_with(
            "alice+exam",
            &Lab::alice(),
            &["-L", &spec],
            &["sleep 5; echo session-alive"],
        )
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut s = connect_when_up(local).await;
    let mut back = Vec::new();
    let _ = tokio::time::timeout(TRY, s.read_to_end(&mut back)).await;
    assert_eq!(String::from_utf8_lossy(&back), "exam-local\n");
    drop(s);
    let out = tokio::time::timeout(TRY, forward.wait_with_output())
        .await
        .expect("the session ends")
        .unwrap();
    assert!(out.status.success());
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_allow_list_opens_what_it_lists_and_nothing_else() {
    let listed = HostAddress::add('a', private(2));
    let other = HostAddress::add('b', private(3));
    let allowed = serve(SocketAddr::from((listed.addr, 0)), "listed").await;
    let unlisted_port = serve(SocketAddr::from((listed.addr, 0)), "listed-other-port").await;
    let unlisted_host = serve(SocketAddr::from((other.addr, 0)), "unlisted").await;
    for (addr, port, greeting) in [
        (listed.addr, allowed, "listed\n"),
        (listed.addr, unlisted_port, "listed-other-port\n"),
        (other.addr, unlisted_host, "unlisted\n"),
    ] {
        assert_eq!(
            host_reads(addr, port).await,
            greeting,
            "control {addr}:{port}"
        );
    }
    let lab = Lab::start(LabOptions {
        catalogue: environment(
            "licensed",
            &format!("[\"{}:{allowed}\", \"192.0.2.0/24\"]", listed.addr),
        ),
        ..Default::default()
    })
    .await;
    let from = |login: &'static str, addr: std::net::Ipv4Addr, port: u16| {
        let lab = &lab;
        async move { reads(lab, login, &Lab::alice(), &addr.to_string(), port).await }
    };
    assert_eq!(
        from("alice+licensed", listed.addr, allowed).await,
        "listed\n"
    );
    assert_eq!(from("alice+licensed", listed.addr, unlisted_port).await, "");
    assert_eq!(from("alice+licensed", other.addr, unlisted_host).await, "");
    // The default policy ("internet") keeps private addresses closed.
    assert_eq!(from("alice", listed.addr, allowed).await, "");
    lab.stop().await;
}
