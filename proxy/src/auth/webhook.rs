//! The HTTP (webhook) authenticator: an operator's service decides logins.
//!
//! ```toml
//! [auth.webhook]
//! url = "https://auth.example.edu/labssh"
//! timeout = "5s"                      # default 5s, at most 60s
//! ca_file = "/etc/labssh/auth-ca.pem" # optional: the only root trusted
//! send_password = true                # default false; needs https://
//! ```
//!
//! For each attempt it asks, the proxy POSTs JSON (`Content-Type:
//! application/json`):
//!
//! ```json
//! {"user": "alice", "environment": "gpu", "method": "publickey",
//!  "client": "192.0.2.7:50312",
//!  "public_key": "ssh-ed25519 AAAAC3Nz...",
//!  "password": "only with send_password"}
//! ```
//!
//! - `environment` is the one the login name asks for (`alice+gpu`), or
//!   `null`;
//! - `method` is `password`, `keyboard-interactive` or `publickey`;
//! - `client` is the client's address and port (the PROXY header's behind
//!   a balancer);
//! - `public_key` (an OpenSSH public key line) only for key logins, and
//!   only once the client proved it holds the key;
//! - `password` only when `send_password = true`, which needs an `https://`
//!   URL. Without it the webhook is not asked about passwords at all (it
//!   could not check them): it decides key logins only.
//!
//! It answers `2xx` with JSON:
//!
//! ```json
//! {"allow": true, "groups": ["cs101"], "uid": 20001, "gid": 20001,
//!  "environment": "cs101", "message": "for the log"}
//! ```
//!
//! Only `allow` is required. `groups` are added to the student's identity
//! (invalid names are dropped), `uid`/`gid` are the ids for environments
//! with `uid = "ldap"`, `environment` overrides the one the student asked
//! for, `message` is logged (never shown: SSH has no way to show it). With
//! `allow: false` the attempt is refused as a wrong credential (counted by
//! the brute-force limits). A timeout, a refused connection, a status other
//! than 2xx, or a body that is not this JSON make the webhook *unavailable*:
//! the student reads "the login service is unavailable", and the attempt is
//! not counted against them. Redirects are not followed (a password must go
//! nowhere but `url`).
//!
//! Key offers (before the client proves it holds the key) are not sent: the
//! webhook is asked once per key login, and never about a key someone
//! merely names. So with a webhook in the chain every offered key is
//! answered "go on"; a client whose key the webhook refuses has signed for
//! nothing, nothing more.
//!
//! Passwords the webhook accepts are kept by the credential cache like any
//! authenticator's (its stamp is the URL), and pass the same brute-force
//! limits, in front of the whole chain.

use std::path::PathBuf;
use std::time::Duration;

use labssh_proto::duration::ConfigDuration;
use russh::keys::PublicKey;
use serde::{Deserialize, Serialize, Serializer};

use super::chain::{Answer, Request};
use super::identity::Identity;

/// The name in `auth.chain` and identities.
pub(crate) const NAME: &str = "webhook";
/// A login waits this long at most for the webhook: long enough for a
/// service that asks a directory itself, short against the client's own
/// patience.
pub const DEFAULT_TIMEOUT: ConfigDuration = ConfigDuration(Duration::from_secs(5));
/// Longer and the student's client (and russh's login grace) gives up first.
pub const MAX_TIMEOUT: ConfigDuration = ConfigDuration(Duration::from_secs(60));
/// An answer is a few hundred bytes; one larger than this is not one.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// `[auth.webhook]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// The URL POSTed to, `https://` (or `http://` without `send_password`).
    pub url: String,
    /// How long one call may take, connecting included.
    #[serde(serialize_with = "as_text")]
    pub timeout: ConfigDuration,
    /// PEM certificates: when set, the only roots trusted for `url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Whether password logins are sent, with the password.
    pub send_password: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            timeout: DEFAULT_TIMEOUT,
            ca_file: None,
            send_password: false,
        }
    }
}

fn as_text<S: Serializer>(d: &ConfigDuration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.to_string())
}

impl WebhookConfig {
    /// Every invalid value, each with its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let scheme = match reqwest::Url::parse(&self.url) {
            _ if self.url.is_empty() => {
                problems.push("auth.webhook.url: must be set".into());
                None
            }
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                Some(url.scheme().to_owned())
            }
            Ok(_) => {
                problems.push(format!(
                    "auth.webhook.url: {:?} is not an http:// or https:// URL",
                    self.url
                ));
                None
            }
            Err(e) => {
                problems.push(format!("auth.webhook.url: {:?}: {e}", self.url));
                None
            }
        };
        if self.send_password && scheme.as_deref() != Some("https") {
            problems.push(
                "auth.webhook.send_password: needs an https:// url, a password must not cross the network in clear"
                    .into(),
            );
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            problems.push(format!(
                "auth.webhook.timeout: {} is not more than 0s and at most {MAX_TIMEOUT}",
                self.timeout
            ));
        }
        if let Some(ca) = &self.ca_file {
            if ca.as_os_str().is_empty() {
                problems.push("auth.webhook.ca_file: must not be empty".into());
            } else if scheme.as_deref() == Some("http") {
                problems.push("auth.webhook.ca_file: set, but the url is not https://".into());
            }
        }
        problems
    }
}

