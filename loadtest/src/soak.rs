//! `soak`: hold N interactive pty sessions for T seconds, type a keystroke
//! every k ms in each, and time the echo.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::{Channel, ChannelMsg};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::args::SoakArgs;
use crate::client::{Endpoint, Session};
use crate::csv_file::{three_decimals, CsvRow};
use crate::phases::{Failure, FailureKind, Phase, PhaseHistogram, Timings};
use crate::stop::Stop;
use crate::table::{ms, ratio};

/// A keystroke whose echo takes longer than this counts the session as dropped.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);
/// After the shell starts, wait until it has been quiet this long (the prompt is out).
const SETTLE_QUIET: Duration = Duration::from_millis(300);
/// …but no longer than this.
const SETTLE_MAX: Duration = Duration::from_secs(5);
/// Clear the typed line (Ctrl-U) this often, so it never grows long.
const KEYSTROKES_PER_LINE: u32 = 40;
/// Wide enough that a line of keystrokes never wraps.
const PTY_COLUMNS: u32 = 500;
const CTRL_U: u8 = 0x15;

/// One target's soak.
#[derive(Serialize)]
struct SoakReport {
    target: String,
    sessions: u32,
    /// Sessions that got a shell.
    established: u64,
    /// Established sessions lost before the end (closed, broken, or an echo
    /// slower than ECHO_TIMEOUT).
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

/// What one session brought back.
enum Outcome {
    SetupFailed(Failure),
    Ran {
        setup: Duration,
        echo: PhaseHistogram,
        keystrokes: u64,
        /// Why the session ended early, if it did.
        dropped: Option<String>,
    },
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
    let (go, ready) = watch::channel(false);
    let mut sessions = JoinSet::new();
    for index in 0..args.sessions as usize {
        let endpoint = endpoint.clone();
        let user = endpoint.target.users.for_client(index);
        let mut ready = ready.clone();
        let (command, duration, interval) = (args.command.clone(), args.duration, args.interval);
        let stop = stop.clone();
        sessions.spawn(async move {
            let _ = ready.wait_for(|go| *go).await;
            let until = Instant::now() + duration;
            session(&endpoint, &user, command.as_deref(), until, interval, &stop).await
        });
    }
    let started = Instant::now();
    let _ = go.send(true);

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

/// One interactive session from login to logout.
async fn session(
    endpoint: &Endpoint,
    user: &str,
    command: Option<&str>,
    until: Instant,
    interval_ms: u64,
    stop: &Stop,
) -> Outcome {
    let mut timings = Timings::start();
    let (session, mut channel) = match open_shell(endpoint, user, command, &mut timings).await {
        Ok(opened) => opened,
        Err(failure) => return Outcome::SetupFailed(failure),
    };
    timings.lap(Phase::ExecFirstByte);
    let setup = timings.total;
    let mut echo = PhaseHistogram::new();
    let mut keystrokes = 0u64;
    // Keystrokes on the current line, cleared with Ctrl-U when it gets long.
    let mut on_line = 0u32;
    let mut dropped = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    while Instant::now() < until && !stop.is_stopped() {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.stopped() => break,
        }
        if on_line == KEYSTROKES_PER_LINE {
            if let Err(why) = type_and_settle(&mut channel, CTRL_U).await {
                dropped = Some(why);
                break;
            }
            on_line = 0;
        }
        let key = b'a' + (keystrokes % 26) as u8;
        match keystroke(&mut channel, key).await {
            Ok(took) => echo.record(took),
            Err(why) => {
                dropped = Some(why);
                break;
            }
        }
        keystrokes += 1;
        on_line += 1;
    }
    drop(channel);
    // A slow logout is not the soak's concern; errors mean it is already gone.
    let _ = session.close(endpoint).await;
    Outcome::Ran {
        setup,
        echo,
        keystrokes,
        dropped,
    }
}

/// Logs in, asks for a pty and starts the shell (or `command`), then waits
/// for the prompt to settle.
async fn open_shell(
    endpoint: &Endpoint,
    user: &str,
    command: Option<&str>,
    timings: &mut Timings,
) -> Result<(Session, Channel<russh::client::Msg>), Failure> {
    let session = endpoint.login(user, timings).await?;
    let mut channel = session.open_channel(endpoint).await?;
    timings.lap(Phase::ChannelOpen);
    let fail = |e: russh::Error| session.failure(Phase::ExecExit, &e);
    endpoint
        .phase(
            Phase::ExecExit,
            channel.request_pty(true, "xterm", PTY_COLUMNS, 24, 0, 0, &[]),
        )
        .await?
        .map_err(fail)?;
    match command {
        Some(command) => endpoint
            .phase(Phase::ExecExit, channel.exec(true, command))
            .await?
            .map_err(fail)?,
        None => endpoint
            .phase(Phase::ExecExit, channel.request_shell(true))
            .await?
            .map_err(fail)?,
    }
    // Two replies (pty, shell) are due; then the prompt.
    let mut replies = 0;
    let deadline = Instant::now() + endpoint.phase_timeout;
    while replies < 2 {
        let message = tokio::time::timeout_at(deadline.into(), channel.wait())
            .await
            .map_err(|_| {
                Failure::new(
                    FailureKind::Timeout,
                    Phase::ExecExit,
                    "no reply to the pty or shell request",
                )
            })?;
        match message {
            Some(ChannelMsg::Success) => replies += 1,
            Some(ChannelMsg::Failure) => {
                return Err(Failure::new(
                    FailureKind::ChannelFailed,
                    Phase::ExecExit,
                    "the server refused the pty or shell request",
                ))
            }
            Some(
                ChannelMsg::Data { .. }
                | ChannelMsg::ExtendedData { .. }
                | ChannelMsg::WindowAdjusted { .. },
            ) => {}
            _ => {
                return Err(Failure::new(
                    FailureKind::ChannelFailed,
                    Phase::ExecExit,
                    "the shell ended before it started",
                ))
            }
        }
    }
    settle(&mut channel, SETTLE_QUIET, SETTLE_MAX)
        .await
        .map_err(|why| Failure::new(FailureKind::ChannelFailed, Phase::ExecExit, why))?;
    Ok((session, channel))
}

/// Reads and discards output until it has been quiet for `quiet`, at most `max`.
async fn settle(
    channel: &mut Channel<russh::client::Msg>,
    quiet: Duration,
    max: Duration,
) -> Result<(), String> {
    let end = Instant::now() + max;
    loop {
        let wait = quiet.min(end.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            return Ok(());
        }
        match tokio::time::timeout(wait, channel.wait()).await {
            Err(_) => return Ok(()),
            Ok(Some(ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. })) => {}
            Ok(Some(ChannelMsg::WindowAdjusted { .. } | ChannelMsg::Success)) => {}
            Ok(other) => return Err(ended(other)),
        }
    }
}

