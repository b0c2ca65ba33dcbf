//! The timetable: `[[schedule]]` entries that prestart a class's containers
//! `lead` before each of its `at` times, and the prestart keys beside them
//! (`users_file`, `prestart_concurrency`).

use std::collections::HashSet;
use std::path::PathBuf;

use labssh_proto::duration::ConfigDuration;
use labssh_proto::names::{valid_group, GROUP_RULE};
use serde::Deserialize;

use crate::schedule::when::When;

/// Ensures in flight at once per agent for a prestart that names none: enough
/// to keep Docker busy on a node, few enough that students logging in at the
/// same time are not starved.
pub const DEFAULT_PRESTART_CONCURRENCY: u32 = 4;
/// A larger per-agent concurrency only queues in Docker.
pub const MAX_PRESTART_CONCURRENCY: u32 = 64;

/// One entry of the timetable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// Unique name, for logs.
    pub name: String,
    /// The environment to prestart; empty is the default one.
    #[serde(default)]
    pub environment: String,
    /// The class: members of this group in the controller's `users_file`.
    #[serde(default)]
    pub group: Option<String>,
    /// Or a file of login names, one per line (`#` comments).
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// When the class begins: one time or several.
    pub at: OneOrMany,
    /// How long before each `at` to prestart.
    pub lead: ConfigDuration,
}

/// `at = "Mon 09:00"` or `at = ["Mon 09:00", "Thu 14:00"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One time.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The times as written.
    pub fn texts(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(one) => vec![one.as_str()],
            OneOrMany::Many(many) => many.iter().map(String::as_str).collect(),
        }
    }
}

impl ScheduleEntry {
    /// The entry's `at` times; only valid once [`check`] passed.
    pub fn times(&self) -> Vec<When> {
        self.at
            .texts()
            .into_iter()
            .filter_map(|t| When::parse(t).ok())
            .collect()
    }
}

/// Checks every entry, each problem under `schedule.NAME.KEY` (or
/// `schedule[i]` for an entry without a usable name).
pub fn check(
    entries: &[ScheduleEntry],
    environments: &[&str],
    users_file: Option<&PathBuf>,
    problems: &mut Vec<String>,
) {
    let mut names = HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        let key = if entry.name.trim().is_empty() {
            problems.push(format!("schedule[{i}].name: must not be empty"));
            format!("schedule[{i}]")
        } else {
            if !names.insert(entry.name.as_str()) {
                problems.push(format!(
                    "schedule[{i}].name: {:?} is used by an earlier entry; names must be unique",
                    entry.name
                ));
            }
            format!("schedule.{}", entry.name)
        };
        if !entry.environment.is_empty() && !environments.contains(&entry.environment.as_str()) {
            problems.push(format!(
                "{key}.environment: {:?} is not one of the environments ({})",
                entry.environment,
                environments.join(", ")
            ));
        }
        match (&entry.group, &entry.users_file) {
            (None, None) => problems.push(format!("{key}: give group or users_file")),
            (Some(_), Some(_)) => {
                problems.push(format!("{key}: give group or users_file, not both"))
            }
            (Some(group), None) => {
                if !valid_group(group) {
                    problems.push(format!("{key}.group: {group:?}: use {GROUP_RULE}"));
                } else if users_file.is_none() {
                    problems.push(format!(
                        "{key}.group: needs the controller's users_file to read the group's members from"
                    ));
                }
            }
            (None, Some(path)) => {
                if std::fs::metadata(path).map_or(true, |m| m.is_dir()) {
                    problems.push(format!(
                        "{key}.users_file: {} does not exist",
                        path.display()
                    ));
                }
            }
        }
        let texts = entry.at.texts();
        if texts.is_empty() {
            problems.push(format!(
                "{key}.at: give at least one time ({})",
                crate::schedule::when::WHEN_RULE
            ));
        }
        let mut shortest = None;
        for text in texts {
            match When::parse(text) {
                Ok(when) => {
                    shortest = Some(
                        shortest.map_or(when.period(), |p: chrono::Duration| p.min(when.period())),
                    );
                }
                Err(e) => problems.push(format!("{key}.at: {e}")),
            }
        }
        if entry.lead.is_zero() {
            problems.push(format!("{key}.lead: must be more than 0 (\"10m\")"));
        } else if let Some(period) = shortest.and_then(|p| p.to_std().ok()) {
            if entry.lead.0 >= period {
                problems.push(format!(
                    "{key}.lead: {} is not shorter than the time between classes ({})",
                    entry.lead,
                    humantime_days(period)
                ));
            }
        }
    }
}

fn humantime_days(period: std::time::Duration) -> String {
    format!("{} day(s)", period.as_secs() / 86_400)
}

/// Checks `prestart_concurrency`.
pub fn check_concurrency(value: u32, problems: &mut Vec<String>) {
    if value == 0 || value > MAX_PRESTART_CONCURRENCY {
        problems.push(format!(
            "prestart_concurrency: must be 1 to {MAX_PRESTART_CONCURRENCY} (got {value})"
        ));
    }
}
