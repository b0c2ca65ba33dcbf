//! The timetable driven through an injected clock, and the schedule's config
//! errors.

use std::sync::Mutex;

use chrono::TimeZone;

use super::*;
use crate::config::{Config, ConfigError};

/// A clock the test sets.
struct FakeClock(Mutex<DateTime<Local>>);

impl FakeClock {
    fn set(&self, t: DateTime<Local>) {
        *self.0.lock().unwrap() = t;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Local> {
        *self.0.lock().unwrap()
    }
}

fn at(d: u32, h: u32, m: u32) -> DateTime<Local> {
    // December 2026: the 7th and 14th are Mondays, the 10th a Thursday.
    Local
        .with_ymd_and_hms(2026, 12, d, h, m, 0)
        .earliest()
        .unwrap()
}

fn schedule(toml: &str) -> Vec<ScheduleEntry> {
    Config::from_toml_str(toml).unwrap().schedule
}

const TWO_TIMES: &str = r#"
[[schedule]]
name = "cs101-lab"
users_file = "/dev/null"
at = ["Mon 09:00", "Thu 14:00"]
lead = "10m"
"#;

#[test]
fn an_entry_fires_at_at_minus_lead_and_not_twice() {
    let entries = schedule(
        "[[schedule]]\nname = \"cs101-lab\"\nusers_file = \"/dev/null\"\nat = \"Mon 09:00\"\nlead = \"10m\"\n",
    );
    let clock = FakeClock(Mutex::new(at(7, 8, 49)));
    let mut table = Timetable::new(&entries);
    assert!(table.due(clock.now()).is_empty(), "a minute early");
    assert_eq!(table.next_wake(clock.now()), Duration::from_secs(60));
    clock.set(at(7, 8, 50));
    assert_eq!(
        table.due(clock.now()),
        [Firing {
            entry: 0,
            class_at: at(7, 9, 0)
        }]
    );
    for later in [at(7, 8, 50), at(7, 8, 55), at(7, 8, 59)] {
        clock.set(later);
        assert!(table.due(clock.now()).is_empty(), "fired twice at {later}");
    }
    // The next window is next week's.
    assert_eq!(
        table.next_wake(clock.now()),
        (at(14, 8, 50) - at(7, 8, 59)).to_std().unwrap()
    );
    clock.set(at(7, 9, 30));
    assert!(table.due(clock.now()).is_empty(), "after the class");
    clock.set(at(14, 8, 51));
    assert_eq!(table.due(clock.now()).len(), 1, "next week's class");
}

#[test]
fn several_times_fire_at_each() {
    let entries = schedule(TWO_TIMES);
    let mut table = Timetable::new(&entries);
    let mut fired = Vec::new();
    // Walk a week minute by minute, from Monday 00:00.
    let mut now = at(7, 0, 0);
    while now < at(14, 0, 0) {
        fired.extend(table.due(now).into_iter().map(|f| (now, f.class_at)));
        now += chrono::Duration::minutes(1);
    }
    assert_eq!(
        fired,
        [(at(7, 8, 50), at(7, 9, 0)), (at(10, 13, 50), at(10, 14, 0))]
    );
}

#[test]
fn a_controller_started_inside_the_window_fires_at_once_and_one_started_after_does_not() {
    let entries = schedule(TWO_TIMES);
    assert_eq!(Timetable::new(&entries).due(at(7, 8, 58)).len(), 1);
    assert!(Timetable::new(&entries).due(at(7, 9, 1)).is_empty());
}

fn problems(toml: &str) -> Vec<String> {
    match Config::from_toml_str(toml) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn config_errors_name_the_key() {
    let found = problems(
        r#"
users_file = ""
prestart_concurrency = 0

[[schedule]]
name = "a"
group = "cs101"
at = ["Mun 09:00", "Mon 25:00"]
lead = "10m"

[[schedule]]
name = "a"
environment = "gpu"
at = "Mon 09:00"
lead = "0"

[[schedule]]
name = "both"
group = "cs101"
users_file = "/dev/null"
at = "09:00"
lead = "1d"

[[schedule]]
name = "bad-group"
group = "CS 101"
at = []
lead = "5m"
"#,
    );
    let expected = [
        "prestart_concurrency: must be 1 to 64",
        "schedule.a.group: needs the controller's users_file",
        "schedule.a.at: \"Mun 09:00\": \"Mun\" is not a day of the week",
        "schedule.a.at: \"Mon 25:00\": \"25:00\" is not a time of day",
        "schedule[1].name: \"a\" is used by an earlier entry",
        "schedule.a.environment: \"gpu\" is not one of the environments (default)",
        "schedule.a: give group or users_file",
        "schedule.a.lead: must be more than 0",
        "schedule.both: give group or users_file, not both",
        "schedule.both.lead: 1day is not shorter than the time between classes (1 day(s))",
        "schedule.bad-group.group: \"CS 101\": use lowercase",
        "schedule.bad-group.at: give at least one time",
    ];
    for want in expected {
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "missing {want:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    let unknown = Config::from_toml_str(
        "[[schedule]]\nname = \"x\"\ngroup = \"g\"\nat = \"09:00\"\nlead = \"5m\"\nleed = \"5m\"\n",
    )
    .unwrap_err();
    assert!(unknown.to_string().contains("leed"), "{unknown}");
}
