//! The web front door: alice, logged in, reaches none of bob's services by path, by
//! host, by his friendly name or by a name of her own form pointing at his
//! environment; a cookie naming bob with alice's signature opens nothing. A TA of a
//! course (`service_readers`) reads its students' services, GET and HEAD only, and
//! nothing of environments that do not name her group; a page of another site may
//! not post to a student's service. A service alice shares opens to anyone (bob's
//! cookies kept from it) until she unshares it, which also cuts a stranger's open
//! stream, and only she can share it. One address's flood of connections leaves the
//! front door to everyone else.

use std::time::Duration;

use labssh_testkit::ssh::{stderr, stdout};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::lab::browser::{serve_page, Browser};
use crate::lab::{Lab, LabOptions, ALICE_PW, BOB_PW, WEB_DOMAIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alices_browser_never_reaches_bobs_services() {
    let lab = Lab::start(LabOptions::default()).await;
    serve_page(&lab, "bob", "bob-page").await;
    let port = lab.start_web(1).await[0];
    // Bob's own browser reaches it, so the refusals below are refusals.
    let bobs = Browser::new(&lab, "bob");
    assert_eq!(bobs.log_in(port, "bob", BOB_PW).await.status, 303);
    let page = bobs.get(WEB_DOMAIN, port, "/s/8080-bob/", &[]).await;
    assert_eq!(
        (page.status, page.body.trim()),
        (200, "bob-page"),
        "{page:?}"
    );

    let alice = Browser::new(&lab, "alice");
    assert_eq!(alice.log_in(port, "alice", ALICE_PW).await.status, 303);
    for path in [
        "/s/8080-bob/",
        "/s/web-bob/",
        "/s/8080-bob-default/",
        "/s/8080-bob/../8080-alice/",
        "/s/8080-alice-..%2F8080-bob/",
        "/s/8080-ALICE/",
    ] {
        let answer = alice.get(WEB_DOMAIN, port, path, &[]).await;
        assert!(
            matches!(answer.status, 403 | 404),
            "alice got {path}: {answer:?}"
        );
        assert!(
            !answer.body.contains("bob-page"),
            "alice read bob's page by {path}"
        );
    }
    for host in ["8080-bob", "web-bob", "8080-bob-default"] {
        let answer = alice
            .get(&format!("{host}.{WEB_DOMAIN}"), port, "/", &[])
            .await;
        assert_eq!(answer.status, 403, "alice got {host}: {answer:?}");
        assert!(!answer.body.contains("bob-page"));
    }
    // Her portal names nothing of his.
    let portal = alice.get(WEB_DOMAIN, port, "/", &[]).await;
    assert_eq!(portal.status, 200);
    assert!(!portal.body.contains("bob"), "{}", portal.body);
    // Her cookie with bob's name in it, her signature kept: no session at all.
    let jar = std::fs::read_to_string(lab.dir.path().join("alice.cookies")).unwrap();
    let value = jar
        .lines()
        .find(|l| l.contains("labssh_session"))
        .and_then(|l| l.split('\t').nth(6))
        .expect("alice's session in her jar")
        .to_owned();
    let (payload, mac) = value.split_once('.').unwrap();
    let text = String::from_utf8(hex::decode(payload).unwrap()).unwrap();
    let forged = format!(
        "{}.{mac}",
        hex::encode(text.replace("\"alice\"", "\"bob\""))
    );
    let stranger = Browser::new(&lab, "stranger");
    // Her real cookie sent the same way is read (and refused there: bob's).
    let answer = stranger
        .get(
            WEB_DOMAIN,
            port,
            "/s/8080-bob/",
            &["-H", &format!("Cookie: labssh_session={value}")],
        )
        .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let answer = stranger
        .get(
            WEB_DOMAIN,
            port,
            "/s/8080-bob/",
            &["-H", &format!("Cookie: labssh_session={forged}")],
        )
        .await;
    assert_eq!(
        answer.status, 303,
        "a forged cookie opened bob's: {answer:?}"
    );
    assert!(!answer.body.contains("bob-page"));
}

/// The password of carol, a TA of the `course` environment (group `tas`).
const CAROL_PW: &str = "carol-reads-only";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ta_reads_a_courses_services_and_changes_nothing() {
    let lab = Lab::start(LabOptions {
        catalogue: crate::lab::environment_toml("course", "service_readers = [\"tas\"]"),
        ..Default::default()
    })
    .await;
    labssh_proxy::users::add_user_in_groups(
        &lab.users_file,
        "carol",
        Some(CAROL_PW),
        None,
        &["tas".to_owned()],
    )
    .unwrap();
    serve_page(&lab, "bob+course", "bob-page").await;
    serve_page(&lab, "bob", "bob-page").await;
    let port = lab.start_web(1).await[0];
    let carol = Browser::new(&lab, "carol");
    assert_eq!(carol.log_in(port, "carol", CAROL_PW).await.status, 303);

    // The course's service, by path and by host: read.
    let page = carol
        .get(WEB_DOMAIN, port, "/s/8080-bob-course/", &[])
        .await;
    assert_eq!(
        (page.status, page.body.trim()),
        (200, "bob-page"),
        "{page:?}"
    );
    // Under /s/ her view is sandboxed: its scripts cannot act as her.
    assert!(
        page.headers
            .iter()
            .any(|(k, v)| k == "content-security-policy" && v.starts_with("sandbox")),
        "{page:?}"
    );
    let host = format!("8080-bob-course.{WEB_DOMAIN}");
    let page = carol.get(&host, port, "/", &[]).await;
    assert_eq!(
        (page.status, page.body.trim()),
        (200, "bob-page"),
        "{page:?}"
    );
    // Not changed: no POST, no WebSocket.
    let post = carol.get(&host, port, "/", &["-d", "x=1"]).await;
    assert_eq!(post.status, 403, "{post:?}");
    assert!(post.body.contains("not change it"), "{}", post.body);
    let upgrade = carol
        .get(
            &host,
            port,
            "/",
            &[
                // A browser's WebSocket: HTTP/1.1 (the front door offers no
                // WebSocket over HTTP/2).
                "--http1.1",
                "-H",
                "Connection: Upgrade",
                "-H",
                "Upgrade: websocket",
                "-H",
                "Sec-WebSocket-Version: 13",
                "-H",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            ],
        )
        .await;
    assert_eq!(upgrade.status, 403, "{upgrade:?}");
    // Bob's default environment lets no group read: refused, as for anyone.
    for path in ["/s/8080-bob/", "/s/web-bob/"] {
        let answer = carol.get(WEB_DOMAIN, port, path, &[]).await;
        assert_eq!(answer.status, 403, "{path}: {answer:?}");
        assert!(!answer.body.contains("bob-page"));
    }
    // Her portal lists the course's service as one she may read, and only that.
    let portal = carol.get(WEB_DOMAIN, port, "/", &[]).await;
    assert!(portal.body.contains("you may read"), "{}", portal.body);
    assert!(portal.body.contains("8080-bob-course"), "{}", portal.body);
    assert!(
        !portal.body.contains("8080-bob<") && !portal.body.contains("8080-bob."),
        "{}",
        portal.body
    );

    // Alice, in no group, reads nothing of the course; a page of another site may
    // not post to her own service either.
    let alice = Browser::new(&lab, "alice");
    assert_eq!(alice.log_in(port, "alice", ALICE_PW).await.status, 303);
    let answer = alice
        .get(WEB_DOMAIN, port, "/s/8080-bob-course/", &[])
        .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(!answer.body.contains("bob-page"));
    serve_page(&lab, "alice", "alice-page").await;
    let own = format!("8080-alice.{WEB_DOMAIN}");
    let cross = alice
        .get(
            &own,
            port,
            "/",
            &["-d", "x=1", "-H", &format!("Origin: https://{host}:{port}")],
        )
        .await;
    assert_eq!(cross.status, 403, "{cross:?}");
    assert!(cross.body.contains("another site"), "{}", cross.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_service_opens_to_anyone_until_unshared_and_only_its_owner_shares_it() {
    let lab = Lab::start(LabOptions {
        redis: true,
        ..Default::default()
    })
    .await;
    serve_page(&lab, "alice", "alice-page").await;
    let port = lab.start_web(1).await[0];
    let host = format!("8080-alice.{WEB_DOMAIN}");
    let stranger = Browser::new(&lab, "stranger");
    assert_eq!(
        stranger.get(&host, port, "/", &[]).await.status,
        303,
        "private at first"
    );
    let helpdesk = |login: &'static str, command: &'static str| {
        let lab = &lab;
        async move {
            let auth = if login == "alice+" {
                Lab::alice()
            } else {
                Lab::bob()
            };
            let out = lab.ssh.run(login, &auth, &[command]).await.unwrap();
            (out.status.code(), stdout(&out), stderr(&out))
        }
    };
    // Bob cannot share hers, by any name of it.
    for command in ["share 8080-alice", "share web-alice", "unshare 8080-alice"] {
        let (code, _, err) = helpdesk("bob+", command).await;
        assert_ne!(code, Some(0), "bob+ {command}: {err}");
        assert!(err.contains("not a name of your services"), "{err}");
    }
    assert_eq!(stranger.get(&host, port, "/", &[]).await.status, 303);

    let (code, out, err) = helpdesk("alice+", "share 8080-alice").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("8080-alice is public"), "{out}");
    let page = stranger.get(&host, port, "/", &[]).await;
    assert_eq!(
        (page.status, page.body.trim()),
        (200, "alice-page"),
        "{page:?}"
    );
    // Under /s/ a stranger's view is sandboxed.
    let page = stranger.get(WEB_DOMAIN, port, "/s/8080-alice/", &[]).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(
        page.headers
            .iter()
            .any(|(k, v)| k == "content-security-policy" && v.starts_with("sandbox")),
        "{page:?}"
    );
    // Bob, logged in, opens it as a stranger: none of his cookies reach her server.
    let bob = Browser::new(&lab, "bob");
    assert_eq!(bob.log_in(port, "bob", BOB_PW).await.status, 303);
    let env = bob.get(&host, port, "/cgi-bin/env", &[]).await;
    assert_eq!(env.status, 200, "{env:?}");
    assert!(
        !env.body.contains("labssh_"),
        "bob's cookie reached alice: {}",
        env.body
    );
    let (_, listing, _) = helpdesk("alice+", "services").await;
    assert!(
        listing.contains("public (anyone may open them in the browser): 8080-alice"),
        "{listing}"
    );

    // A stranger's open stream (an endless CGI here; a WebSocket alike, both go
    // over one agent stream) is cut once she unshares.
    let ticks = "printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\n\
                 while true; do echo tick; sleep 1; done\\n' > ~/www/cgi-bin/ticks && \
                 chmod +x ~/www/cgi-bin/ticks";
    let out = lab.ssh.run("alice", &Lab::alice(), &[ticks]).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut streaming = stranger.open(&host, port, "/cgi-bin/ticks");
    let mut ticking = BufReader::new(streaming.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let line = tokio::time::timeout(Duration::from_secs(20), ticking.next_line()).await;
        assert_eq!(
            line.expect("a tick in time").unwrap().as_deref(),
            Some("tick")
        );
    }
    assert!(
        streaming.try_wait().unwrap().is_none(),
        "the stream goes on"
    );

    let (code, out, _) = helpdesk("alice+", "unshare 8080-alice").await;
    assert_eq!((code, out.trim()), (Some(0), "8080-alice is private again"));
    let unshared = std::time::Instant::now();
    let cut = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(_)) = ticking.next_line().await {}
    })
    .await;
    assert!(cut.is_ok(), "the stranger's stream outlived the share");
    eprintln!(
        "a stranger's stream was cut {:?} after unshare",
        unshared.elapsed()
    );
    assert_eq!(
        stranger.get(&host, port, "/", &[]).await.status,
        303,
        "still public"
    );
    let answer = bob.get(&host, port, "/", &[]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
}

