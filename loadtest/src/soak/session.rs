//! One soak session: log in, start a shell under a pty, type a key every
//! interval and time its echo, log out.

use std::time::{Duration, Instant};

use russh::{Channel, ChannelMsg};

use crate::client::{Endpoint, Session};
use crate::phases::{Failure, FailureKind, Phase, PhaseHistogram, Timings};
use crate::stop::Stop;

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

/// What one session brought back.
pub enum Outcome {
    SetupFailed(Failure),
    Ran {
        setup: Duration,
        echo: PhaseHistogram,
        keystrokes: u64,
        /// Why the session ended early, if it did.
        dropped: Option<String>,
    },
}

/// One interactive session from login to logout.
pub async fn run(
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
