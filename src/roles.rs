//! Running one role from its configuration file.

use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::signals::shutdown_signal;

async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{what}: cannot listen on {addr}"))
}

/// Serves `/metrics`, `/healthz` and `/readyz` on the config's `http`
/// address, if any, until the process exits; ready once the role's own
/// listener is bound.
async fn http(addr: &str, key: &str) -> anyhow::Result<()> {
    if addr.is_empty() {
        return Ok(());
    }
    let listener = bind(addr, key).await?;
    let health = labssh_telemetry::Health::new();
    health.set_ready(true);
    tokio::spawn(async move {
        if let Err(e) =
            labssh_telemetry::http::serve(listener, health, std::future::pending()).await
        {
            tracing::warn!("http listener failed: {e:#}");
        }
    });
    Ok(())
}

pub async fn proxy(path: &Path) -> anyhow::Result<()> {
    let config = labssh_proxy::Config::load(path)?;
    let listener = bind(&config.listen, "listen").await?;
    http(&config.http, "http").await?;
    labssh_proxy::run(listener, config, shutdown_signal()).await
}

/// `labssh web`: the HTTPS front door of a proxy config's `[web]`, with its
/// authenticators, limits and controller; no SSH.
pub async fn web(path: &Path) -> anyhow::Result<()> {
    let config = labssh_proxy::Config::load(path)?;
    let listener = bind(&config.web.listen, "web.listen").await?;
    http(&config.web.http, "web.http").await?;
    labssh_proxy::web::run(listener, config, shutdown_signal()).await
}

pub async fn controller(path: &Path) -> anyhow::Result<()> {
    let config = labssh_controller::Config::load(path)?;
    let listener = bind(&config.listen.to_string(), "listen").await?;
    http(&config.http, "http").await?;
    Ok(labssh_controller::run(listener, config, shutdown_signal()).await?)
}

pub async fn agent(path: &Path) -> anyhow::Result<()> {
    let config = labssh_agent::Config::load(path)?;
    let listener = bind(&config.listen, "listen").await?;
    http(&config.http, "http").await?;
    Ok(labssh_agent::run(listener, config, shutdown_signal()).await?)
}
