//! `throughput`: push bytes into `cat > /dev/null` and pull them from
//! `head -c`, through one or several sessions at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::args::{Direction, ThroughputArgs};
use crate::client::Endpoint;
use crate::csv_file::{three_decimals, CsvRow};
use crate::stop::Stop;
use crate::table::ratio;

mod transfer;

/// One target, one direction.
#[derive(Serialize)]
struct ThroughputReport {
    target: String,
    direction: &'static str,
    sessions: u32,
    /// Bytes per session.
    bytes: u64,
    ok: u32,
    failed: u32,
    /// From the first byte sent or requested to the last session finishing.
    seconds: f64,
    /// All sessions' bytes over `seconds`, in 10^6 bytes per second.
    mb_per_s: Option<f64>,
    /// The slowest session's own rate.
    slowest_session_mb_per_s: Option<f64>,
    /// One message per kind of failure.
    examples: Vec<String>,
}

pub async fn run(args: ThroughputArgs, stop: Stop) -> anyhow::Result<u8> {
    let common = &args.common;
    let endpoints = crate::setup::prepare(common).await?;
    let directions: &[Direction] = match args.direction {
        Direction::Push => &[Direction::Push],
        Direction::Pull => &[Direction::Pull],
        Direction::Both => &[Direction::Push, Direction::Pull],
    };
    let mut reports = Vec::new();
    'run: for &direction in directions {
        for endpoint in &endpoints {
            if stop.is_stopped() {
                break 'run;
            }
            reports.push(measure(endpoint, direction, &args, &stop).await);
        }
    }
    println!("{}", table(&reports));
    if let Some(dir) = &common.out {
        crate::output::write_json(dir, "throughput.json", &reports)?;
        crate::output::write_csv(dir, "throughput.csv", reports.iter().map(ThroughputRow::of))?;
        println!("results in {}", dir.display());
    }
    let failed: u64 = reports.iter().map(|r| u64::from(r.failed)).sum();
    Ok(crate::exit::exit_code(stop.is_stopped(), failed))
}

async fn measure(
    endpoint: &Arc<Endpoint>,
    direction: Direction,
    args: &ThroughputArgs,
    stop: &Stop,
) -> ThroughputReport {
    let mut report = ThroughputReport::new(endpoint, direction, args);
    let bytes = report.bytes;
    let progress = crate::progress::bar(u64::from(args.sessions), "sessions");
    progress.set_message(format!("{} · {}", report.direction, endpoint.target.name));
    let (mut sessions, _) = crate::together::start(
        endpoint,
        args.sessions as usize,
        |endpoint, user| async move { transfer::transfer(&endpoint, &user, direction, bytes).await },
    );
    // When the first session started moving data and the last one finished.
    let mut span: Option<(Instant, Instant)> = None;
    loop {
        let joined = tokio::select! {
            joined = sessions.join_next() => joined,
            _ = stop.stopped() => {
                sessions.abort_all();
                break;
            }
        };
        let Some(joined) = joined else { break };
        progress.inc(1);
        match joined {
            Ok(Ok((start, end))) => {
                report.moved(end - start);
                span = Some(span.map_or((start, end), |(s, e)| (s.min(start), e.max(end))));
            }
            Ok(Err(failure)) => report.note_failure(format!(
                "{}: {}: {}",
                failure.kind.name(),
                failure.phase.name(),
                failure.detail
            )),
            Err(e) => {
                report.failed += 1;
                report.examples.push(format!("session task failed: {e}"));
            }
        }
    }
    progress.finish_and_clear();
    if let Some((start, end)) = span {
        report.seconds = (end - start).as_secs_f64();
        report.mb_per_s = Some(mb_per_s(bytes * u64::from(report.ok), end - start));
    }
    report
}

/// How many failure messages a report keeps.
const EXAMPLES: usize = 3;

impl ThroughputReport {
    fn new(endpoint: &Endpoint, direction: Direction, args: &ThroughputArgs) -> ThroughputReport {
        ThroughputReport {
            target: endpoint.target.name.clone(),
            direction: if direction == Direction::Push {
                "push"
            } else {
                "pull"
            },
            sessions: args.sessions,
            bytes: args.bytes.0,
            ok: 0,
            failed: 0,
            seconds: 0.0,
            mb_per_s: None,
            slowest_session_mb_per_s: None,
            examples: Vec::new(),
        }
    }

