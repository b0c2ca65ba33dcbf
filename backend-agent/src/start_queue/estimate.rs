//! How long a place in the start queue takes: a moving average of the last admitted
//! starts, spread over the concurrency.

use std::collections::VecDeque;
use std::time::Duration;

/// Starts remembered for the average: enough to smooth one slow start, few enough to
/// follow a node getting busier within a class's burst.
const WINDOW: usize = 16;
/// What a start is guessed to take before any was measured: about a cold
/// `docker run` of a small image on a loaded node.
const FIRST_GUESS: Duration = Duration::from_secs(2);

/// The moving average of recent start durations.
#[derive(Debug, Default)]
pub struct Estimate {
    recent: VecDeque<Duration>,
}

impl Estimate {
    /// Remembers one admitted start that took `took`.
    pub fn record(&mut self, took: Duration) {
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(took);
    }

    /// The average start, or the first guess when none was measured.
    pub fn average(&self) -> Duration {
        if self.recent.is_empty() {
            return FIRST_GUESS;
        }
        self.recent.iter().sum::<Duration>() / self.recent.len() as u32
    }

    /// About how long one with `ahead` waiting before them waits and starts, when
    /// `concurrency` start at once: the waves before theirs, and their own.
    pub fn wait(&self, ahead: usize, concurrency: usize) -> Duration {
        let waves = ahead / concurrency.max(1) + 1;
        self.average() * waves as u32
    }
}

/// Whole seconds for the student's line, at least 1.
pub fn seconds(d: Duration) -> u64 {
    (d.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_recent_starts_and_the_wait_counts_waves() {
        let mut e = Estimate::default();
        assert_eq!(e.average(), FIRST_GUESS);
        e.record(Duration::from_secs(1));
        e.record(Duration::from_secs(3));
        assert_eq!(e.average(), Duration::from_secs(2));
        assert_eq!(e.wait(0, 2), Duration::from_secs(2));
        assert_eq!(e.wait(1, 2), Duration::from_secs(2));
        assert_eq!(e.wait(2, 2), Duration::from_secs(4));
        assert_eq!(e.wait(5, 2), Duration::from_secs(6));
        for _ in 0..WINDOW {
            e.record(Duration::from_secs(5));
        }
        assert_eq!(e.average(), Duration::from_secs(5), "old starts forgotten");
        assert_eq!(seconds(Duration::from_millis(10)), 1);
        assert_eq!(seconds(Duration::from_millis(8200)), 9);
    }
}
