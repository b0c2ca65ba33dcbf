//! Files under `--out DIR`. Rewritten after every level, so an interrupted
//! or crashed run still leaves everything measured so far.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::csv_file::{three_decimals, CsvRow};
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

/// Writes `rows` as CSV to `dir/name`.
pub fn write_csv<R: CsvRow>(
    dir: &Path,
    name: &str,
    rows: impl IntoIterator<Item = R>,
) -> anyhow::Result<()> {
    write(dir, name, &crate::csv_file::text(rows)?)
}

/// One line of `levels.csv`: a target at one level.
#[derive(Serialize)]
struct LevelsRow<'a> {
    target: &'a str,
    level: u32,
    ok: u64,
    failed: u64,
    // The failures by kind, in `FailureKind::ALL` order.
    refused: u64,
    timeout: u64,
    auth_failed: u64,
    channel_failed: u64,
    nonzero_exit: u64,
    handshake_failed: u64,
    disconnected: u64,
    other: u64,
    #[serde(serialize_with = "three_decimals")]
    wall_ms: f64,
    #[serde(serialize_with = "three_decimals")]
    connections_per_s: f64,
    #[serde(serialize_with = "three_decimals")]
    total_p50_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    total_p99_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    total_max_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    total_mean_ms: Option<f64>,
}

impl CsvRow for LevelsRow<'_> {
    const HEADER: &'static [&'static str] = &[
        "target",
        "level",
        "ok",
        "failed",
        "refused",
        "timeout",
        "auth_failed",
        "channel_failed",
        "nonzero_exit",
        "handshake_failed",
        "disconnected",
        "other",
        "wall_ms",
        "connections_per_s",
        "total_p50_ms",
        "total_p99_ms",
        "total_max_ms",
        "total_mean_ms",
    ];
}

impl LevelsRow<'_> {
    fn of(stats: &LevelStats) -> LevelsRow<'_> {
        let detail = LevelDetail::of(stats);
        let failed = |kind| stats.failed.get(&kind).copied().unwrap_or(0);
        LevelsRow {
            target: &stats.target,
            level: stats.level,
            ok: stats.ok,
            failed: stats.failed_total(),
            refused: failed(FailureKind::Refused),
            timeout: failed(FailureKind::Timeout),
            auth_failed: failed(FailureKind::AuthFailed),
            channel_failed: failed(FailureKind::ChannelFailed),
            nonzero_exit: failed(FailureKind::NonzeroExit),
            handshake_failed: failed(FailureKind::HandshakeFailed),
            disconnected: failed(FailureKind::Disconnected),
            other: failed(FailureKind::Other),
            wall_ms: detail.wall_ms,
            connections_per_s: detail.connections_per_s,
            total_p50_ms: detail.total.p50_ms,
            total_p99_ms: detail.total.p99_ms,
            total_max_ms: detail.total.max_ms,
            total_mean_ms: detail.total.mean_ms,
        }
    }
}

/// One line of `phases.csv`: one phase (or the total) of a target at one level.
#[derive(Serialize)]
struct PhasesRow<'a> {
    target: &'a str,
    level: u32,
    phase: &'static str,
    count: u64,
    #[serde(serialize_with = "three_decimals")]
    min_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    mean_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    p50_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    p90_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    p99_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    max_ms: Option<f64>,
}

impl CsvRow for PhasesRow<'_> {
    const HEADER: &'static [&'static str] = &[
        "target", "level", "phase", "count", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p99_ms",
        "max_ms",
    ];
}

impl PhasesRow<'_> {
    /// Every phase of `stats`, then its total.
    fn of(stats: &LevelStats) -> impl Iterator<Item = PhasesRow<'_>> {
        Phase::ALL
            .iter()
            .map(|p| (p.name(), Detail::of(stats.phase(*p))))
            .chain(std::iter::once(("total", Detail::of(&stats.total))))
            .map(|(phase, d)| PhasesRow {
                target: &stats.target,
                level: stats.level,
                phase,
                count: d.count,
                min_ms: d.min_ms,
                mean_ms: d.mean_ms,
                p50_ms: d.p50_ms,
                p90_ms: d.p90_ms,
                p99_ms: d.p99_ms,
                max_ms: d.max_ms,
            })
    }
}

fn levels_rows(results: &[LevelStats]) -> impl Iterator<Item = LevelsRow<'_>> {
    results.iter().map(LevelsRow::of)
}

fn phases_rows(results: &[LevelStats]) -> impl Iterator<Item = PhasesRow<'_>> {
    results.iter().flat_map(PhasesRow::of)
}

