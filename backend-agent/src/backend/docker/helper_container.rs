//! Containers run by labssh-init: their route, and waiting for the helper after Docker
//! started one.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use tokio::time::Instant;

use super::container_spec::{LABEL_SPAWN, RUN_DIR};
use super::routes::Route;
use crate::backend::helper::HelperSocket;

/// How long a freshly started helper may take to accept connections. It binds its
/// socket a few milliseconds after Docker starts it; this covers a node under load.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the container's state is checked while waiting for its helper.
const STATE_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// First pause between connection attempts; doubles up to the cap.
const PROBE_START: Duration = Duration::from_millis(1);
/// Longest pause between connection attempts.
const PROBE_MAX: Duration = Duration::from_millis(50);
/// Log lines shown when the container stopped right after starting.
const LOG_TAIL: &str = "5";
/// A directory is made just before its container is created; only older ones without
/// a container are left over from removed containers.
const PRUNE_AFTER: Duration = Duration::from_secs(600);

/// The route of an existing container, from its labels and mounts: a helper container
/// has the shared directory mounted at [`RUN_DIR`].
pub fn route_of(inspect: &ContainerInspectResponse, ready_by: Instant) -> Route {
    let helper_label = inspect
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(LABEL_SPAWN))
        .is_some_and(|v| v == "helper");
    let shared_dir =
        inspect.mounts.iter().flatten().find_map(|m| {
            (m.destination.as_deref() == Some(RUN_DIR)).then_some(m.source.as_deref()?)
        });
    let helper = match (helper_label, shared_dir) {
        (true, Some(dir)) => Some(HelperSocket::in_dir(std::path::Path::new(dir))),
        _ => None,
    };
    Route { helper, ready_by }
}

/// Waits until the container's helper accepts connections. Fails with what the
/// container printed if it stopped instead (its command could not start, say); gives up
/// quietly after [`START_TIMEOUT`], leaving the spawn to fall back to Docker exec.
pub async fn wait_ready(docker: &Docker, id: &str, socket: &HelperSocket) -> Result<(), String> {
    let started = Instant::now();
    let mut next_check = started + STATE_CHECK_INTERVAL;
    let mut pause = PROBE_START;
    loop {
        if socket.probe().await.is_ok() {
            tracing::debug!(
                container = id,
                waited_ms = started.elapsed().as_millis() as u64,
                "helper ready"
            );
            return Ok(());
        }
        let now = Instant::now();
        if now >= started + START_TIMEOUT {
            tracing::warn!(
                container = id,
                "labssh-init did not open its socket in time"
            );
            return Ok(());
        }
        if now >= next_check {
            next_check = now + STATE_CHECK_INTERVAL;
            if let Some(why) = stopped(docker, id).await {
                return Err(why);
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(PROBE_MAX);
    }
}

/// Why the container is not running, if it is not.
async fn stopped(docker: &Docker, id: &str) -> Option<String> {
    let inspect = docker.inspect_container(id, None).await.ok()?;
    let state = inspect.state?;
    if state.running == Some(true) {
        return None;
    }
    let options = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(LOG_TAIL)
        .build();
    let mut logs = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    let text = text.trim();
    Some(if text.is_empty() {
        format!("it exited with code {}", state.exit_code.unwrap_or(-1))
    } else {
        text.to_owned()
    })
}

/// Removes the shared directories of this prefix's containers that no longer exist
/// (removed by an operator or a test), leaving `live` ones and recent ones alone.
pub async fn prune_dirs(docker: &Docker, helper_dir: &Path, prefix: &str, live: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(helper_dir) else {
        return;
    };
    let own = format!("{prefix}-");
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > PRUNE_AFTER);
        if !name.starts_with(&own) || live.contains(&name) || !old || !entry.path().is_dir() {
            continue;
        }
        // Another agent with the same prefix may own it: only a name Docker does not
        // know is free.
        let gone = matches!(
            docker.inspect_container(&name, None).await,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })
        );
        if gone {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::debug!(dir = %entry.path().display(), "removed a helper directory")
                }
                Err(e) => {
                    tracing::debug!(dir = %entry.path().display(), error = %e, "cannot remove a helper directory")
                }
            }
        }
    }
}