/// What the proxy sends.
#[derive(Debug, Serialize)]
struct Ask<'a> {
    user: &'a str,
    environment: Option<&'a str>,
    method: &'a str,
    client: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
}

/// What the webhook answers.
#[derive(Debug, Deserialize)]
struct Verdict {
    allow: bool,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// An HTTP service deciding logins. Lives as long as the replica.
pub(crate) struct Webhook {
    /// `auth.webhook.url`.
    url: String,
    /// `auth.webhook.timeout`.
    timeout: Duration,
    /// `auth.webhook.send_password`.
    send_password: bool,
    /// Its own connection pool, roots and timeouts.
    client: reqwest::Client,
}

impl Webhook {
    /// The client `config` describes; a `ca_file` that cannot be read is an
    /// error naming the key.
    pub fn new(config: &WebhookConfig) -> anyhow::Result<Webhook> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("labssh-proxy/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout.0)
            .use_rustls_tls();
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("auth.webhook.ca_file: {}: {e}", path.display()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("auth.webhook.ca_file: {}: {e}", path.display()))?;
            if roots.is_empty() {
                anyhow::bail!(
                    "auth.webhook.ca_file: {}: no PEM certificate in it",
                    path.display()
                );
            }
            builder = builder.tls_built_in_root_certs(false);
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        Ok(Webhook {
            url: config.url.clone(),
            timeout: config.timeout.0,
            send_password: config.send_password,
            client: builder
                .build()
                .map_err(|e| anyhow::anyhow!("auth.webhook: {e}"))?,
        })
    }

    /// Accepted passwords are cached against the URL: pointing the proxy at
    /// another service drops them.
    pub fn cache_stamp(&self) -> Option<String> {
        Some(self.url.clone())
    }

    /// A password: sent only with `send_password`, else not this
    /// authenticator's to decide.
    pub async fn password(&self, request: &Request<'_>, password: &str) -> Answer {
        if !self.send_password {
            return Answer::Unknown;
        }
        self.ask(request, None, Some(password)).await
    }

    /// A key: offers are let through unasked, proven keys are asked (see
    /// the module's docs).
    pub async fn key(&self, request: &Request<'_>, key: &PublicKey, proven: bool) -> Answer {
        if !proven {
            return Answer::Accept(Identity::from(NAME));
        }
        let line = match key.to_openssh() {
            Ok(line) => line,
            Err(e) => return Answer::Unavailable(format!("the key cannot be written out: {e}")),
        };
        self.ask(request, Some(line), None).await
    }

    /// One call.
    async fn ask(
        &self,
        request: &Request<'_>,
        public_key: Option<String>,
        password: Option<&str>,
    ) -> Answer {
        let ask = Ask {
            user: request.user,
            environment: request.environment,
            method: request.method,
            client: request.client,
            public_key,
            password,
        };
        let call = async {
            let mut answer = self
                .client
                .post(&self.url)
                .json(&ask)
                .send()
                .await
                .map_err(|e| format!("the webhook could not be reached ({})", cause(&e)))?;
            let status = answer.status();
            if !status.is_success() {
                return Err(format!("the webhook answered {status}"));
            }
            let mut body = Vec::new();
            while let Some(chunk) = answer
                .chunk()
                .await
                .map_err(|e| format!("the webhook's answer broke off ({})", cause(&e)))?
            {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(format!(
                        "the webhook's answer is over {MAX_ANSWER_BYTES} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            serde_json::from_slice::<Verdict>(&body)
                .map_err(|e| format!("the webhook's answer is not the expected JSON ({e})"))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Answer::Unavailable(format!(
                "the webhook did not answer within {:?}",
                self.timeout
            )),
            Ok(Err(why)) => Answer::Unavailable(why),
            Ok(Ok(verdict)) => decide(verdict),
        }
    }
}

/// An answer's verdict as the chain's answer.
fn decide(verdict: Verdict) -> Answer {
    let message = verdict
        .message
        .as_deref()
        .map(|m| format!(": {}", m.escape_debug()))
        .unwrap_or_default();
    if !verdict.allow {
        return Answer::Reject(format!("the webhook denied{message}"));
    }
    let mut identity = Identity::from(NAME);
    if let Some(environment) = verdict.environment {
        if !crate::login_name::valid_environment(&environment) {
            return Answer::Unavailable(format!(
                "the webhook's environment {:?} is not a valid name",
                environment.escape_debug().to_string()
            ));
        }
        identity.environment = Some(environment);
    }
    identity.add_groups(verdict.groups);
    identity.uid = verdict.uid;
    identity.gid = verdict.gid;
    if !message.is_empty() {
        tracing::info!("the webhook allowed{message}");
    }
    Answer::Accept(identity)
}

/// The innermost cause of `e`: "connection refused" rather than "error
/// sending request".
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

#[cfg(test)]
mod tests {
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
}
