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
mod tests;
