//! The sweep's terminal table: per-target figures, ratios to the baseline
//! target, and where the time goes.

use std::fmt::Write;

use crate::phases::{LevelStats, Phase};

/// Column heading for a phase's mean. The columns are `Phase::SEQUENTIAL`,
/// so they add up to the mean total (exec runs from the request to the exit status).
fn heading(phase: Phase) -> &'static str {
    match phase {
        Phase::TcpConnect => "tcp",
        Phase::Kex => "kex",
        Phase::Auth => "auth",
        Phase::ChannelOpen => "open",
        Phase::ExecFirstByte => "first",
        Phase::ExecExit => "exec",
        Phase::Close => "close",
    }
}

/// Formats milliseconds, or "-" when there is nothing to show.
pub fn ms(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// `value / base` as "1.23x", or "-".
pub fn ratio(value: Option<f64>, base: Option<f64>) -> String {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "-".into(),
    }
}

pub fn sweep(results: &[LevelStats], baseline: &str) -> String {
    let mut out = String::new();
    let width = results
        .iter()
        .map(|s| s.target.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = write!(
        out,
        "{:>5}  {:<width$}  {:>5}  {:>5}  {:>8}  {:>8}  {:>8}  {:>9}  |",
        "level", "target", "ok", "fail", "p50 ms", "p99 ms", "max ms", "p99/base",
    );
    for phase in Phase::SEQUENTIAL {
        let _ = write!(out, " {:>7}", heading(phase));
    }
    out.push_str("   (mean ms per phase)\n");
    for stats in results {
        let base = results
            .iter()
            .find(|b| b.target == baseline && b.level == stats.level)
            .and_then(|b| b.total.quantile_ms(0.99));
        let p99 = stats.total.quantile_ms(0.99);
        let _ = write!(
            out,
            "{:>5}  {:<width$}  {:>5}  {:>5}  {:>8}  {:>8}  {:>8}  {:>9}  |",
            stats.level,
            stats.target,
            stats.ok,
            stats.failed_total(),
            ms(stats.total.quantile_ms(0.50)),
            ms(p99),
            ms(stats.total.max_ms()),
            ratio(p99, base),
        );
        for phase in Phase::SEQUENTIAL {
            let _ = write!(out, " {:>7}", ms(stats.phase(phase).mean_ms()));
        }
        out.push('\n');
    }
    out.push_str(&ratios(results));
    let failing: Vec<&LevelStats> = results.iter().filter(|s| s.failed_total() > 0).collect();
    if !failing.is_empty() {
        out.push_str("\nfailures:\n");
        for stats in failing {
            let counts: Vec<String> = stats
                .failed
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(kind, n)| {
                    let example = stats
                        .examples
                        .get(kind)
                        .and_then(|e| e.first())
                        .map(|e| format!(" (e.g. {e})"))
                        .unwrap_or_default();
                    format!("{} {n}{example}", kind.name())
                })
                .collect();
            let _ = writeln!(
                out,
                "  level {} {}: {}",
                stats.level,
                stats.target,
                counts.join("; ")
            );
        }
    }
    out
}

/// Each level's p99 per target, with its ratio to every target listed before
/// it (so with sshd, labssh, docker-exec: labssh/sshd, docker-exec/sshd and
/// docker-exec/labssh).
pub fn ratios(results: &[LevelStats]) -> String {
    let mut levels: Vec<u32> = Vec::new();
    for stats in results {
        if !levels.contains(&stats.level) {
            levels.push(stats.level);
        }
    }
    let mut out = String::new();
    for level in levels {
        let row: Vec<&LevelStats> = results.iter().filter(|s| s.level == level).collect();
        if row.len() < 2 {
            continue;
        }
        if out.is_empty() {
            out.push_str("\np99 side by side:\n");
        }
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, stats)| {
                let p99 = stats.total.quantile_ms(0.99);
                let against: Vec<String> = row[..i]
                    .iter()
                    .filter_map(|earlier| {
                        let base = earlier.total.quantile_ms(0.99);
                        (p99.is_some() && base.is_some())
                            .then(|| format!("{} {}", ratio(p99, base), earlier.target))
                    })
                    .collect();
                if against.is_empty() {
                    format!("{} {} ms", stats.target, ms(p99))
                } else {
                    format!("{} {} ms ({})", stats.target, ms(p99), against.join(", "))
                }
            })
            .collect();
        let _ = writeln!(out, "  level {level:>4}: {}", cells.join("; "));
    }
    out
}

/// One line for the progress log after each level.
pub fn level_line(stats: &LevelStats) -> String {
    format!(
        "level {:>4}  {:<12} ok {:>4}/{:<4} p50 {:>7} ms  p99 {:>7} ms  max {:>7} ms  ({:.1} s)",
        stats.level,
        stats.target,
        stats.ok,
        stats.level,
        ms(stats.total.quantile_ms(0.50)),
        ms(stats.total.quantile_ms(0.99)),
        ms(stats.total.max_ms()),
        stats.wall.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::{Failure, FailureKind, Timings};
    use std::time::Duration;

    fn level(target: &str, total_ms: u64) -> LevelStats {
        let mut stats = LevelStats::new(target, 10);
        let mut t = Timings::start();
        t.total = Duration::from_millis(total_ms);
        stats.record(&Ok(t));
        stats
    }

    #[test]
    fn ratios_are_against_the_baseline_at_the_same_level() {
        let mut slow = level("docker", 200);
        slow.record(&Err(Failure::new(
            FailureKind::Timeout,
            Phase::ExecExit,
            "no exit status",
        )));
        let text = sweep(&[level("sshd", 10), slow], "sshd");
        assert!(text.contains("1.00x"), "{text}");
        // 200 ms against 10 ms, within the histogram's three digits.
        assert!(text.contains("19.99x") || text.contains("20.00x"), "{text}");
        assert!(
            text.contains("level 10 docker: timeout 1 (e.g. exec_exit: no exit status)"),
            "{text}"
        );
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(ms(Some(1234.5)), "1234");
        assert_eq!(ms(Some(12.34)), "12.3");
        assert_eq!(ms(Some(1.234)), "1.23");
        assert_eq!(ms(None), "-");
        assert_eq!(ratio(Some(3.0), Some(0.0)), "-");
    }
}
