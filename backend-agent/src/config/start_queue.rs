//! The start queue's keys: `start_concurrency` and `start_queue_limit`.

use super::Config;

/// More containers than this starting at once only makes each start slower.
const MAX_START_CONCURRENCY: u32 = 256;
/// More students than this waiting on one node would wait for many minutes.
const MAX_START_QUEUE_LIMIT: u32 = 100_000;

impl Config {
    /// Both keys between 1 and a sane ceiling.
    pub(super) fn check_start_queue(&self, problems: &mut Vec<String>) {
        for (key, value, max) in [
            (
                "start_concurrency",
                self.start_concurrency,
                MAX_START_CONCURRENCY,
            ),
            (
                "start_queue_limit",
                self.start_queue_limit,
                MAX_START_QUEUE_LIMIT,
            ),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be greater than 0"));
            } else if value > max {
                problems.push(format!("{key}: {value} is more than {max}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use crate::start_queue::{DEFAULT_START_CONCURRENCY, DEFAULT_START_QUEUE_LIMIT};

    #[test]
    fn the_queue_keys_parse_with_defaults() {
        let c = Config::from_toml_str("start_concurrency = 8\nstart_queue_limit = 40").unwrap();
        assert_eq!((c.start_concurrency, c.start_queue_limit), (8, 40));
        let c = Config::default();
        assert_eq!(
            (c.start_concurrency, c.start_queue_limit),
            (DEFAULT_START_CONCURRENCY, DEFAULT_START_QUEUE_LIMIT)
        );
    }

    #[test]
    fn zero_and_absurd_values_are_refused_by_key() {
        let e = Config::from_toml_str("start_concurrency = 0\nstart_queue_limit = 0")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("start_concurrency: must be greater than 0"),
            "{e}"
        );
        assert!(
            e.contains("start_queue_limit: must be greater than 0"),
            "{e}"
        );
        let e = Config::from_toml_str("start_concurrency = 10000\nstart_queue_limit = 9999999")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("start_concurrency: 10000 is more than 256"),
            "{e}"
        );
        assert!(
            e.contains("start_queue_limit: 9999999 is more than 100000"),
            "{e}"
        );
        let e = Config::from_toml_str("start_concurrency = -1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("start_concurrency"), "{e}");
    }
}
