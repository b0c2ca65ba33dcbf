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

use super::container_spec::{GENERATION, LABEL_GENERATION, LABEL_SPAWN};
use super::routes::{Owner, Route, SpawnPath};
use crate::backend::helper::{HelperError, HelperSocket};

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
/// Host directories older agents shared with containers are left over only by
/// containers removed since; recent ones may still belong to another agent's create.
const PRUNE_AFTER: Duration = Duration::from_secs(600);

fn label<'a>(inspect: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    inspect
        .config
        .as_ref()?
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// How processes start in the container Docker describes.
pub fn spawn_path_of(inspect: &ContainerInspectResponse) -> SpawnPath {
    match label(inspect, LABEL_SPAWN) {
        Some("helper") => SpawnPath::Helper,
        _ => SpawnPath::Exec,
    }
}

/// A helper container of an older layout: its socket directory was a host directory
/// the container could write, and its labssh-init held CAP_DAC_READ_SEARCH. It must be
/// recreated (home kept) before it serves again.
pub fn is_outdated(inspect: &ContainerInspectResponse) -> bool {
    spawn_path_of(inspect) == SpawnPath::Helper
        && label(inspect, LABEL_GENERATION) != Some(GENERATION)
}

/// The host pid of a running container's first process.
pub fn init_pid(inspect: &ContainerInspectResponse) -> Option<u32> {
    let state = inspect.state.as_ref()?;
    if state.running != Some(true) {
        return None;
    }
    state
        .pid
        .and_then(|p| u32::try_from(p).ok())
        .filter(|&p| p > 0)
}

/// The route of an existing container, from its labels and state. A helper container
/// that is not running (or of an older layout) has no helper to reach: restoring it is
/// the caller's business.
pub fn route_of(
    inspect: &ContainerInspectResponse,
    ready_by: Instant,
    owner: Option<Owner>,
) -> Route {
    let name = inspect
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let path = spawn_path_of(inspect);
    let helper = match (path, init_pid(inspect), inspect.id.as_deref()) {
        (SpawnPath::Helper, Some(pid), Some(id)) if !is_outdated(inspect) => {
            match HelperSocket::of_init(pid, id) {
                Ok(socket) => Some(socket),
                Err(why) => {
                    tracing::debug!(container = %name, reason = %why, "cannot reach the container's init");
                    None
                }
            }
        }
        _ => None,
    };
    Route {
        name,
        path,
        helper,
        ready_by,
        owner,
    }
}

/// Waits until the container's own helper accepts connections: `Ok(true)`. Fails with
/// what the container printed if it stopped instead (its command could not start,
/// say); `Ok(false)` after [`START_TIMEOUT`], or at once if what listens is not the
/// helper.
pub async fn wait_ready(docker: &Docker, id: &str, socket: &HelperSocket) -> Result<bool, String> {
    let started = Instant::now();
    let mut next_check = started + STATE_CHECK_INTERVAL;
    let mut pause = PROBE_START;
    loop {
        match socket.probe().await {
            Ok(true) => {
                tracing::debug!(
                    container = id,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "helper ready"
                );
                return Ok(true);
            }
            Ok(false) => {}
            Err(HelperError::Tampered(why)) => {
                tracing::warn!(container = id, reason = %why, "refused a socket that is not the container's labssh-init");
                return Ok(false);
            }
            // The init has gone: the container stopped; say why below.
            Err(_) => next_check = Instant::now(),
        }
        let now = Instant::now();
        if now >= started + START_TIMEOUT {
            tracing::warn!(
                container = id,
                "labssh-init did not open its socket in time"
            );
            return Ok(false);
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

/// How long a container whose init is gone may still look running to Docker (it
/// records the exit a moment later, longer on a busy node).
const EXIT_RECORDED_WITHIN: Duration = Duration::from_secs(5);

/// Why the container stopped, once Docker has recorded it; `None` if it still runs
/// after [`EXIT_RECORDED_WITHIN`].
pub async fn stopped_soon(docker: &Docker, id: &str) -> Option<String> {
    let deadline = Instant::now() + EXIT_RECORDED_WITHIN;
    loop {
        if let Some(why) = stopped(docker, id).await {
            return Some(why);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Why the container is not running, if it is not.
pub async fn stopped(docker: &Docker, id: &str) -> Option<String> {
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

/// Removes the host directories older agents shared with this prefix's containers once
/// those containers no longer exist, leaving `live` ones and recent ones alone.
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
