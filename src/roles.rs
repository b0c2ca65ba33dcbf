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

pub async fn proxy(path: &Path) -> anyhow::Result<()> {
    let config = labssh_proxy::Config::load(path)?;
    let listener = bind(&config.listen, "listen").await?;
    labssh_proxy::run(listener, config, shutdown_signal()).await
}

pub async fn controller(path: &Path) -> anyhow::Result<()> {
    let config = labssh_controller::Config::load(path)?;
    let listener = bind(&config.listen.to_string(), "listen").await?;
    labssh_controller::run(listener, config, shutdown_signal()).await
}

pub async fn agent(path: &Path) -> anyhow::Result<()> {
    let config = labssh_agent::Config::load(path)?;
    let listener = bind(&config.listen, "listen").await?;
    labssh_agent::run(listener, config, shutdown_signal()).await
}
