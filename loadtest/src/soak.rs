//! `soak`: hold N interactive pty sessions for T seconds, type a keystroke
//! every k ms in each, and time the echo.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::args::SoakArgs;
use crate::client::Endpoint;
use crate::csv_file::{three_decimals, CsvRow};
use crate::phases::{FailureKind, PhaseHistogram};
use crate::stop::Stop;
use crate::table::{ms, ratio};
use session::Outcome;

mod session;

/// One target's soak.
#[derive(Serialize)]
struct SoakReport {
    target: String,
    sessions: u32,
    /// Sessions that got a shell.
    established: u64,
    /// Established sessions lost before the end (closed, broken, or an echo
    /// slower than the session's `ECHO_TIMEOUT`).
    dropped: u64,
    /// Sessions that never got a shell, by kind.
    setup_failed: BTreeMap<String, u64>,
    keystrokes: u64,
    echo: Latency,
    /// Connect to shell ready.
    setup: Latency,
    duration_s: f64,
    /// One message per kind of problem.
    examples: Vec<String>,
}

#[derive(Serialize)]
struct Latency {
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

impl Latency {
    fn of(h: &PhaseHistogram) -> Latency {
        Latency {
            p50_ms: h.quantile_ms(0.5),
            p99_ms: h.quantile_ms(0.99),
            max_ms: h.max_ms(),
        }
    }
}

pub async fn run(args: SoakArgs, stop: Stop) -> anyhow::Result<u8> {
    let common = &args.common;
    let endpoints = crate::setup::prepare(common).await?;
    let mut reports = Vec::new();
    for endpoint in &endpoints {
        if stop.is_stopped() {
            break;
        }
        reports.push(soak_target(endpoint, &args, &stop).await);
    }
    println!("{}", table(&reports));
    if let Some(dir) = &common.out {
        crate::output::write_json(dir, "soak.json", &reports)?;
        crate::output::write_csv(dir, "soak.csv", reports.iter().map(SoakRow::of))?;
        println!("results in {}", dir.display());
    }
    let problems: u64 = reports
        .iter()
        .map(|r| r.dropped + r.setup_failed.values().sum::<u64>())
        .sum();
    Ok(crate::exit::exit_code(stop.is_stopped(), problems))
}

async fn soak_target(endpoint: &Arc<Endpoint>, args: &SoakArgs, stop: &Stop) -> SoakReport {
    let progress = crate::progress::bar(args.duration.as_secs().max(1), "s");
    progress.set_message(format!("soak · {}", endpoint.target.name));
    let (command, duration, interval) = (&args.command, args.duration, args.interval);
    let (mut sessions, started) =
        crate::together::start(endpoint, args.sessions as usize, |endpoint, user| {
            let (command, stop) = (command.clone(), stop.clone());
            async move {
                let until = Instant::now() + duration;
                session::run(&endpoint, &user, command.as_deref(), until, interval, &stop).await
            }
        });
    let mut report = SoakReport {
        target: endpoint.target.name.clone(),
        sessions: args.sessions,
        established: 0,
        dropped: 0,
        setup_failed: FailureKind::ALL
            .iter()
            .map(|k| (k.name().to_string(), 0))
            .collect(),
        keystrokes: 0,
        echo: Latency::of(&PhaseHistogram::new()),
        setup: Latency::of(&PhaseHistogram::new()),
        duration_s: 0.0,
        examples: Vec::new(),
    };
    let mut echo = PhaseHistogram::new();
    let mut setup = PhaseHistogram::new();
    let note = |report: &mut SoakReport, text: String| {
        if report.examples.len() < 5 && !report.examples.contains(&text) {
            report.examples.push(text);
        }
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            joined = sessions.join_next() => match joined {
                None => break,
                Some(Ok(Outcome::SetupFailed(failure))) => {
                    *report.setup_failed.entry(failure.kind.name().to_string()).or_default() += 1;
                    note(&mut report, format!("{}: {}: {}", failure.kind.name(), failure.phase.name(), failure.detail));
                }
                Some(Ok(Outcome::Ran { setup: took, echo: h, keystrokes, dropped })) => {
                    report.established += 1;
                    setup.record(took);
                    echo.merge(&h);
                    report.keystrokes += keystrokes;
                    if let Some(why) = dropped {
                        report.dropped += 1;
                        note(&mut report, format!("dropped: {why}"));
                    }
                }
                Some(Err(e)) => {
                    *report.setup_failed.entry("other".into()).or_default() += 1;
                    note(&mut report, format!("session task failed: {e}"));
                }
            },
            _ = ticker.tick() => progress.set_position(started.elapsed().as_secs().min(args.duration.as_secs())),
        }
    }
    progress.finish_and_clear();
    report.echo = Latency::of(&echo);
    report.setup = Latency::of(&setup);
    report.duration_s = started.elapsed().as_secs_f64();
    report
}

