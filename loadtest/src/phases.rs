//! The phases of one connection, how an attempt can fail, and the
//! histograms a level collects.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Consecutive steps of one attempt. `ExecFirstByte` lies inside `ExecExit`;
/// the others do not overlap, so without it they add up to the total.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// TCP three-way handshake.
    TcpConnect,
    /// Version exchange, key exchange and host key check.
    Kex,
    /// Password or public-key authentication.
    Auth,
    /// Opening the session channel.
    ChannelOpen,
    /// From sending `exec` to the command's first output byte, or to the end
    /// of its output when it prints nothing.
    ExecFirstByte,
    /// From sending `exec` to the exit status.
    ExecExit,
    /// Sending the disconnect and the connection closing.
    Close,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::TcpConnect,
        Phase::Kex,
        Phase::Auth,
        Phase::ChannelOpen,
        Phase::ExecFirstByte,
        Phase::ExecExit,
        Phase::Close,
    ];

    /// The phases that tile the total, in order.
    pub const SEQUENTIAL: [Phase; 6] = [
        Phase::TcpConnect,
        Phase::Kex,
        Phase::Auth,
        Phase::ChannelOpen,
        Phase::ExecExit,
        Phase::Close,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::TcpConnect => "tcp_connect",
            Phase::Kex => "kex",
            Phase::Auth => "auth",
            Phase::ChannelOpen => "channel_open",
            Phase::ExecFirstByte => "exec_first_byte",
            Phase::ExecExit => "exec_exit",
            Phase::Close => "close",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// TCP refused or reset, or the server closed the connection before the
    /// key exchange finished (sshd's MaxStartups does this).
    Refused,
    /// A phase took longer than `--phase-timeout`.
    Timeout,
    /// The server rejected the credentials.
    AuthFailed,
    /// The session channel or the exec request was rejected, or the channel
    /// closed without an exit status.
    ChannelFailed,
    /// The command exited with a non-zero status or a signal.
    NonzeroExit,
    /// Key exchange failed for another reason (no common algorithm, protocol error).
    HandshakeFailed,
    /// The connection broke after the key exchange.
    Disconnected,
    /// Anything else (local errors such as running out of file descriptors).
    Other,
}

impl FailureKind {
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Refused,
        FailureKind::Timeout,
        FailureKind::AuthFailed,
        FailureKind::ChannelFailed,
        FailureKind::NonzeroExit,
        FailureKind::HandshakeFailed,
        FailureKind::Disconnected,
        FailureKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::AuthFailed => "auth_failed",
            FailureKind::ChannelFailed => "channel_failed",
            FailureKind::NonzeroExit => "nonzero_exit",
            FailureKind::HandshakeFailed => "handshake_failed",
            FailureKind::Disconnected => "disconnected",
            FailureKind::Other => "other",
        }
    }

    /// Failures that say the target cannot be used at all, as opposed to
    /// failing under load.
    pub fn is_fatal_when_universal(self) -> bool {
        matches!(
            self,
            FailureKind::Refused
                | FailureKind::AuthFailed
                | FailureKind::HandshakeFailed
                | FailureKind::Timeout
        )
    }
}

/// One failed attempt.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// The phase that failed.
    pub phase: Phase,
    /// What the server or the OS said, for the report.
    pub detail: String,
}

impl Failure {
    pub fn new(kind: FailureKind, phase: Phase, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            phase,
            detail: detail.into(),
        }
    }
}

/// The measured phases of one attempt. Sequential phases are laps of one
/// clock, so they tile the total exactly.
#[derive(Clone, Debug)]
pub struct Timings {
    phases: [Option<Duration>; 7],
    /// From starting the TCP connect to the connection having closed.
    pub total: Duration,
    /// When the attempt started.
    started: Instant,
    /// When the last lap ended.
    last: Instant,
}

impl Timings {
    pub fn start() -> Timings {
        let now = Instant::now();
        Timings {
            phases: [None; 7],
            total: Duration::ZERO,
            started: now,
            last: now,
        }
    }

    /// Ends `phase` now; the next phase starts at the same instant.
    pub fn lap(&mut self, phase: Phase) -> Instant {
        let now = Instant::now();
        self.set(phase, now - self.last);
        self.last = now;
        self.total = now - self.started;
        now
    }

    /// When the current phase started.
    pub fn lap_start(&self) -> Instant {
        self.last
    }

    pub fn set(&mut self, phase: Phase, took: Duration) {
        self.phases[phase.index()] = Some(took);
    }

    pub fn get(&self, phase: Phase) -> Option<Duration> {
        self.phases[phase.index()]
    }
}

/// Histogram range: 1 µs to one hour at three significant digits.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("constant histogram bounds")
}

/// Latencies of one phase (or the total) over the successful attempts of a level.
#[derive(Clone, Debug)]
pub struct PhaseHistogram {
    pub histogram: Histogram<u64>,
    /// Exact sum in µs, so means add up where the histogram's buckets would round.
    pub sum_us: u128,
}

impl Default for PhaseHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl PhaseHistogram {
    pub fn new() -> PhaseHistogram {
        PhaseHistogram {
            histogram: histogram(),
            sum_us: 0,
        }
    }

    pub fn record(&mut self, took: Duration) {
        let us = took.as_micros();
        self.sum_us += us;
        self.histogram
            .saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
    }