/// One address holding `web.max_connections_per_address` connections (a browser's
/// or a flood's, here ones that never finish TLS) gets no more, each closed at once;
/// alice, from another address, logs in and opens her service all along; once they
/// close, the address is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_flooding_connections_leaves_the_front_door_to_the_others() {
    use tokio::io::AsyncReadExt;

    let lab = Lab::start(LabOptions::default()).await;
    serve_page(&lab, "alice", "alice-page").await;
    let port = lab
        .start_web_with(1, |c| c.web.max_connections_per_address = 4)
        .await[0];
    let from_flood = || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
    };
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(from_flood().await);
    }
    // Each one more from that address is closed before TLS, at once.
    for _ in 0..3 {
        let mut refused = from_flood().await;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut buf))
            .await
            .expect("closed at once, not left waiting");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let alice = Browser::new(&lab, "alice");
    assert_eq!(alice.log_in(port, "alice", ALICE_PW).await.status, 303);
    let page = alice.get(WEB_DOMAIN, port, "/s/8080-alice/", &[]).await;
    assert_eq!((page.status, page.body.trim()), (200, "alice-page"));
    let flood = Browser::new(&lab, "flood").connecting_from("127.0.0.2");
    assert!(
        flood
            .try_get(WEB_DOMAIN, port, "/login", &[])
            .await
            .is_err(),
        "a fifth connection from the full address was served"
    );

    // Closed, they give their places back.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match flood.try_get(WEB_DOMAIN, port, "/login", &[]).await {
            Ok(form) => {
                assert_eq!(form.status, 200, "{form:?}");
                break;
            }
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
