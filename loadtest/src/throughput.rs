//! `throughput`: push bytes into `cat > /dev/null` and pull them from
//! `head -c`, through one or several sessions at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::ChannelMsg;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::args::{Direction, ThroughputArgs};
use crate::client::Endpoint;
use crate::csv_file::{three_decimals, CsvRow};
use crate::phases::{Failure, FailureKind, Phase, Timings};
use crate::stop::Stop;
use crate::table::ratio;

/// The command that swallows pushed bytes.
const PUSH_COMMAND: &str = "cat > /dev/null";

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
    let name = if direction == Direction::Push {
        "push"
    } else {
        "pull"
    };
    let bytes = args.bytes.0;
    let progress = crate::progress::bar(u64::from(args.sessions), "sessions");
    progress.set_message(format!("{name} · {}", endpoint.target.name));
    let (go, ready) = watch::channel(false);
    let mut sessions = JoinSet::new();
    for index in 0..args.sessions as usize {
        let endpoint = endpoint.clone();
        let user = endpoint.target.users.for_client(index);
        let mut ready = ready.clone();
        sessions.spawn(async move {
            let _ = ready.wait_for(|go| *go).await;
            transfer(&endpoint, &user, direction, bytes).await
        });
    }
    let _ = go.send(true);
    let mut report = ThroughputReport {
        target: endpoint.target.name.clone(),
        direction: name,
        sessions: args.sessions,
        bytes,
        ok: 0,
        failed: 0,
        seconds: 0.0,
        mb_per_s: None,
        slowest_session_mb_per_s: None,
        examples: Vec::new(),
    };
    let mut first_start: Option<Instant> = None;
    let mut last_end: Option<Instant> = None;
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
                report.ok += 1;
                first_start = Some(first_start.map_or(start, |s| s.min(start)));
                last_end = Some(last_end.map_or(end, |e| e.max(end)));
                let rate = mb_per_s(bytes, end - start);
                report.slowest_session_mb_per_s = Some(
                    report
                        .slowest_session_mb_per_s
                        .map_or(rate, |r| r.min(rate)),
                );
            }
            Ok(Err(failure)) => {
                report.failed += 1;
                let text = format!(
                    "{}: {}: {}",
                    failure.kind.name(),
                    failure.phase.name(),
                    failure.detail
                );
                if report.examples.len() < 3 && !report.examples.contains(&text) {
                    report.examples.push(text);
                }
            }
            Err(e) => {
                report.failed += 1;
                report.examples.push(format!("session task failed: {e}"));
            }
        }
    }
    progress.finish_and_clear();
    if let (Some(start), Some(end)) = (first_start, last_end) {
        report.seconds = (end - start).as_secs_f64();
        report.mb_per_s = Some(mb_per_s(bytes * u64::from(report.ok), end - start));
    }
    report
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9)
}

/// Moves `bytes` one way through a fresh session; returns when the data
/// started and finished moving.
async fn transfer(
    endpoint: &Endpoint,
    user: &str,
    direction: Direction,
    bytes: u64,
) -> Result<(Instant, Instant), Failure> {
    let mut timings = Timings::start();
    let session = endpoint.login(user, &mut timings).await?;
    let channel = session.open_channel(endpoint).await?;
    let command = match direction {
        Direction::Push => PUSH_COMMAND.to_string(),
        _ => format!("head -c {bytes} /dev/zero"),
    };
    let start = Instant::now();
    endpoint
        .phase(Phase::ExecExit, channel.exec(true, command))
        .await?
        .map_err(|e| session.failure(Phase::ExecExit, &e))?;
    let (mut read, write) = channel.split();
    let too_slow = || {
        Failure::new(
            FailureKind::Timeout,
            Phase::ExecExit,
            format!(
                "{bytes} bytes did not move within {:?}; raise --phase-timeout",
                endpoint.phase_timeout
            ),
        )
    };
    let writer = async {
        if direction == Direction::Push {
            write
                .data(tokio::io::repeat(0).take(bytes))
                .await
                .map_err(|e| session.failure(Phase::ExecExit, &e))?;
            write
                .eof()
                .await
                .map_err(|e| session.failure(Phase::ExecExit, &e))?;
        }
        Ok::<(), Failure>(())
    };
    // The reader runs all along: an unread channel would stall the
    // connection. Output may still arrive after the exit status, so read to
    // the end of the output too.
    let reader = async {
        let mut received = 0u64;
        let mut status = None;
        let mut eof = false;
        while status.is_none() || !eof {
            match read.wait().await {
                Some(ChannelMsg::Data { data }) => received += data.len() as u64,
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::Eof) => eof = true,
                Some(ChannelMsg::Failure) => {
                    return Err(Failure::new(
                        FailureKind::ChannelFailed,
                        Phase::ExecExit,
                        "the server refused the exec request",
                    ))
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        match status {
            Some(0) => Ok(received),
            Some(code) => Err(Failure::new(
                FailureKind::NonzeroExit,
                Phase::ExecExit,
                format!("exit status {code}"),
            )),
            None => Err(Failure::new(
                FailureKind::ChannelFailed,
                Phase::ExecExit,
                "the channel closed without an exit status",
            )),
        }
    };
    let (written, received) = tokio::time::timeout(endpoint.phase_timeout, async {
        tokio::join!(writer, reader)
    })
    .await
    .map_err(|_| too_slow())?;
    written?;
    let received = received?;
    let end = Instant::now();
    if direction == Direction::Pull && received != bytes {
        return Err(Failure::new(
            FailureKind::ChannelFailed,
            Phase::ExecExit,
            format!("received {received} of {bytes} bytes"),
        ));
    }
    drop((read, write));
    let _ = session.close(endpoint).await;
    Ok((start, end))
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