fn ended(message: Option<ChannelMsg>) -> String {
    match message {
        None => "the connection closed".into(),
        Some(ChannelMsg::ExitStatus { exit_status }) => format!("the shell exited ({exit_status})"),
        Some(other) => format!("the session ended ({other:?})"),
    }
}

async fn type_and_settle(channel: &mut Channel<russh::client::Msg>, key: u8) -> Result<(), String> {
    channel
        .data_bytes(vec![key])
        .await
        .map_err(|e| format!("typing: {e}"))?;
    settle(channel, Duration::from_millis(50), Duration::from_secs(1)).await
}

/// Types `key` and waits for it to come back.
async fn keystroke(channel: &mut Channel<russh::client::Msg>, key: u8) -> Result<Duration, String> {
    let sent = Instant::now();
    channel
        .data_bytes(vec![key])
        .await
        .map_err(|e| format!("typing: {e}"))?;
    let deadline = sent + ECHO_TIMEOUT;
    loop {
        let message = tokio::time::timeout_at(deadline.into(), channel.wait())
            .await
            .map_err(|_| format!("no echo within {ECHO_TIMEOUT:?}"))?;
        match message {
            Some(ChannelMsg::Data { data }) if data.contains(&key) => return Ok(sent.elapsed()),
            Some(ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. }) => {}
            Some(ChannelMsg::WindowAdjusted { .. } | ChannelMsg::Success) => {}
            other => return Err(ended(other)),
        }
    }
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
