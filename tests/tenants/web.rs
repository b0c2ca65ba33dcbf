//! The web front door: alice, logged in, reaches none of bob's services by path, by
//! host, by his friendly name or by a name of her own form pointing at his
//! environment; a cookie naming bob with alice's signature opens nothing.

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
