//! One log line per key per window: the first event of a window is logged, the
//! rest are counted, and the count is reported once the window ends. Pure: the
//! caller passes the time.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Note {
    /// Log it; `suppressed` events of the same key went unlogged since the
    /// last line about it.
    Log { suppressed: u64 },
    /// Counted, not logged.
    Quiet,
}

/// A key's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// When its logged event happened.
    since: Instant,
    /// Events counted and not logged since.
    suppressed: u64,
}

/// Per-key log windows, at most `max_keys` of them; events of further keys
/// share the `overflow` key, so a spray of addresses cannot grow the table
/// nor the log without bound.
#[derive(Debug)]
pub(crate) struct LogThrottle<K> {
    /// Length of a window.
    window: Duration,
    /// Most keys tracked at once.
    max_keys: usize,
    /// The key events of untracked keys are counted under.
    overflow: K,
    /// Each key's window.
    windows: HashMap<K, Window>,
}

impl<K: Hash + Eq + Clone> LogThrottle<K> {
    pub(crate) fn new(window: Duration, max_keys: usize, overflow: K) -> Self {
        LogThrottle {
            window,
            max_keys,
            overflow,
            windows: HashMap::new(),
        }
    }

    /// Notes one event of `key` at `now`, and says whether to log it. Returns
    /// the key the event was counted under too (`overflow` once the table is
    /// full).
    pub(crate) fn note(&mut self, key: K, now: Instant) -> (K, Note) {
        let key = if self.windows.contains_key(&key) || self.windows.len() < self.max_keys {
            key
        } else {
            self.overflow.clone()
        };
        let fresh = Window {
            since: now,
            suppressed: 0,
        };
        let note = match self.windows.get_mut(&key) {
            Some(w) if now.saturating_duration_since(w.since) < self.window => {
                w.suppressed += 1;
                Note::Quiet
            }
            Some(w) => {
                let suppressed = w.suppressed;
                *w = fresh;
                Note::Log { suppressed }
            }
            None => {
                self.windows.insert(key.clone(), fresh);
                Note::Log { suppressed: 0 }
            }
        };
        (key, note)
    }

    /// Forgets every window that has ended by `now`; returns the keys among
    /// them with events still unreported, and how many.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(K, u64)> {
        let mut unreported = Vec::new();
        let window = self.window;
        self.windows.retain(|key, w| {
            let open = now.saturating_duration_since(w.since) < window;
            if !open && w.suppressed > 0 {
                unreported.push((key.clone(), w.suppressed));
            }
            open
        });
        unreported
    }

    /// Keys tracked now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn first_event_of_a_window_is_logged_the_rest_counted_and_reported_once() {
        let mut t = LogThrottle::new(WINDOW, 100, "other");
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.note("a", at(0)).1, Note::Log { suppressed: 0 });
        for s in 1..60 {
            assert_eq!(t.note("a", at(s)).1, Note::Quiet, "{s}");
        }
        // Another key has its own window.
        assert_eq!(t.note("b", at(30)).1, Note::Log { suppressed: 0 });
        // The next window's first event carries the count of the last.
        assert_eq!(t.note("a", at(60)).1, Note::Log { suppressed: 59 });
        assert_eq!(t.note("a", at(61)).1, Note::Quiet);
        // Once a window ends, its count is reported by expire, and only once.
        assert_eq!(t.expire(at(100)), vec![]);
        assert_eq!(t.expire(at(120)), vec![("a", 1)]);
        assert_eq!(t.expire(at(500)), vec![]);
        assert_eq!(t.len(), 0, "b's window ended with nothing to report");
        assert_eq!(t.note("a", at(500)).1, Note::Log { suppressed: 0 });
    }

    #[test]
    fn keys_past_the_bound_share_the_overflow_key() {
        let mut t = LogThrottle::new(WINDOW, 2, "other");
        let now = Instant::now();
        assert_eq!(t.note("a", now), ("a", Note::Log { suppressed: 0 }));
        assert_eq!(t.note("b", now), ("b", Note::Log { suppressed: 0 }));
        // The table is full: "c" counts as "other", which takes its first slot
        // past the bound, then "d" is quiet under it.
        assert_eq!(t.note("c", now), ("other", Note::Log { suppressed: 0 }));
        assert_eq!(t.note("d", now), ("other", Note::Quiet));
        assert_eq!(t.note("a", now), ("a", Note::Quiet));
        assert_eq!(t.len(), 3);
        let mut left = t.expire(now + WINDOW);
        left.sort();
        assert_eq!(left, vec![("a", 1), ("other", 1)]);
    }
}
