//! `max_startups`: random early drop over all unauthenticated connections, as
//! OpenSSH's `MaxStartups start:rate:full`.

use std::fmt;
use std::str::FromStr;

/// The `start:rate:full` of `max_startups`: below `start` unauthenticated
/// connections none is refused; from `start` a new one is refused with
/// probability `rate`%, rising linearly to 100% at `full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    /// Unauthenticated connections below which none is refused.
    pub start: usize,
    /// Percentage refused at `start` (1 to 100).
    pub rate: u32,
    /// Unauthenticated connections at which every new one is refused.
    pub full: usize,
}

impl MaxStartups {
    /// The percentage (0 to 100) of new connections refused while
    /// `unauthenticated` connections are open.
    pub fn refused_percent(&self, unauthenticated: usize) -> u32 {
        if unauthenticated < self.start {
            return 0;
        }
        if unauthenticated >= self.full {
            return 100;
        }
        // start <= unauthenticated < full, so full > start.
        let past = (unauthenticated - self.start) as u64;
        let span = (self.full - self.start) as u64;
        let rising = u64::from(100 - self.rate) * past / span;
        self.rate + rising as u32
    }

    /// Whether a new connection is refused, given `unauthenticated` connections
    /// open and a `roll` drawn uniformly from 0..100.
    pub fn refuses(&self, unauthenticated: usize, roll: u32) -> bool {
        roll < self.refused_percent(unauthenticated)
    }
}

impl FromStr for MaxStartups {
    type Err = String;

    /// `start:rate:full`, or a single number `n` meaning `n:100:n` (every
    /// connection past `n` refused).
    fn from_str(text: &str) -> Result<MaxStartups, String> {
        let number = |part: &str, what: &str| {
            part.trim()
                .parse::<usize>()
                .map_err(|_| format!("{what} {part:?} is not a whole number"))
        };
        let parts: Vec<&str> = text.split(':').collect();
        let limits = match parts[..] {
            [n] => {
                let n = number(n, "the limit")?;
                MaxStartups {
                    start: n,
                    rate: 100,
                    full: n,
                }
            }
            [start, rate, full] => MaxStartups {
                start: number(start, "start")?,
                rate: u32::try_from(number(rate, "rate")?).unwrap_or(u32::MAX),
                full: number(full, "full")?,
            },
            _ => return Err(format!("{text:?} is not start:rate:full like 300:30:1000")),
        };
        if limits.full == 0 {
            return Err(format!("{text:?}: full must be greater than 0"));
        }
        if limits.start > limits.full {
            return Err(format!("{text:?}: start must not exceed full"));
        }
        if !(1..=100).contains(&limits.rate) {
            return Err(format!("{text:?}: rate must be a percentage from 1 to 100"));
        }
        Ok(limits)
    }
}

impl fmt::Display for MaxStartups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.start, self.rate, self.full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn limits(text: &str) -> MaxStartups {
        text.parse().unwrap()
    }

    #[test]
    fn below_start_none_from_start_rate_rising_to_all_at_full() {
        let m = limits("10:30:100");
        assert_eq!(m.refused_percent(0), 0);
        assert_eq!(m.refused_percent(9), 0);
        assert_eq!(m.refused_percent(10), 30);
        assert_eq!(m.refused_percent(55), 65);
        assert_eq!(m.refused_percent(99), 99);
        assert_eq!(m.refused_percent(100), 100);
        assert_eq!(m.refused_percent(usize::MAX), 100);
        let percents: Vec<u32> = (0..=120).map(|n| m.refused_percent(n)).collect();
        assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
        // Every roll below the percentage refuses, none at or above it.
        assert!(m.refuses(10, 29) && !m.refuses(10, 30));
        assert!(!m.refuses(9, 0));
        assert!(m.refuses(100, 99));
    }

    #[test]
    fn a_seeded_draw_refuses_about_the_percentage() {
        let m = limits("100:30:300");
        let mut rng = StdRng::seed_from_u64(11);
        let mut refused = |open: usize| {
            (0..10_000)
                .filter(|_| m.refuses(open, rng.gen_range(0..100)))
                .count()
        };
        assert_eq!(refused(99), 0);
        assert!((2_700..3_300).contains(&refused(100)), "30% at start");
        assert!((6_200..6_800).contains(&refused(200)), "65% half way");
        assert_eq!(refused(300), 10_000);
    }

    #[test]
    fn one_number_refuses_everything_past_it() {
        let m = limits("5");
        assert_eq!(
            m,
            MaxStartups {
                start: 5,
                rate: 100,
                full: 5
            }
        );
        assert!(!m.refuses(4, 99));
        assert!(m.refuses(5, 0));
        assert_eq!(m.to_string(), "5:100:5");
        assert_eq!(limits(" 1 : 100 : 2 "), limits("1:100:2"));
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        for (text, says) in [
            ("", "whole number"),
            ("10:30", "start:rate:full"),
            ("a:30:100", "start"),
            ("10:x:100", "rate"),
            ("10:30:-1", "full"),
            ("0:30:0", "greater than 0"),
            ("100:30:10", "exceed"),
            ("10:0:100", "percentage"),
            ("10:101:100", "percentage"),
        ] {
            let err = text.parse::<MaxStartups>().unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
