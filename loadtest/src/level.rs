//! One level of a sweep against one target: N clients released at once.

use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::Endpoint;
use crate::phases::{Failure, FailureKind, LevelStats, Phase};
use crate::stop::Stop;

/// Clients logging in at once during `--warm`: enough to be quick, few
/// enough not to be a load test of their own.
const WARM_CONCURRENCY: usize = 8;

/// Every phase is bounded, so a level cannot outlast this many phase
/// timeouts; the extra bound only guards against a bug.
const LEVEL_DEADLINE_PHASES: u32 = 8;

pub struct LevelRun {
    pub stats: LevelStats,
    /// Ctrl-C arrived before every client finished.
    pub interrupted: bool,
}

/// Starts `level` clients together and waits for all of them.
pub async fn run(
    endpoint: &Arc<Endpoint>,
    level: u32,
    command: &Arc<str>,
    stop: &Stop,
    progress: &ProgressBar,
) -> LevelRun {
    let mut stats = LevelStats::new(&endpoint.target.name, level);
    let (mut clients, started) =
        crate::together::start(endpoint, level as usize, |endpoint, user| {
            let command = command.clone();
            async move { crate::attempt::run(&endpoint, &user, &command).await }
        });
    let deadline = started + endpoint.phase_timeout * LEVEL_DEADLINE_PHASES;
    let mut interrupted = false;
    loop {
        tokio::select! {
            joined = clients.join_next() => match joined {
                None => break,
                Some(Ok(outcome)) => {
                    stats.record(&outcome);
                    progress.inc(1);
                }
                Some(Err(e)) => {
                    stats.record(&Err(Failure::new(FailureKind::Other, Phase::Close, format!("client task failed: {e}"))));
                    progress.inc(1);
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                let left = clients.len();
                clients.abort_all();
                for _ in 0..left {
                    stats.record(&Err(Failure::new(FailureKind::Timeout, Phase::Close, "the level ran past its deadline")));
                }
                progress.inc(left as u64);
                break;
            }
            _ = stop.stopped() => {
                clients.abort_all();
                interrupted = true;
                break;
            }
        }
    }
    stats.wall = started.elapsed();
    LevelRun { stats, interrupted }
}

/// `--warm`: logs the users with these client indices in once, a few at a
/// time. Returns how many of them failed, with an example.
pub async fn warm(
    endpoint: &Arc<Endpoint>,
    users: std::ops::Range<usize>,
    command: &Arc<str>,
    stop: &Stop,
) -> (usize, Option<String>) {
    let permits = Arc::new(Semaphore::new(WARM_CONCURRENCY));
    let mut clients = JoinSet::new();
    for index in users {
        let endpoint = endpoint.clone();
        let command = command.clone();
        let permits = permits.clone();
        let user = endpoint.target.users.for_client(index);
        clients.spawn(async move {
            let _permit = permits.acquire().await;
            crate::attempt::run(&endpoint, &user, &command).await
        });
    }
    let mut failed = 0;
    let mut example = None;
    loop {
        tokio::select! {
            joined = clients.join_next() => match joined {
                None => break,
                Some(Ok(Ok(_))) => {}
                Some(Ok(Err(failure))) => {
                    failed += 1;
                    example.get_or_insert(format!("{}: {}", failure.kind.name(), failure.detail));
                }
                Some(Err(e)) => {
                    failed += 1;
                    example.get_or_insert(e.to_string());
                }
            },
            _ = stop.stopped() => {
                clients.abort_all();
                break;
            }
        }
    }
    (failed, example)
}

/// Longest a `--before-level` command may run.
pub const BEFORE_LEVEL_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `--before-level` through `sh -c`; a failure stops the sweep, because
/// a "cold" level that is not cold would mislead.
pub async fn before_level(
    command: &str,
    target: &str,
    level: u32,
    users: &str,
) -> anyhow::Result<()> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("LOADTEST_TARGET", target)
        .env("LOADTEST_LEVEL", level.to_string())
        .env("LOADTEST_USERS", users)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BEFORE_LEVEL_TIMEOUT, child)
        .await
        .map_err(|_| {
            anyhow::anyhow!("--before-level did not finish within {BEFORE_LEVEL_TIMEOUT:?}")
        })?
        .map_err(|e| anyhow::anyhow!("--before-level: cannot run sh: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        anyhow::bail!(
            "--before-level failed ({}) before level {level} of {target}: {}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(())
}
