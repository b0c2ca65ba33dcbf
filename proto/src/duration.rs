//! Durations as operators write them in configuration files: `"30s"`, `"15m"`,
//! `"2h"`, `"14d"`, `"1h 30m"`. One type, so every key that takes a duration reads
//! and reports it the same way.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration read from a string such as `"15m"`; `"0"` or `"0s"` is zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// Parses `"15m"`, `"2h"`, `"14d"`, `"1h 30m"`, `"0"`; the error says what is
    /// accepted.
    pub fn parse(text: &str) -> Result<ConfigDuration, String> {
        let trimmed = text.trim();
        if trimmed == "0" {
            return Ok(ConfigDuration(Duration::ZERO));
        }
        humantime::parse_duration(trimmed)
            .map(ConfigDuration)
            .map_err(|e| {
                format!("{text:?} is not a duration like \"30s\", \"15m\", \"2h\" or \"14d\" ({e})")
            })
    }

    /// Whole milliseconds, saturating, for the wire.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// Zero means "off" for most keys.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ConfigDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_operators_write() {
        for (text, secs) in [
            ("30s", 30),
            ("15m", 900),
            ("2h", 7200),
            ("14d", 14 * 86_400),
            ("1h 30m", 5400),
            ("0", 0),
            ("0s", 0),
        ] {
            assert_eq!(
                ConfigDuration::parse(text).unwrap().0.as_secs(),
                secs,
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in ["", "15", "fifteen minutes", "-5m", "5 parsecs"] {
            let err = ConfigDuration::parse(bad).unwrap_err();
            assert!(err.contains("is not a duration like"), "{bad}: {err}");
        }
    }

    #[test]
    fn reads_from_toml() {
        #[derive(Deserialize)]
        struct T {
            d: ConfigDuration,
        }
        let t: T = toml::from_str("d = \"15m\"").unwrap();
        assert_eq!(t.d.as_millis(), 900_000);
        let err = toml::from_str::<T>("d = \"soon\"")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("is not a duration"), "{err}");
    }
}
