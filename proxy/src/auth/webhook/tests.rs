use super::*;

fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        url: url.into(),
        ..WebhookConfig::default()
    }
}

#[test]
fn a_password_goes_over_https_only() {
    assert!(config("https://auth.example.edu/x").problems().is_empty());
    assert!(config("http://127.0.0.1:9/x").problems().is_empty());
    let mut c = config("http://auth.example.edu/x");
    c.send_password = true;
    assert!(c.problems()[0].starts_with("auth.webhook.send_password:"));
    c.url = "https://auth.example.edu/x".into();
    assert!(c.problems().is_empty());
}

#[test]
fn bad_values_name_their_key() {
    assert_eq!(config("").problems(), ["auth.webhook.url: must be set"]);
    assert!(config("ftp://x/")
        .problems()
        .iter()
        .any(|p| p.starts_with("auth.webhook.url:")));
    assert!(config("not a url")
        .problems()
        .iter()
        .any(|p| p.starts_with("auth.webhook.url:")));
    let mut c = config("http://x/");
    c.timeout = ConfigDuration(Duration::ZERO);
    c.ca_file = Some("/ca.pem".into());
    let problems = c.problems();
    assert!(
        problems[0].starts_with("auth.webhook.timeout:"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("auth.webhook.ca_file:"),
        "{problems:?}"
    );
}

#[test]
fn the_config_reads_and_writes_its_durations() {
    let c: WebhookConfig = toml::from_str("url = \"https://a/\"\ntimeout = \"2s\"\n").unwrap();
    assert_eq!(c.timeout.0, Duration::from_secs(2));
    let text = toml::to_string(&c).unwrap();
    let again: WebhookConfig = toml::from_str(&text).unwrap();
    assert_eq!(again.timeout, c.timeout);
}

#[test]
fn verdicts_become_answers() {
    let parse = |json: &str| decide(serde_json::from_str(json).unwrap());
    let Answer::Accept(id) =
        parse(r#"{"allow":true,"groups":["cs101","Bad Group"],"uid":7,"environment":"gpu"}"#)
    else {
        panic!("accepted");
    };
    assert_eq!(id.source, "webhook");
    assert_eq!(id.groups, ["cs101"]);
    assert_eq!((id.uid, id.gid), (Some(7), None));
    assert_eq!(id.environment.as_deref(), Some("gpu"));
    assert!(
        matches!(parse(r#"{"allow":false,"message":"no"}"#), Answer::Reject(m) if m.ends_with("no"))
    );
    assert!(matches!(
        parse(r#"{"allow":true,"environment":"../x"}"#),
        Answer::Unavailable(_)
    ));
    assert!(serde_json::from_str::<Verdict>(r#"{"groups":[]}"#).is_err());
}

/// A loopback HTTP server answering every request `status` and `body`
/// after `delay`; the request bodies it got come out of the receiver.
async fn server(
    status: u16,
    body: &'static str,
    delay: Duration,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/auth", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let request = loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).into_owned();
                    if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if rest.len() >= length {
                            break rest.to_owned();
                        }
                    }
                };
                let _ = tx.send(request);
                tokio::time::sleep(delay).await;
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, rx)
}

fn request() -> Request<'static> {
    Request {
        user: "alice",
        environment: Some("gpu"),
        method: "password",
        client: "192.0.2.1:5",
    }
}

#[tokio::test]
async fn an_allowing_answer_gives_its_identity() {
    let (url, mut asked) = server(
        200,
        r#"{"allow":true,"groups":["cs101"],"uid":20001,"gid":20002,"message":"hi"}"#,
        Duration::ZERO,
    )
    .await;
    // https is what a password needs in a config; the client itself
    // posts wherever it is pointed, so a test can use plain http.
    let hook = Webhook {
        send_password: true,
        ..Webhook::new(&config(&url)).unwrap()
    };
    let Answer::Accept(id) = hook.password(&request(), "pw").await else {
        panic!("accepted");
    };
    assert_eq!(id.groups, ["cs101"]);
    assert_eq!((id.uid, id.gid), (Some(20001), Some(20002)));
    let sent: serde_json::Value = serde_json::from_str(&asked.recv().await.unwrap()).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"user": "alice", "environment": "gpu", "method": "password",
                           "client": "192.0.2.1:5", "password": "pw"})
    );
}

#[tokio::test]
async fn failures_and_silence_are_unavailable() {
    for (status, body) in [(500, r#"{"allow":true}"#), (200, "not json"), (302, "")] {
        let (url, _asked) = server(status, body, Duration::ZERO).await;
        let hook = Webhook::new(&config(&url)).unwrap();
        let key = PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGnr8Zs2q3JYsUXtSRu7Q6ibJ2oJL6Uq8fJ7t0U6oZ4V",
        )
        .unwrap();
        let answer = hook.key(&request(), &key, true).await;
        assert!(
            matches!(answer, Answer::Unavailable(_)),
            "{status} {body}: {answer:?}"
        );
    }
    let (url, _asked) = server(200, r#"{"allow":true}"#, Duration::from_secs(30)).await;
    let mut c = config(&url);
    c.timeout = ConfigDuration(Duration::from_millis(200));
    let hook = Webhook {
        send_password: true,
        ..Webhook::new(&c).unwrap()
    };
    let answer = hook.password(&request(), "pw").await;
    assert!(
        matches!(&answer, Answer::Unavailable(why) if why.contains("did not answer")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn nobody_listening_is_unavailable() {
    let hook = Webhook::new(&config("http://127.0.0.1:1/auth")).unwrap();
    let request = Request {
        user: "alice",
        environment: None,
        method: "publickey",
        client: "192.0.2.1:5",
    };
    let key = PublicKey::from_openssh(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGnr8Zs2q3JYsUXtSRu7Q6ibJ2oJL6Uq8fJ7t0U6oZ4V",
    )
    .unwrap();
    assert!(matches!(
        hook.key(&request, &key, true).await,
        Answer::Unavailable(_)
    ));
    assert!(matches!(
        hook.key(&request, &key, false).await,
        Answer::Accept(_)
    ));
    // Without send_password, passwords are not the webhook's.
    assert_eq!(hook.password(&request, "pw").await, Answer::Unknown);
}