    /// Adds another histogram's samples to this one.
    pub fn merge(&mut self, other: &PhaseHistogram) {
        self.sum_us += other.sum_us;
        // Same bounds on both sides, so this cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// `q` in 0..=1, in milliseconds; None when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (self.count() > 0).then(|| us_to_ms(self.histogram.value_at_quantile(q)))
    }

    pub fn max_ms(&self) -> Option<f64> {
        (self.count() > 0).then(|| us_to_ms(self.histogram.max()))
    }

    pub fn min_ms(&self) -> Option<f64> {
        (self.count() > 0).then(|| us_to_ms(self.histogram.min()))
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.sum_us as f64 / self.count() as f64 / 1000.0)
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// How many example messages to keep per failure kind.
const EXAMPLES_PER_KIND: usize = 1;

/// Everything measured for one target at one level.
#[derive(Clone, Debug)]
pub struct LevelStats {
    pub target: String,
    /// Parallel connections started.
    pub level: u32,
    /// Attempts that ran the command to a zero exit status.
    pub ok: u64,
    pub failed: BTreeMap<FailureKind, u64>,
    /// Successful attempts only, so phases and totals describe the same set.
    pub phases: BTreeMap<Phase, PhaseHistogram>,
    pub total: PhaseHistogram,
    /// From releasing the clients to the last one finishing.
    pub wall: Duration,
    /// A message per failure kind, e.g. what the server said.
    pub examples: BTreeMap<FailureKind, Vec<String>>,
}

impl LevelStats {
    pub fn new(target: &str, level: u32) -> LevelStats {
        LevelStats {
            target: target.to_string(),
            level,
            ok: 0,
            failed: FailureKind::ALL.iter().map(|k| (*k, 0)).collect(),
            phases: Phase::ALL
                .iter()
                .map(|p| (*p, PhaseHistogram::new()))
                .collect(),
            total: PhaseHistogram::new(),
            wall: Duration::ZERO,
            examples: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, outcome: &Result<Timings, Failure>) {
        match outcome {
            Ok(timings) => {
                self.ok += 1;
                for phase in Phase::ALL {
                    if let Some(took) = timings.get(phase) {
                        self.phases
                            .get_mut(&phase)
                            .expect("all phases")
                            .record(took);
                    }
                }
                self.total.record(timings.total);
            }
            Err(failure) => {
                *self.failed.entry(failure.kind).or_default() += 1;
                let examples = self.examples.entry(failure.kind).or_default();
                if examples.len() < EXAMPLES_PER_KIND {
                    examples.push(format!("{}: {}", failure.phase.name(), failure.detail));
                }
            }
        }
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    pub fn phase(&self, phase: Phase) -> &PhaseHistogram {
        &self.phases[&phase]
    }

    /// Every attempt failed, and for a reason that load does not explain.
    pub fn target_unusable(&self) -> Option<FailureKind> {
        if self.ok > 0 {
            return None;
        }
        let (kind, _) = self.failed.iter().max_by_key(|(_, n)| **n)?;
        kind.is_fatal_when_universal().then_some(*kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(ms: [u64; 7]) -> Timings {
        let mut t = Timings::start();
        for (phase, ms) in Phase::ALL.iter().zip(ms) {
            t.set(*phase, Duration::from_millis(ms));
        }
        t.total = Phase::SEQUENTIAL.iter().map(|p| t.get(*p).unwrap()).sum();
        t
    }

    #[test]
    fn means_of_sequential_phases_add_up_to_the_total() {
        let mut stats = LevelStats::new("a", 2);
        stats.record(&Ok(timings([1, 2, 3, 4, 5, 6, 7])));
        stats.record(&Ok(timings([3, 5, 7, 11, 13, 17, 19])));
        let sum: f64 = Phase::SEQUENTIAL
            .iter()
            .map(|p| stats.phase(*p).mean_ms().unwrap())
            .sum();
        assert!((sum - stats.total.mean_ms().unwrap()).abs() < 1e-9);
        assert_eq!(stats.ok, 2);
        // The histogram keeps three significant digits.
        let max = stats.total.max_ms().unwrap();
        assert!((62.0..62.1).contains(&max), "{max}");
    }

    #[test]
    fn failures_are_counted_by_kind_with_an_example() {
        let mut stats = LevelStats::new("a", 3);
        for _ in 0..3 {
            stats.record(&Err(Failure::new(
                FailureKind::AuthFailed,
                Phase::Auth,
                "rejected",
            )));
        }
        assert_eq!(stats.failed[&FailureKind::AuthFailed], 3);
        assert_eq!(stats.failed_total(), 3);
        assert_eq!(
            stats.examples[&FailureKind::AuthFailed],
            vec!["auth: rejected"]
        );
        assert_eq!(stats.target_unusable(), Some(FailureKind::AuthFailed));
        assert_eq!(stats.total.quantile_ms(0.5), None);
    }

    #[test]
    fn failing_commands_do_not_make_a_target_unusable() {
        let mut stats = LevelStats::new("a", 1);
        stats.record(&Err(Failure::new(
            FailureKind::NonzeroExit,
            Phase::ExecExit,
            "3",
        )));
        assert_eq!(stats.target_unusable(), None);
    }
}
