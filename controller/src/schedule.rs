//! The timetable's task: each `[[schedule]]` entry's prestart fired once per
//! occurrence of each of its `at` times, `lead` before it.
//!
//! An occurrence fires when the clock is inside its window `[at - lead, at)`
//! and it has not fired yet in this process; a controller that starts inside
//! the window fires once its agents have had time to register
//! ([`SETTLE_AFTER_START`]; late is better than not at all), one that starts
//! after `at` leaves that class to ordinary logins. Across a restart nothing
//! is remembered: a controller restarted inside a window fires that occurrence
//! again, which finds the containers it made running and reports them as
//! already there (a prestart is idempotent). After the class the lifecycle
//! rules (idle pause and stop) take the containers over like any others.
//!
//! The clock is a [`Clock`], so tests drive [`Timetable::due`] through any
//! time they like.

pub mod when;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use labssh_proto::pb;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::ScheduleEntry;
use crate::members::read_names;
use crate::prestart::{Prestarter, Summary};
use when::When;

/// The wall clock can jump (NTP, a suspended VM): look again at least this
/// often, however far the next window is.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Keeps a loop whose next window is now from spinning.
const MIN_SLEEP: Duration = Duration::from_millis(200);
/// Nothing fires this soon after the controller starts: agents re-register
/// within their reconnect backoff (at most 5 s) plus a connect timeout (3 s),
/// and a prestart before they are back would crowd the class onto the first
/// agent to return, or fail it for want of any.
pub const SETTLE_AFTER_START: Duration = Duration::from_secs(10);

/// Where the scheduler reads the time.
pub trait Clock: Send + Sync + 'static {
    /// The local time now.
    fn now(&self) -> DateTime<Local>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Local> {
        Local::now()
    }
}

/// One `at` time of one entry and what it last fired.
#[derive(Debug, Clone)]
struct Slot {
    /// Index of the entry in the schedule.
    entry: usize,
    /// The class time.
    when: When,
    /// How long before it to fire.
    lead: chrono::Duration,
    /// The occurrence (class start) it fired last, if any.
    fired: Option<DateTime<Local>>,
}

/// A prestart to run now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    /// Index of the entry in the schedule.
    pub entry: usize,
    /// The start of the class it is for.
    pub class_at: DateTime<Local>,
}

/// The schedule's occurrences and which have fired.
#[derive(Debug, Clone)]
pub struct Timetable {
    /// One slot per (entry, at).
    slots: Vec<Slot>,
}

impl Timetable {
    /// The timetable of validated `entries`.
    pub fn new(entries: &[ScheduleEntry]) -> Self {
        let slots = entries
            .iter()
            .enumerate()
            .flat_map(|(entry, e)| {
                let lead = chrono::Duration::from_std(e.lead.0).unwrap_or(chrono::Duration::MAX);
                e.times().into_iter().map(move |when| Slot {
                    entry,
                    when,
                    lead,
                    fired: None,
                })
            })
            .collect();
        Self { slots }
    }

    /// The occurrences whose window holds `now` and that have not fired; they
    /// count as fired from here on.
    pub fn due(&mut self, now: DateTime<Local>) -> Vec<Firing> {
        let mut due = Vec::new();
        for slot in &mut self.slots {
            let class_at = slot.when.next_after(now);
            if now >= class_at - slot.lead && slot.fired != Some(class_at) {
                slot.fired = Some(class_at);
                due.push(Firing {
                    entry: slot.entry,
                    class_at,
                });
            }
        }
        due
    }

    /// How long until the next window opens (zero if one is open and unfired).
    pub fn next_wake(&self, now: DateTime<Local>) -> Duration {
        self.slots
            .iter()
            .map(|slot| {
                let class_at = slot.when.next_after(now);
                let opens = if slot.fired == Some(class_at) {
                    // This one is done: the next opens before the following class.
                    slot.when.next_after(class_at) - slot.lead
                } else {
                    class_at - slot.lead
                };
                (opens - now).to_std().unwrap_or(Duration::ZERO)
            })
            .min()
            .unwrap_or(MAX_SLEEP)
    }
}

/// Runs the timetable until `stop`: each due occurrence's prestart in its own
/// task, its summary logged.
pub async fn run(
    entries: Vec<ScheduleEntry>,
    prestarter: Arc<Prestarter>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    if entries.is_empty() {
        return;
    }
    let mut table = Timetable::new(&entries);
    let entries = Arc::new(entries);
    info!(entries = entries.len(), "schedule running");
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(SETTLE_AFTER_START) => {}
    }
    loop {
        for firing in table.due(clock.now()) {
            tokio::spawn(fire(entries.clone(), firing, prestarter.clone()));
        }
        let wait = table.next_wake(clock.now()).clamp(MIN_SLEEP, MAX_SLEEP);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    debug!("schedule stopped");
}

/// One occurrence's prestart; its summary is logged and its results counted
/// in the prestart metric.
pub async fn fire(
    entries: Arc<Vec<ScheduleEntry>>,
    firing: Firing,
    prestarter: Arc<Prestarter>,
) -> Option<Summary> {
    let entry = &entries[firing.entry];
    let class_at = firing.class_at.format("%a %Y-%m-%d %H:%M").to_string();
    let mut request = pb::PrestartRequest {
        environment: entry.environment.clone(),
        ..Default::default()
    };
    if let Some(group) = &entry.group {
        request.group = group.clone();
    }
    if let Some(path) = &entry.users_file {
        match read_names(path) {
            Ok(names) => request.users = names,
            Err(e) => {
                warn!(schedule = %entry.name, class = %class_at, "prestart not started: schedule.{}.users_file: {e}", entry.name);
                return None;
            }
        }
    }
    let plan = match prestarter.plan(&request) {
        Ok(plan) => plan,
        Err(e) => {
            warn!(schedule = %entry.name, class = %class_at, "prestart not started: {e}");
            return None;
        }
    };
    info!(schedule = %entry.name, class = %class_at, users = plan.users.len(), environment = %plan.environment, "prestart for a class starting");
    let mut events = prestarter.run(plan);
    let mut summary = Summary::default();
    while let Some(event) = events.recv().await {
        match event.event {
            Some(pb::prestart_event::Event::Planned(p)) => summary.planned = p.total,
            Some(pb::prestart_event::Event::Result(r)) => summary.add(&r),
            None => {}
        }
    }
    if summary.failed.is_empty() {
        info!(schedule = %entry.name, class = %class_at, "prestart done: {summary}");
    } else {
        warn!(schedule = %entry.name, class = %class_at, "prestart done: {summary}");
    }
    Some(summary)
}

#[cfg(test)]
mod tests;
