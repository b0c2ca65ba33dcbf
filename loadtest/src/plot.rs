//! SVG plots of a sweep: total latency against parallel connections
//! (`latency`), and the mean per-phase breakdown stacked like seed 000's
//! Fig. 5 (`phases`); time to shell in arrival order (`arrivals`). What they
//! use is here.

use crate::phases::LevelStats;

pub mod arrivals;
pub mod latency;
pub mod phases;
#[cfg(test)]
mod samples;

/// Width of every plot, in pixels.
const WIDTH: u32 = 960;

/// A plotters result as ours (plotters' errors are only `Debug`).
fn draw<T, E: std::fmt::Debug>(result: Result<T, E>) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("drawing the plot: {e:?}"))
}

/// Targets in the order they first appear.
fn targets(results: &[LevelStats]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for stats in results {
        if !names.contains(&stats.target.as_str()) {
            names.push(&stats.target);
        }
    }
    names
}