fn table(reports: &[SoakReport]) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<12} {:>8} {:>6} {:>7} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "target",
        "sessions",
        "up",
        "dropped",
        "failed",
        "keystrokes",
        "echo p50",
        "echo p99",
        "echo max",
        "p99/base",
        "setup p50"
    );
    let base = reports.first().and_then(|r| r.echo.p99_ms);
    for r in reports {
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>6} {:>7} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            r.target,
            r.sessions,
            r.established,
            r.dropped,
            r.setup_failed.values().sum::<u64>(),
            r.keystrokes,
            ms(r.echo.p50_ms),
            ms(r.echo.p99_ms),
            ms(r.echo.max_ms),
            ratio(r.echo.p99_ms, base),
            ms(r.setup.p50_ms),
        );
        for example in &r.examples {
            let _ = writeln!(out, "  {}: {example}", r.target);
        }
    }
    out.push_str("(milliseconds)\n");
    out
}

/// One line of `soak.csv`: one target's soak.
#[derive(Serialize)]
struct SoakRow<'a> {
    target: &'a str,
    sessions: u32,
    established: u64,
    dropped: u64,
    /// Sessions that never got a shell, of every kind.
    setup_failed: u64,
    keystrokes: u64,
    #[serde(serialize_with = "three_decimals")]
    echo_p50_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    echo_p99_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    echo_max_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    setup_p50_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    setup_p99_ms: Option<f64>,
    #[serde(serialize_with = "three_decimals")]
    duration_s: f64,
}

impl CsvRow for SoakRow<'_> {
    const HEADER: &'static [&'static str] = &[
        "target",
        "sessions",
        "established",
        "dropped",
        "setup_failed",
        "keystrokes",
        "echo_p50_ms",
        "echo_p99_ms",
        "echo_max_ms",
        "setup_p50_ms",
        "setup_p99_ms",
        "duration_s",
    ];
}

impl SoakRow<'_> {
    fn of(r: &SoakReport) -> SoakRow<'_> {
        SoakRow {
            target: &r.target,
            sessions: r.sessions,
            established: r.established,
            dropped: r.dropped,
            setup_failed: r.setup_failed.values().sum(),
            keystrokes: r.keystrokes,
            echo_p50_ms: r.echo.p50_ms,
            echo_p99_ms: r.echo.p99_ms,
            echo_max_ms: r.echo.max_ms,
            setup_p50_ms: r.setup.p50_ms,
            setup_p99_ms: r.setup.p99_ms,
            duration_s: r.duration_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(target: &str, echo_ms: &[u64]) -> SoakReport {
        let mut echo = PhaseHistogram::new();
        for ms in echo_ms {
            echo.record(Duration::from_millis(*ms));
        }
        let mut setup = PhaseHistogram::new();
        setup.record(Duration::from_micros(123_456));
        SoakReport {
            target: target.into(),
            sessions: 3,
            established: 2,
            dropped: 1,
            setup_failed: [("refused".to_string(), 1), ("timeout".to_string(), 0)].into(),
            keystrokes: 40,
            echo: Latency::of(&echo),
            setup: Latency::of(&setup),
            duration_s: 12.3456,
            examples: vec!["dropped: no echo".into()],
        }
    }

    #[test]
    fn soak_csv_keeps_its_columns_and_number_formats() {
        let reports = [report("sshd", &[2, 4]), report("labssh", &[])];
        let text = crate::csv_file::text(reports.iter().map(SoakRow::of)).unwrap();
        let header = crate::csv_file::serde_header(&SoakRow::of(&reports[0]));
        assert_eq!(header, SoakRow::HEADER);
        assert_eq!(
            text,
            "target,sessions,established,dropped,setup_failed,keystrokes,echo_p50_ms,\
             echo_p99_ms,echo_max_ms,setup_p50_ms,setup_p99_ms,duration_s\n\
             sshd,3,2,1,1,40,2.000,4.001,4.001,123.519,123.519,12.346\n\
             labssh,3,2,1,1,40,,,,123.519,123.519,12.346\n"
        );
    }
}