    /// A session moved its bytes in `took`.
    fn moved(&mut self, took: Duration) {
        self.ok += 1;
        let rate = mb_per_s(self.bytes, took);
        self.slowest_session_mb_per_s =
            Some(self.slowest_session_mb_per_s.map_or(rate, |r| r.min(rate)));
    }

    /// A session failed; `text` says how (the first few kinds are kept).
    fn note_failure(&mut self, text: String) {
        self.failed += 1;
        if self.examples.len() < EXAMPLES && !self.examples.contains(&text) {
            self.examples.push(text);
        }
    }
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9)
}

fn table(reports: &[ThroughputReport]) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<12} {:<5} {:>8} {:>12} {:>5} {:>6} {:>8} {:>9} {:>12} {:>9}\n",
        "target",
        "dir",
        "sessions",
        "bytes each",
        "ok",
        "failed",
        "seconds",
        "MB/s",
        "slowest MB/s",
        "vs base"
    );
    for r in reports {
        let base = reports
            .iter()
            .find(|b| b.direction == r.direction)
            .and_then(|b| b.mb_per_s);
        let _ = writeln!(
            out,
            "{:<12} {:<5} {:>8} {:>12} {:>5} {:>6} {:>8.2} {:>9} {:>12} {:>9}",
            r.target,
            r.direction,
            r.sessions,
            r.bytes,
            r.ok,
            r.failed,
            r.seconds,
            r.mb_per_s
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into()),
            r.slowest_session_mb_per_s
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into()),
            ratio(r.mb_per_s, base),
        );
        for example in &r.examples {
            let _ = writeln!(out, "  {} {}: {example}", r.target, r.direction);
        }
    }
    out.push_str("(MB = 10^6 bytes)\n");
    out
}

/// One line of `throughput.csv`: one target in one direction.
#[derive(Serialize)]
struct ThroughputRow<'a> {
    target: &'a str,
    direction: &'static str,
    sessions: u32,
    bytes: u64,
    ok: u32,
    failed: u32,
    #[serde(serialize_with = "three_decimals")]
    seconds: f64,
    #[serde(serialize_with = "three_decimals")]
    mb_per_s: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    slowest_session_mb_per_s: Option<f64>,
}

impl CsvRow for ThroughputRow<'_> {
    const HEADER: &'static [&'static str] = &[
        "target",
        "direction",
        "sessions",
        "bytes",
        "ok",
        "failed",
        "seconds",
        "mb_per_s",
        "slowest_session_mb_per_s",
    ];
}

impl ThroughputRow<'_> {
    fn of(r: &ThroughputReport) -> ThroughputRow<'_> {
        ThroughputRow {
            target: &r.target,
            direction: r.direction,
            sessions: r.sessions,
            bytes: r.bytes,
            ok: r.ok,
            failed: r.failed,
            seconds: r.seconds,
            mb_per_s: r.mb_per_s,
            slowest_session_mb_per_s: r.slowest_session_mb_per_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_csv_keeps_its_columns_and_number_formats() {
        let report = |direction, mb_per_s| ThroughputReport {
            target: "sshd".into(),
            direction,
            sessions: 2,
            bytes: 4_000_000,
            ok: 2,
            failed: 0,
            seconds: 0.25,
            mb_per_s,
            slowest_session_mb_per_s: mb_per_s.map(|r| r / 3.0),
            examples: Vec::new(),
        };
        let reports = [report("push", Some(32.0)), report("pull", None)];
        let header = crate::csv_file::serde_header(&ThroughputRow::of(&reports[0]));
        assert_eq!(header, ThroughputRow::HEADER);
        assert_eq!(
            crate::csv_file::text(reports.iter().map(ThroughputRow::of)).unwrap(),
            "target,direction,sessions,bytes,ok,failed,seconds,mb_per_s,slowest_session_mb_per_s\n\
             sshd,push,2,4000000,2,0,0.250,32.000,10.667\n\
             sshd,pull,2,4000000,2,0,0.250,,\n"
        );
    }
}
