//! The subcommands' arguments: what every subcommand takes, and what each
//! adds. Parsed by `cli`, read by `sweep`, `soak` and `throughput`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::levels::{Levels, DEFAULT_LEVELS};
use crate::size::ByteSize;
use crate::target::Target;

/// A stalled server must show up as a timeout, not a hang; a full 300-client
/// level against `docker exec` on two cores takes ~40 s, so allow more.
const DEFAULT_PHASE_TIMEOUT: &str = "60";

/// What every subcommand needs: where to connect and where to write.
#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Target: NAME=HOST:PORT[,user=U][,users=PREFIX:COUNT][,password=P|key=FILE].
    /// Repeat to compare servers; the first one is the baseline of the ratios.
    #[arg(long = "target", value_name = "SPEC", required = true, value_parser = crate::target::parse)]
    pub targets: Vec<Target>,
    /// Seconds each phase (connect, key exchange, auth, open, exec, close) may take.
    #[arg(long, value_name = "SECONDS", default_value = DEFAULT_PHASE_TIMEOUT, value_parser = parse_seconds)]
    pub phase_timeout: Duration,
    /// Directory for CSV, JSON and SVG results (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct SweepArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Parallel connections per level: a list such as 1,10,20 and/or ranges START-END:STEP.
    #[arg(long, value_name = "LIST", default_value = DEFAULT_LEVELS, value_parser = crate::levels::parse)]
    pub levels: Levels,
    /// Command each connection runs.
    #[arg(long, value_name = "CMD", default_value = "true")]
    pub command: String,
    /// Shell command run before each level and target (e.g. remove containers for a cold
    /// run); it sees LOADTEST_TARGET, LOADTEST_LEVEL and LOADTEST_USERS.
    #[arg(long, value_name = "CMD")]
    pub before_level: Option<String>,
    /// Log every user in once before the first level that uses them (with
    /// --before-level: before every level), so containers exist when measuring.
    #[arg(long)]
    pub warm: bool,
    /// Keep measuring a target even after every connection of a level failed.
    #[arg(long)]
    pub keep_going: bool,
}

#[derive(Args, Clone)]
pub struct SoakArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Interactive sessions held at once.
    #[arg(long, default_value = "10", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub sessions: u32,
    /// How long to hold them, in seconds.
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Milliseconds between keystrokes in each session.
    #[arg(long, value_name = "MS", default_value = "200", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub interval: u64,
    /// Run this under the pty instead of the login shell.
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
}

#[derive(Args, Clone)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Bytes moved per session and direction (suffixes K, M, G; KiB, MiB, GiB).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = crate::size::parse)]
    pub bytes: ByteSize,
    /// Sessions (each its own connection) moving bytes at once.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub sessions: u32,
    /// Which way to move the bytes.
    #[arg(long, value_enum, default_value = "both")]
    pub direction: Direction,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// Client to server: stdin of `cat > /dev/null`.
    Push,
    /// Server to client: stdout of `head -c`.
    Pull,
    Both,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{text}: give between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_fractions_and_reject_nonsense() {
        assert_eq!(parse_seconds("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-3").is_err());
        assert!(parse_seconds("soon").is_err());
    }
}
