//! How long each step of making a container ready takes, at debug level: an event
//! `ensure step` with the container, the step and its milliseconds, inside a debug
//! span of the step (exported with the rest when debug spans are). Profiling a burst of
//! cold logins is reading these (`RUST_LOG=labssh_agent::backend::docker::timing=debug`).

use std::future::Future;

use tokio::time::Instant;
use tracing::Instrument;

/// Runs `step` of `container`'s ensure and logs how long it took.
pub async fn timed<T>(container: &str, step: &'static str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = work
        .instrument(tracing::debug_span!("ensure_step", step))
        .await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::debug!(container, step, ms, "ensure step");
    out
}
