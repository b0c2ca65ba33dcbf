//! Class times as operators write them: `"09:00"` (every day), `"Mon 09:00"`
//! (every week), in the controller's local time; and, for `labssh prestart
//! --at`, one moment: the next such time, or an RFC 3339 timestamp.

use std::fmt;

use chrono::{DateTime, Datelike, Days, Local, NaiveDate, NaiveTime, TimeZone, Weekday};

/// A time of day, on every day or on one day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When {
    /// The day of the week; `None` is every day.
    pub day: Option<Weekday>,
    /// The local time of day.
    pub time: NaiveTime,
}

/// What `at` accepts, for messages.
pub const WHEN_RULE: &str =
    "a local time \"HH:MM\" (every day) or a day and a time \"Mon 09:00\" (every week)";

impl When {
    /// Parses `"09:00"` or `"Mon 09:00"` (days as `Mon`…`Sun` or in full, any case).
    pub fn parse(text: &str) -> Result<When, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (day, time) = match words.as_slice() {
            [time] => (None, *time),
            [day, time] => (
                Some(day.parse::<Weekday>().map_err(|_| {
                    format!("{text:?}: {day:?} is not a day of the week (Mon, Tue, … Sun)")
                })?),
                *time,
            ),
            _ => return Err(format!("{text:?} is not {WHEN_RULE}")),
        };
        let time = NaiveTime::parse_from_str(time, "%H:%M").map_err(|_| {
            format!("{text:?}: {time:?} is not a time of day \"HH:MM\" (00:00 to 23:59)")
        })?;
        Ok(When { day, time })
    }

    /// How often it comes round: a day or a week.
    pub fn period(&self) -> chrono::Duration {
        match self.day {
            Some(_) => chrono::Duration::days(7),
            None => chrono::Duration::days(1),
        }
    }

    /// The first occurrence strictly after `now`.
    pub fn next_after(&self, now: DateTime<Local>) -> DateTime<Local> {
        let mut date = now.date_naive();
        // At most 8 days ahead holds every weekly time; 2 more cover DST gaps.
        for _ in 0..10 {
            if self.day.is_none_or(|d| date.weekday() == d) {
                if let Some(at) = local(date, self.time) {
                    if at > now {
                        return at;
                    }
                }
            }
            date = date + Days::new(1);
        }
        unreachable!("every weekday comes round within 10 days")
    }
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.day {
            Some(day) => write!(f, "{day} {}", self.time.format("%H:%M")),
            None => write!(f, "{}", self.time.format("%H:%M")),
        }
    }
}

/// `date` at `time` in local time. A time a DST change skips is taken an hour
/// later (02:30 on the spring-forward night is 03:30); one it repeats is taken
/// the first time.
fn local(date: NaiveDate, time: NaiveTime) -> Option<DateTime<Local>> {
    let naive = date.and_time(time);
    Local.from_local_datetime(&naive).earliest().or_else(|| {
        Local
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
    })
}

/// The moment `labssh prestart --at` means: an RFC 3339 timestamp, or the next
/// [`When`] after `now`.
pub fn parse_moment(text: &str, now: DateTime<Local>) -> Result<DateTime<Local>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(at.with_timezone(&Local));
    }
    When::parse(text)
        .map(|when| when.next_after(now))
        .map_err(|e| format!("{e}, nor an RFC 3339 time like 2026-09-07T09:00:00+02:00"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .earliest()
            .unwrap()
    }

    #[test]
    fn parses_days_and_times() {
        let w = When::parse("Mon 09:00").unwrap();
        assert_eq!(
            (w.day, w.time.to_string()),
            (Some(Weekday::Mon), "09:00:00".into())
        );
        assert_eq!(
            When::parse("tuesday 13:30").unwrap().day,
            Some(Weekday::Tue)
        );
        assert_eq!(When::parse(" 08:05 ").unwrap().day, None);
        assert_eq!(When::parse("Mon 09:00").unwrap().to_string(), "Mon 09:00");
        for (bad, says) in [
            ("Mun 09:00", "not a day of the week"),
            ("Mon 25:00", "not a time of day"),
            ("Mon 9", "not a time of day"),
            ("", "is not a local time"),
            ("Mon 09:00 extra", "is not a local time"),
        ] {
            let err = When::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_next_occurrence() {
        // 2026-12-02 is a Wednesday.
        let now = at(2026, 12, 2, 10, 0);
        let next = |s: &str| When::parse(s).unwrap().next_after(now);
        assert_eq!(next("11:00"), at(2026, 12, 2, 11, 0));
        assert_eq!(next("10:00"), at(2026, 12, 3, 10, 0), "strictly after");
        assert_eq!(next("Mon 09:00"), at(2026, 12, 7, 9, 0));
        assert_eq!(next("Wed 11:00"), at(2026, 12, 2, 11, 0));
        assert_eq!(next("Wed 09:00"), at(2026, 12, 9, 9, 0));
    }

    #[test]
    fn moments_for_the_cli() {
        let now = at(2026, 12, 2, 10, 0);
        assert_eq!(
            parse_moment("Thu 08:00", now).unwrap(),
            at(2026, 12, 3, 8, 0)
        );
        let exact = parse_moment("2026-12-02T12:00:00Z", now).unwrap();
        assert_eq!(exact.timestamp(), 1_796_212_800);
        let err = parse_moment("noon", now).unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
    }
}
