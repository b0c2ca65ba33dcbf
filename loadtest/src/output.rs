//! Files under `--out DIR`. Rewritten after every level, so an interrupted
//! or crashed run still leaves everything measured so far.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::phases::{FailureKind, LevelStats, Phase};
use crate::summary::{Detail, LevelDetail, Record};

/// Writes `contents` to `dir/name` through a temporary file, so readers
/// never see half a file.
pub fn write(dir: &Path, name: &str, contents: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, contents)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("writing {}", path.display()))
}

pub fn write_json<T: Serialize + ?Sized>(dir: &Path, name: &str, value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write(dir, name, &text)
}

/// Creates the directory and checks it can be written, before any measuring.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}", dir.display()))?;
    write(dir, ".write-test", "")
        .and_then(|()| Ok(std::fs::remove_file(dir.join(".write-test"))?))
        .with_context(|| format!("--out {} is not writable", dir.display()))
}

/// A CSV cell: numbers as they are, absent values empty.
fn cell(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.3}")).unwrap_or_default()
}

pub fn levels_csv(results: &[LevelStats]) -> String {
    let mut out = String::from("target,level,ok,failed");
    for kind in FailureKind::ALL {
        let _ = write!(out, ",{}", kind.name());
    }
    out.push_str(
        ",wall_ms,connections_per_s,total_p50_ms,total_p99_ms,total_max_ms,total_mean_ms\n",
    );
    for stats in results {
        let detail = LevelDetail::of(stats);
        let _ = write!(
            out,
            "{},{},{},{}",
            stats.target,
            stats.level,
            stats.ok,
            stats.failed_total()
        );
        for kind in FailureKind::ALL {
            let _ = write!(out, ",{}", stats.failed.get(&kind).copied().unwrap_or(0));
        }
        let _ = writeln!(
            out,
            ",{:.3},{:.3},{},{},{},{}",
            detail.wall_ms,
            detail.connections_per_s,
            cell(detail.total.p50_ms),
            cell(detail.total.p99_ms),
            cell(detail.total.max_ms),
            cell(detail.total.mean_ms),
        );
    }
    out
}

pub fn phases_csv(results: &[LevelStats]) -> String {
    let mut out =
        String::from("target,level,phase,count,min_ms,mean_ms,p50_ms,p90_ms,p99_ms,max_ms\n");
    for stats in results {
        let rows = Phase::ALL
            .iter()
            .map(|p| (p.name(), Detail::of(stats.phase(*p))))
            .chain(std::iter::once(("total", Detail::of(&stats.total))));
        for (phase, d) in rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                stats.target,
                stats.level,
                phase,
                d.count,
                cell(d.min_ms),
                cell(d.mean_ms),
                cell(d.p50_ms),
                cell(d.p90_ms),
                cell(d.p99_ms),
                cell(d.max_ms),
            );
        }
    }
    out
}

/// Everything a sweep writes.
pub fn write_sweep(dir: &Path, results: &[LevelStats], run: &impl Serialize) -> anyhow::Result<()> {
    let records: Vec<Record> = results.iter().map(Record::of).collect();
    write_json(dir, "summary.json", &records)?;
    let details: Vec<LevelDetail> = results.iter().map(LevelDetail::of).collect();
    write_json(dir, "levels.json", &details)?;
    write_json(dir, "run.json", run)?;
    write(dir, "levels.csv", &levels_csv(results))?;
    write(dir, "phases.csv", &phases_csv(results))?;
    write(dir, "latency.svg", &crate::plot::latency(results)?)?;
    write(dir, "phases.svg", &crate::plot::phases(results)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::{Failure, Timings};
    use std::time::Duration;

    #[test]
    fn csv_rows_line_up_with_the_header() {
        let mut stats = LevelStats::new("sshd", 2);
        let mut t = Timings::start();
        t.set(Phase::Auth, Duration::from_millis(3));
        t.total = Duration::from_millis(9);
        stats.record(&Ok(t));
        stats.record(&Err(Failure::new(
            FailureKind::AuthFailed,
            Phase::Auth,
            "no",
        )));
        for text in [levels_csv(&[stats.clone()]), phases_csv(&[stats.clone()])] {
            let mut lines = text.lines();
            let columns = lines.next().unwrap().split(',').count();
            for line in lines {
                assert_eq!(line.split(',').count(), columns, "{line}");
            }
        }
        assert!(levels_csv(&[stats.clone()]).contains("sshd,2,1,1,0,0,1,"));
        assert!(phases_csv(&[stats]).contains("sshd,2,total,1,9.000"));
    }

    #[test]
    fn a_sweep_writes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let stats = LevelStats::new("a", 1);
        write_sweep(dir.path(), &[stats], &serde_json::json!({"x": 1})).unwrap();
        for name in [
            "summary.json",
            "levels.json",
            "run.json",
            "levels.csv",
            "phases.csv",
            "latency.svg",
            "phases.svg",
        ] {
            assert!(dir.path().join(name).is_file(), "{name}");
        }
        prepare(dir.path()).unwrap();
    }
}
