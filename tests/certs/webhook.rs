//! The webhook authenticator against a small https service made in the test: it
//! allows, denies, overrides the environment, times out and fails, and the
//! credential cache and brute-force limits stand in front of it as for every
//! authenticator.

use std::sync::Arc;
use std::time::Duration;

use labssh_proto::duration::ConfigDuration;
use labssh_proxy::config::auth::{AuthConfig, AuthenticatorKind, WebhookConfig};
use labssh_proxy::rate_limit::RateLimitConfig;
use labssh_testkit::ssh::{stderr, stdout, Auth};
use labssh_testkit::webhook::{Reply, Request, WebhookServer};
use serde_json::json;

use crate::lab::{Lab, LabOptions};

/// The proxy waits this long for the webhook.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The service's password for every account it allows.
const PASSWORD: &str = "hook-password";

/// The service: by user, and for passwords by `PASSWORD`.
fn script(request: &Request) -> Reply {
    let ask = request.json();
    let user = ask["user"].as_str().unwrap_or("");
    let password_ok = match ask["method"].as_str() {
        Some("publickey") => ask["public_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("ssh-ed25519 ")),
        _ => ask["password"] == PASSWORD,
    };
    match user {
        "slow" => Reply {
            delay: TIMEOUT * 5,
            ..Reply::json(json!({"allow": true}))
        },
        "broken" => Reply {
            status: 500,
            ..Reply::json(json!({"error": "oops"}))
        },
        "garbled" => Reply {
            body: "<html>not json</html>".into(),
            ..Reply::json(json!({}))
        },
        "wanda" | "kim" if password_ok => Reply::json(json!({
            "allow": true, "groups": ["cs101"], "uid": 20001, "gid": 20001,
        })),
        "otto" if password_ok => Reply::json(json!({"allow": true, "environment": "open"})),
        _ => Reply::json(json!({"allow": false, "message": "not in the class list"})),
    }
}

/// The lab, its webhook, and the directory of the webhook's CA file (kept as long).
async fn lab_with_hook(limits: Option<RateLimitConfig>) -> (Lab, WebhookServer, tempfile::TempDir) {
    let hook = WebhookServer::scripted("/auth", Arc::new(script), true).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("hook-ca.pem");
    std::fs::write(&ca_file, hook.ca_pem.as_deref().unwrap()).unwrap();
    let auth = AuthConfig {
        chain: Some(vec![
            AuthenticatorKind::UsersFile,
            AuthenticatorKind::Webhook,
        ]),
        webhook: Some(WebhookConfig {
            url: hook.url.clone(),
            timeout: ConfigDuration(TIMEOUT),
            ca_file: Some(ca_file),
            send_password: true,
        }),
        ..AuthConfig::default()
    };
    let lab = Lab::start(LabOptions {
        proxy_auth: Some(auth),
        rate_limit: limits,
        ..Default::default()
    })
    .await;
    (lab, hook, dir)
}

fn password(p: &str) -> Auth {
    Auth::Password(p.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_webhook_allows_denies_and_overrides() {
    let (lab, mut hook, _dir) = lab_with_hook(None).await;

    let out = lab
        .ssh
        .run("wanda", &password(PASSWORD), &["echo in"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
    let asked = hook
        .next(Duration::from_secs(5))
        .await
        .expect("the webhook was asked");
    let ask = asked.json();
    assert_eq!(ask["user"], "wanda");
    assert_eq!(ask["method"], "password");
    assert_eq!(ask["password"], PASSWORD);
    assert!(
        ask["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{ask}"
    );
    assert!(ask["public_key"].is_null());
    assert!(asked.head.starts_with("POST /auth "), "{}", asked.head);

    // Denied: a plain "Permission denied".
    let out = lab
        .ssh
        .run("wanda", &password("wrong"), &["echo in"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let out = lab
        .ssh
        .run("mallory", &password(PASSWORD), &["echo in"])
        .await
        .unwrap();
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );

    // The users file still comes first; the webhook is not asked for alice.
    hook.taken_now();
    let out = lab
        .ssh
        .run("alice", &Lab::alice(), &["echo in"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
    assert!(hook.taken_now().is_empty(), "alice is the users file's");

    // The answer's environment overrides the login's: otto lands in `open`.
    let out = lab
        .ssh
        .run("otto", &password(PASSWORD), &["echo in"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
    assert!(
        lab.container_id("otto", "open").is_some(),
        "otto's open container"
    );
    assert!(
        lab.container_id("otto", "default").is_none(),
        "no default container"
    );

    // A key login: the proven key is sent, never a password.
    let (key, public) = lab.ssh.keygen("kim").unwrap();
    hook.taken_now();
    let out = lab
        .ssh
        .run("kim", &Auth::Key(key), &["echo in"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
    let asks: Vec<_> = hook.taken_now().iter().map(Request::json).collect();
    assert_eq!(asks.len(), 1, "one call per key login: {asks:?}");
    assert_eq!(asks[0]["method"], "publickey");
    let sent = asks[0]["public_key"].as_str().unwrap();
    assert_eq!(sent.split(' ').nth(1), public.split(' ').nth(1), "{sent}");
    assert!(asks[0].get("password").is_none(), "{}", asks[0]);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_that_hangs_or_fails_is_unavailable() {
    let (lab, _hook, _dir) = lab_with_hook(None).await;
    for user in ["slow", "broken", "garbled"] {
        let started = std::time::Instant::now();
        // LogLevel INFO (the client's default) shows keyboard-interactive's text.
        let out = labssh_testkit::ssh::output(lab.ssh.command_with(
            user,
            &Auth::KeyboardInteractive(PASSWORD.into()),
            &["-o", "LogLevel=INFO"],
            &["echo in"],
        ))
        .await
        .expect("ssh ends (bounded by the helper's own timeout)");
        assert_eq!(out.status.code(), Some(255), "{user}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("the login service is unavailable; try again in a minute"),
            "{user}: {}",
            stderr(&out)
        );
        // Not a timing assertion on speed: only that the proxy's own bound held
        // (the slow service answers after 5 × the timeout).
        assert!(
            started.elapsed() < TIMEOUT * 5,
            "{user} waited for the service"
        );
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_and_the_limits_stand_in_front_of_the_webhook() {
    let limits = RateLimitConfig {
        max_failures_per_address: 0,
        max_failures_per_user: 3,
        window_secs: 600,
        exempt_addresses: Vec::new(),
    };
    let (lab, mut hook, _dir) = lab_with_hook(Some(limits)).await;

    // A validated password is cached: the second login does not call the webhook.
    for round in 0..2 {
        let out = lab
            .ssh
            .run("wanda", &password(PASSWORD), &["echo in"])
            .await
            .unwrap();
        assert_eq!(stdout(&out), "in\n", "round {round}: {}", stderr(&out));
    }
    assert_eq!(hook.taken_now().len(), 1, "one call for two logins");

    // Denials count as failures: past the limit the webhook is not even asked,
    // and the right password is refused too (from this address).
    for _ in 0..5 {
        let out = lab
            .ssh
            .run("kim", &password("guess"), &["echo in"])
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(255));
    }
    assert_eq!(
        hook.taken_now().len(),
        3,
        "asked until the limit, then blocked"
    );
    let out = lab
        .ssh
        .run("kim", &password(PASSWORD), &["echo in"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "blocked: {}", stdout(&out));
    assert!(hook.taken_now().is_empty());
    // Another user from the same address is not.
    let out = lab
        .ssh
        .run("otto", &password(PASSWORD), &["echo in"])
        .await
        .unwrap();
    assert_eq!(stdout(&out), "in\n", "{}", stderr(&out));
    lab.stop().await;
}
