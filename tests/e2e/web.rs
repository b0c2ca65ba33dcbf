//! The HTTPS front door (`labssh web`) with the real curl: a login with the SSH
//! password (the form's token required), then alice's busybox httpd in her container
//! by path (`/s/8080-alice/`) and by host (`8080-alice.lab.test`), on either of two
//! replicas with one cookie; what the service is sent (no labssh cookie, our
//! `X-Forwarded-*`); the portal listing it; logout. Bob's side: tests/tenants/web.rs.

use crate::lab::browser::{serve_page, wait_listed, Browser};
use crate::lab::{Lab, LabOptions, ALICE_PW, WEB_DOMAIN};
use labssh_testkit::netns::Island;

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

/// Where the browser test's screenshots are kept.
fn artifact(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Debian's chromedriver, and the chromium it starts, in a network namespace of
/// their own ([`Island`]: chromium drops requests in flight, `ERR_NETWORK_CHANGED`,
/// whenever Docker adds an address on the host for another test's container),
/// reaching the front door at `front`; until dropped. The port WebDriver is reached
/// at from here.
async fn chromedriver(front: u16) -> (tokio::process::Child, u16) {
    const DRIVER: u16 = 9515;
    let island = Island::new().expect("a network namespace for chromium (run as root)");
    island.reach(front).unwrap();
    let child = island
        .command("chromedriver")
        .arg(format!("--port={DRIVER}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver runs (apt-get install chromium-driver)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let probe = island.clone();
        let up = tokio::task::spawn_blocking(move || {
            probe.within(|| std::net::TcpStream::connect(("127.0.0.1", DRIVER)))
        })
        .await
        .unwrap();
        if up.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chromedriver never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    (child, island.expose(DRIVER).await.unwrap())
}

/// Waits until `script` (a JavaScript expression) is true in the page.
async fn until_true(browser: &fantoccini::Client, script: &str, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let value = browser
            .execute(&format!("return !!({script});"), Vec::new())
            .await
            .unwrap();
        if value == serde_json::Value::Bool(true) {
            return;
        }
        if std::time::Instant::now() >= deadline {
            let url = browser.current_url().await.map(|u| u.to_string());
            let text = browser
                .execute(
                    "return document.body ? document.body.innerText : '';",
                    Vec::new(),
                )
                .await
                .unwrap_or_default();
            panic!("{what}: at {url:?}, the page says {text}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browser_logs_in_opens_alices_server_and_its_websocket_echoes() {
    tokio::task::spawn_blocking(labssh_testkit::docker::ensure_debian_image)
        .await
        .unwrap()
        .expect("the Debian test image");
    let lab = Lab::start(LabOptions::default()).await;
    // Her servers in her Debian container: python3's http.server and a WebSocket echo.
    let mut copy = lab
        .ssh
        .command("alice+debian", &Lab::alice(), &["cat > ~/echo.py"]);
    copy.stdin(std::process::Stdio::piped());
    let mut child = copy.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(include_bytes!("web_echo.py"))
            .await
            .unwrap();
    }
    assert!(child.wait().await.unwrap().success());
    let start = "cd ~ && echo alice-file > notes.txt && \
                 setsid -f python3 -m http.server 8000 >/dev/null 2>&1 && \
                 setsid -f python3 echo.py >/dev/null 2>&1";
    let out = lab
        .ssh
        .run("alice+debian", &Lab::alice(), &[start])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    wait_listed(
        &lab,
        &["8000-alice-debian", "8765-alice-debian"],
        std::time::Duration::from_secs(60),
    )
    .await;
    let port = lab.start_web(1).await[0];
    let (_driver, driver_port) = chromedriver(port).await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("acceptInsecureCerts".into(), true.into());
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1100,800",
                format!("--host-resolver-rules=MAP {WEB_DOMAIN} 127.0.0.1, MAP *.{WEB_DOMAIN} 127.0.0.1"),
                format!("--user-data-dir={}", lab.dir.path().join("chromium").display()),
            ],
        }),
    );
    let browser =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .expect("a chromium session");
    use fantoccini::Locator;

    // The portal sends her to the login form; she logs in with her SSH password.
    browser
        .goto(&format!("https://{WEB_DOMAIN}:{port}/"))
        .await
        .unwrap();
    let user = browser
        .wait()
        .for_element(Locator::Id("user"))
        .await
        .unwrap();
    user.send_keys("alice").await.unwrap();
    browser
        .find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(ALICE_PW)
        .await
        .unwrap();
    browser
        .find(Locator::Id("login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_true(
        &browser,
        "document.querySelector('a.service[href*=\"8000-alice-debian\"]')",
        "the portal never listed 8000-alice-debian",
    )
    .await;
    let portal = browser.screenshot().await.unwrap();
    std::fs::write(artifact("portal.png"), &portal).unwrap();
    assert!(portal.starts_with(b"\x89PNG"), "a screenshot");

    // Her http.server, through the link.
    browser
        .find(Locator::Css("a.service[href*=\"8000-alice-debian\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_true(
        &browser,
        "document.body && document.body.innerText.includes('notes.txt')",
        "her directory listing never showed",
    )
    .await;
    std::fs::write(artifact("service.png"), browser.screenshot().await.unwrap()).unwrap();

    // The WebSocket echo: the page's socket opens through the front door and back.
    browser
        .goto(&format!("https://8765-alice-debian.{WEB_DOMAIN}:{port}/"))
        .await
        .unwrap();
    until_true(
        &browser,
        "document.getElementById('out') && document.getElementById('out').textContent == 'echo: hello'",
        "the WebSocket never echoed",
    )
    .await;
    std::fs::write(
        artifact("websocket.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();
    println!("web: screenshots in {}", artifact("").display());
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_passwords_in_the_browser_count_against_ssh_too() {
    let lab = Lab::start(LabOptions {
        redis: true,
        rate_limit: Some(labssh_proxy::rate_limit::RateLimitConfig {
            max_failures_per_user: 3,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let port = lab.start_web(1).await[0];
    let browser = Browser::new(&lab, "guesser");
    for _ in 0..3 {
        let wrong = browser.log_in(port, "bob", "a-guess").await;
        assert_eq!(wrong.status, 401, "{wrong:?}");
    }
    // Bob's right password from that address, by SSH: the same limiter said no.
    let out = lab.ssh.run("bob", &Lab::bob(), &["true"]).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(255),
        "bob logged in by SSH after three browser guesses from his address"
    );
    // And in the browser.
    let right = browser.log_in(port, "bob", crate::lab::BOB_PW).await;
    assert_eq!(right.status, 401, "{right:?}");
}

/// Two front doors behind the real HAProxy (`send-proxy-v2`), as
/// deploy/haproxy/haproxy.cfg puts them: each learns the browser's own address
/// (127.0.0.2 here, where HAProxy connects from 127.0.0.1), sends it on as
/// X-Forwarded-For on both, and a connection straight to a replica without the
/// balancer's header is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_haproxy_the_front_door_sees_the_browsers_own_address() {
    use labssh_testkit::process::{free_port, Proc};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let lab = Lab::start(LabOptions {
        proxy: Some(crate::audit::audit_beside_users),
        ..LabOptions::default()
    })
    .await;
    serve_page(&lab, "alice", "alice-page").await;
    let replicas = lab
        .start_web_with(2, |c| {
            c.proxy_protocol.trusted = vec!["127.0.0.1/32".into()];
            c.proxy_protocol.required = true;
        })
        .await;
    let port = free_port();
    let dir = lab.dir.path();
    let cfg = dir.join("haproxy-web.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
             frontend web\n  bind 127.0.0.1:{port}\n  default_backend doors\n\
             backend doors\n  balance roundrobin\n\
             \x20 server w0 127.0.0.1:{} send-proxy-v2\n  server w1 127.0.0.1:{} send-proxy-v2\n",
            replicas[0], replicas[1]
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&cfg);
    let mut haproxy =
        Proc::start("haproxy-web", cmd, dir).expect("haproxy (apt-get install haproxy)");
    haproxy
        .wait_port(port, std::time::Duration::from_secs(10))
        .unwrap();

    let browser = Browser::new(&lab, "alice").connecting_from("127.0.0.2");
    let answer = browser.log_in(port, "alice", ALICE_PW).await;
    assert_eq!(answer.status, 303, "{answer:?}");
    // Round robin: these four requests reach both replicas.
    for _ in 0..4 {
        let env = browser
            .get(WEB_DOMAIN, port, "/s/8080-alice/cgi-bin/env", &[])
            .await;
        assert_eq!(env.status, 200, "{env:?}");
        assert!(
            env.body
                .lines()
                .any(|l| l == "HTTP_X_FORWARDED_FOR=127.0.0.2"),
            "not the browser's address: {}",
            env.body
        );
    }
    // The login is logged under the browser's address, not HAProxy's.
    let login = crate::audit::wait_for(&lab, "web_login", |e| e["user"] == "alice").await;
    assert!(
        login["client"].as_str().unwrap().starts_with("127.0.0.2:"),
        "{login}"
    );

    // Straight to a replica, without a header: a TLS hello is answered by a close.
    let mut direct = tokio::net::TcpStream::connect(("127.0.0.1", replicas[0]))
        .await
        .unwrap();
    direct
        .write_all(b"\x16\x03\x01\x00\x05hello")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), direct.read(&mut buf))
        .await
        .expect("the replica closes at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    drop(haproxy);
}