/// Everything a sweep writes.
pub fn write_sweep(dir: &Path, results: &[LevelStats], run: &impl Serialize) -> anyhow::Result<()> {
    let records: Vec<Record> = results.iter().map(Record::of).collect();
    write_json(dir, "summary.json", &records)?;
    let details: Vec<LevelDetail> = results.iter().map(LevelDetail::of).collect();
    write_json(dir, "levels.json", &details)?;
    write_json(dir, "run.json", run)?;
    write_csv(dir, "levels.csv", levels_rows(results))?;
    write_csv(dir, "phases.csv", phases_rows(results))?;
    write(dir, "latency.svg", &crate::plot::latency::svg(results)?)?;
    write(dir, "phases.svg", &crate::plot::phases::svg(results)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::{Failure, Timings};
    use std::time::Duration;

    fn levels_csv(results: &[LevelStats]) -> String {
        crate::csv_file::text(levels_rows(results)).unwrap()
    }

    fn phases_csv(results: &[LevelStats]) -> String {
        crate::csv_file::text(phases_rows(results)).unwrap()
    }

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
    fn csv_headers_name_the_row_fields_and_every_failure_kind() {
        let stats = LevelStats::new("a", 1);
        let header = crate::csv_file::serde_header(&LevelsRow::of(&stats));
        assert_eq!(header, LevelsRow::HEADER);
        let kinds: Vec<&str> = FailureKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(LevelsRow::HEADER[4..4 + kinds.len()], kinds);
        let row = PhasesRow::of(&stats).next().unwrap();
        assert_eq!(crate::csv_file::serde_header(&row), PhasesRow::HEADER);
    }

    /// Two levels: one with successes and a failure, one where nothing succeeded.
    fn sample() -> Vec<LevelStats> {
        let mut busy = LevelStats::new("sshd", 2);
        for ms in [[1, 2, 3, 4, 5, 6, 7], [3, 5, 7, 11, 13, 17, 19]] {
            let mut t = Timings::start();
            for (phase, ms) in Phase::ALL.iter().zip(ms) {
                t.set(*phase, Duration::from_millis(ms));
            }
            t.total = Phase::SEQUENTIAL.iter().map(|p| t.get(*p).unwrap()).sum();
            busy.record(&Ok(t));
        }
        busy.record(&Err(Failure::new(FailureKind::Timeout, Phase::Kex, "slow")));
        busy.wall = Duration::from_millis(1500);
        let mut broken = LevelStats::new("docker-exec", 1);
        broken.record(&Err(Failure::new(
            FailureKind::Refused,
            Phase::TcpConnect,
            "no",
        )));
        broken.wall = Duration::from_micros(2500);
        vec![busy, broken]
    }

    #[test]
    fn csv_files_keep_their_columns_and_number_formats() {
        // Readers (scripts, spreadsheets, BENCHMARKS.md) rely on the header
        // names, their order, three decimals and empty cells for "nothing measured".
        const LEVELS_HEADER: &str = "target,level,ok,failed,refused,timeout,auth_failed,\
            channel_failed,nonzero_exit,handshake_failed,disconnected,other,wall_ms,\
            connections_per_s,total_p50_ms,total_p99_ms,total_max_ms,total_mean_ms\n";
        assert_eq!(
            levels_csv(&sample()),
            [
                LEVELS_HEADER,
                "sshd,2,2,1,0,1,0,0,0,0,0,0,1500.000,1.333,23.007,62.015,62.015,42.500\n",
                "docker-exec,1,0,1,1,0,0,0,0,0,0,0,2.500,0.000,,,,\n",
            ]
            .concat()
        );
        assert_eq!(levels_csv(&[]), LEVELS_HEADER);
        const PHASES_HEADER: &str =
            "target,level,phase,count,min_ms,mean_ms,p50_ms,p90_ms,p99_ms,max_ms\n";
        let phases = phases_csv(&sample());
        let mut lines = phases.split_inclusive('\n');
        assert_eq!(lines.next(), Some(PHASES_HEADER));
        let rows: Vec<&str> = lines.collect();
        assert_eq!(
            rows[..2],
            [
                "sshd,2,tcp_connect,2,1.000,2.000,1.000,3.001,3.001,3.001\n",
                "sshd,2,kex,2,2.000,3.500,2.000,5.003,5.003,5.003\n",
            ]
        );
        assert_eq!(
            rows[7],
            "sshd,2,total,2,22.992,42.500,23.007,62.015,62.015,62.015\n"
        );
        assert_eq!(rows[8], "docker-exec,1,tcp_connect,0,,,,,,\n");
        assert_eq!(rows[15], "docker-exec,1,total,0,,,,,,\n");
        assert_eq!(rows.len(), 2 * 8);
        let names: Vec<&str> = rows[..8]
            .iter()
            .map(|row| row.split(',').nth(2).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "tcp_connect",
                "kex",
                "auth",
                "channel_open",
                "exec_first_byte",
                "exec_exit",
                "close",
                "total"
            ]
        );
        assert_eq!(phases_csv(&[]), PHASES_HEADER);
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
