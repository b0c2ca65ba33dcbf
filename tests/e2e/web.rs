//! The HTTPS front door (`labssh web`) with the real curl: a login with the SSH
//! password (the form's token required), then alice's busybox httpd in her container
//! by path (`/s/8080-alice/`) and by host (`8080-alice.lab.test`), on either of two
//! replicas with one cookie; what the service is sent (no labssh cookie, our
//! `X-Forwarded-*`); the portal listing it; logout. Bob's side: tests/tenants/web.rs.

use crate::lab::browser::{serve_page, Browser};
use crate::lab::{Lab, LabOptions, ALICE_PW, WEB_DOMAIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alice_reaches_her_server_through_the_front_door_on_either_replica() {
    let lab = Lab::start(LabOptions::default()).await;
    serve_page(&lab, "alice", "alice-page").await;
    let ports = lab.start_web(2).await;
    let (one, two) = (ports[0], ports[1]);
    let browser = Browser::new(&lab, "alice");

    // Not logged in: to the login form, which comes back here afterwards.
    let answer = browser.get(WEB_DOMAIN, one, "/s/8080-alice/", &[]).await;
    assert_eq!(answer.status, 303, "{answer:?}");
    let location = answer.header("location").unwrap();
    assert!(
        location.starts_with(&format!(
            "https://{WEB_DOMAIN}:{one}/login?next=https%3A%2F%2F"
        )),
        "{location}"
    );
    let host = format!("8080-alice.{WEB_DOMAIN}");
    let answer = browser.get(&host, one, "/", &[]).await;
    assert_eq!(answer.status, 303, "{answer:?}");

    // A post without the form's token is refused, whatever the password.
    let forged = browser
        .get(
            WEB_DOMAIN,
            one,
            "/login",
            &["-d", &format!("user=alice&password={ALICE_PW}")],
        )
        .await;
    assert_eq!(forged.status, 403, "{forged:?}");
    let wrong = browser.log_in(one, "alice", "not-her-password").await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert!(
        wrong.body.contains("wrong name or password"),
        "{}",
        wrong.body
    );
    let answer = browser.log_in(one, "alice", ALICE_PW).await;
    assert_eq!(
        (answer.status, answer.header("location")),
        (303, Some("/")),
        "{answer:?}"
    );
    let cookie = answer
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with("labssh_session="))
        .map(|(_, v)| v.clone())
        .expect("a session cookie");
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        &format!("Domain={WEB_DOMAIN}"),
    ] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }

    // Her server, by path and by host, on both replicas: one cookie for all.
    for port in [one, two] {
        let page = browser.get(WEB_DOMAIN, port, "/s/8080-alice/", &[]).await;
        assert_eq!(
            (page.status, page.body.trim()),
            (200, "alice-page"),
            "{page:?}"
        );
        let page = browser.get(&host, port, "/", &[]).await;
        assert_eq!(
            (page.status, page.body.trim()),
            (200, "alice-page"),
            "{page:?}"
        );
    }
    // The friendly name names the same port.
    let page = browser
        .get(&format!("web-alice.{WEB_DOMAIN}"), one, "/", &[])
        .await;
    assert_eq!(
        (page.status, page.body.trim()),
        (200, "alice-page"),
        "{page:?}"
    );
    // `/s/NAME` without its slash goes below it, so relative links resolve there.
    let bare = browser.get(WEB_DOMAIN, one, "/s/8080-alice", &[]).await;
    assert_eq!(
        (bare.status, bare.header("location")),
        (303, Some("/s/8080-alice/"))
    );

    // What the service is sent: her own cookie, none of labssh's; our X-Forwarded-*.
    let env = browser
        .get(
            WEB_DOMAIN,
            one,
            "/s/8080-alice/cgi-bin/env",
            &["-H", "X-Forwarded-For: 6.6.6.6", "-H", "Cookie: theme=dark"],
        )
        .await;
    assert_eq!(env.status, 200, "{env:?}");
    assert!(
        !env.body.contains("labssh_"),
        "a labssh cookie reached the container: {}",
        env.body
    );
    for line in [
        "HTTP_X_FORWARDED_PROTO=https",
        "HTTP_X_FORWARDED_FOR=127.0.0.1",
        "HTTP_X_FORWARDED_PREFIX=/s/8080-alice",
    ] {
        assert!(
            env.body.lines().any(|l| l == line),
            "{line} not in {}",
            env.body
        );
    }
    assert!(
        env.body.contains("theme=dark"),
        "her own cookie was lost: {}",
        env.body
    );
    assert!(
        !env.body.contains("6.6.6.6"),
        "the browser's X-Forwarded-For was believed"
    );

    // The portal lists it with its links; nothing unknown is found.
    let portal = browser.get(WEB_DOMAIN, one, "/", &[]).await;
    assert_eq!(portal.status, 200, "{portal:?}");
    assert!(
        portal
            .body
            .contains(&format!("href=\"https://8080-alice.{WEB_DOMAIN}:{one}/\"")),
        "{}",
        portal.body
    );
    let missing = browser.get(WEB_DOMAIN, one, "/s/9999-alice/", &[]).await;
    assert_eq!(missing.status, 404, "{missing:?}");

    // Logout: the form's token required, then the cookie is gone.
    let token = portal
        .body
        .split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a form token")
        .to_owned();
    let refused = browser
        .get(WEB_DOMAIN, one, "/logout", &["-d", "token=forged"])
        .await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let out = browser
        .get(
            WEB_DOMAIN,
            one,
            "/logout",
            &["-d", &format!("token={token}")],
        )
        .await;
    assert_eq!(out.status, 303, "{out:?}");
    let after = browser.get(WEB_DOMAIN, two, "/s/8080-alice/", &[]).await;
    assert_eq!(after.status, 303, "logged out, yet: {after:?}");
}
