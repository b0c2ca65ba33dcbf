//! What a prestart came to: counts by outcome and the failures grouped by
//! reason, as the CLI prints it and the scheduler logs it.

use std::collections::BTreeMap;
use std::fmt;

use labssh_proto::pb;
use pb::PrestartOutcome as Outcome;

/// The tally of a prestart's results.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Users the controller planned for (`planned.total`).
    pub planned: u32,
    /// Containers created and started.
    pub created: u32,
    /// Containers that existed stopped or paused and were started.
    pub started: u32,
    /// Containers already running.
    pub already: u32,
    /// Failed users by reason, each list sorted.
    pub failed: BTreeMap<String, Vec<String>>,
}

impl Summary {
    /// Adds one result.
    pub fn add(&mut self, result: &pb::PrestartResult) {
        match result.outcome() {
            Outcome::Created => self.created += 1,
            Outcome::Started => self.started += 1,
            Outcome::Already => self.already += 1,
            Outcome::Failed | Outcome::Unspecified => {
                let users = self.failed.entry(result.message.clone()).or_default();
                users.push(result.user.clone());
                users.sort();
            }
        }
    }

    /// Results added so far.
    pub fn done(&self) -> u32 {
        self.created + self.started + self.already + self.failed_count()
    }

    /// Users that failed.
    pub fn failed_count(&self) -> u32 {
        self.failed.values().map(|u| u.len() as u32).sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} created, {} started, {} already running, {} failed",
            self.created,
            self.started,
            self.already,
            self.failed_count()
        )?;
        if self.done() < self.planned {
            write!(f, ", {} not done", self.planned - self.done())?;
        }
        for (reason, users) in &self.failed {
            write!(
                f,
                "\n  failed ({}): {reason}\n    {}",
                users.len(),
                users.join(" ")
            )?;
        }
        Ok(())
    }
}

/// The metric label of a user dropped because the caller went away before
/// their turn.
pub const CANCELLED: &str = "cancelled";

/// The metric label of an outcome.
pub fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Created => "created",
        Outcome::Started => "started",
        Outcome::Already => "already",
        Outcome::Failed | Outcome::Unspecified => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(user: &str, outcome: Outcome, message: &str) -> pb::PrestartResult {
        pb::PrestartResult {
            user: user.into(),
            agent: "a".into(),
            outcome: outcome.into(),
            message: message.into(),
        }
    }

    #[test]
    fn failures_are_grouped_by_reason() {
        let mut s = Summary {
            planned: 6,
            ..Default::default()
        };
        s.add(&result("a", Outcome::Created, ""));
        s.add(&result("b", Outcome::Started, ""));
        s.add(&result("c", Outcome::Already, ""));
        s.add(&result("e", Outcome::Failed, "image x missing"));
        s.add(&result("d", Outcome::Failed, "image x missing"));
        assert_eq!(s.failed["image x missing"], ["d", "e"]);
        let text = s.to_string();
        assert!(
            text.starts_with("1 created, 1 started, 1 already running, 2 failed, 1 not done"),
            "{text}"
        );
        assert!(
            text.contains("failed (2): image x missing\n    d e"),
            "{text}"
        );
    }
}
