//! Measured levels made up for the plots' tests.

use std::time::Duration;

use crate::phases::{LevelStats, Phase, Timings};

fn stats(target: &str, level: u32) -> LevelStats {
    let mut stats = LevelStats::new(target, level);
    let mut t = Timings::start();
    for (i, phase) in Phase::ALL.iter().enumerate() {
        t.set(*phase, Duration::from_millis(1 + i as u64));
    }
    t.total = Duration::from_millis(40);
    stats.record(&Ok(t));
    stats
}

/// One successful attempt with these phase times in ms (`Phase::ALL` order).
pub fn timed(target: &str, level: u32, ms: [f64; 7]) -> LevelStats {
    let mut stats = LevelStats::new(target, level);
    let mut t = Timings::start();
    for (phase, ms) in Phase::ALL.iter().zip(ms) {
        t.set(*phase, Duration::from_secs_f64(ms / 1000.0));
    }
    t.total = Phase::SEQUENTIAL.iter().map(|p| t.get(*p).unwrap()).sum();
    stats.record(&Ok(t));
    stats
}

/// Checks that `plot` draws an SVG naming every target.
pub fn assert_svg_with_every_target(plot: fn(&[LevelStats]) -> anyhow::Result<String>) {
    let results = [stats("sshd", 1), stats("labssh", 1), stats("sshd", 5)];
    let svg = plot(&results).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("sshd") && svg.contains("labssh"));
}
