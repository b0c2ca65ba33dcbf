//! PLACEHOLDER (issue 14, being built): the HTTP (webhook) authenticator.

use russh::keys::PublicKey;
use serde::{Deserialize, Serialize};

use super::chain::{Answer, Request};

/// `[auth.webhook]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// The URL POSTed to.
    pub url: String,
}

impl WebhookConfig {
    /// Every invalid value, each with its key.
    pub fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}

/// An HTTP service.
pub(crate) struct Webhook {}

impl Webhook {
    pub fn new(_config: &WebhookConfig) -> anyhow::Result<Webhook> {
        anyhow::bail!("auth.webhook: not built yet")
    }
    pub fn cache_stamp(&self) -> Option<String> {
        None
    }
    pub async fn password(&self, _request: &Request<'_>, _password: &str) -> Answer {
        Answer::Unavailable("not built".into())
    }
    pub async fn key(&self, _request: &Request<'_>, _key: &PublicKey, _proven: bool) -> Answer {
        Answer::Unavailable("not built".into())
    }
}
