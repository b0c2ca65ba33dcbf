//! An environment's idle and age rules (`idle_pause_after`, `idle_cpu_percent`,
//! `idle_stop_after`, `max_age`, `max_keepalive` on `[environments.NAME]`), checked
//! and sent to agents, which enforce them.

use labssh_proto::duration::ConfigDuration;
use labssh_proto::pb;

/// Under this share of one CPU over the idle window a container counts as idle: a
/// shell prompt, an editor or a language server idle in the background stay under it.
pub const DEFAULT_IDLE_CPU_PERCENT: u32 = 5;

/// The lifecycle keys of one environment, as written; every duration off when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleKeys {
    /// `idle_pause_after`.
    pub idle_pause_after: Option<ConfigDuration>,
    /// `idle_cpu_percent`.
    pub idle_cpu_percent: u32,
    /// `idle_stop_after`.
    pub idle_stop_after: Option<ConfigDuration>,
    /// `max_age`.
    pub max_age: Option<ConfigDuration>,
    /// `max_keepalive`.
    pub max_keepalive: Option<ConfigDuration>,
}

/// Milliseconds for the wire; absent or zero is 0, "off".
fn ms(d: Option<ConfigDuration>) -> u64 {
    d.map_or(0, ConfigDuration::as_millis)
}

impl LifecycleKeys {
    /// The wire form, or `None` when no rule is on (containers then run until an
    /// operator removes them, as before).
    pub fn to_proto(self) -> Option<pb::Lifecycle> {
        let lifecycle = pb::Lifecycle {
            idle_pause_after_ms: ms(self.idle_pause_after),
            idle_cpu_percent: self.idle_cpu_percent,
            idle_stop_after_ms: ms(self.idle_stop_after),
            max_age_ms: ms(self.max_age),
            max_keepalive_ms: ms(self.max_keepalive),
        };
        let on = lifecycle.idle_pause_after_ms
            + lifecycle.idle_stop_after_ms
            + lifecycle.max_age_ms
            + lifecycle.max_keepalive_ms;
        (on > 0).then_some(lifecycle)
    }

    /// Appends the problems, each naming its key through `key`.
    pub fn check(self, key: &dyn Fn(&str) -> String, problems: &mut Vec<String>) {
        if self.idle_cpu_percent > 100 {
            problems.push(format!(
                "{}: {} is more than 100 (percent of one CPU)",
                key("idle_cpu_percent"),
                self.idle_cpu_percent
            ));
        }
        let (pause, stop) = (ms(self.idle_pause_after), ms(self.idle_stop_after));
        if pause > 0 && stop > 0 && stop <= pause {
            problems.push(format!(
                "{}: {} must be longer than idle_pause_after ({}): a container is paused first, then stopped",
                key("idle_stop_after"),
                shown(self.idle_stop_after),
                shown(self.idle_pause_after),
            ));
        }
        let idle = pause.max(stop);
        if ms(self.max_keepalive) > 0 && idle == 0 {
            problems.push(format!(
                "{}: there is nothing to postpone; set idle_pause_after or idle_stop_after too",
                key("max_keepalive")
            ));
        }
    }
}

/// A duration as the operator reads it back.
fn shown(d: Option<ConfigDuration>) -> String {
    d.map_or_else(|| "off".to_owned(), |d| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pause: &str, cpu: u32, stop: &str, keepalive: &str) -> LifecycleKeys {
        let d = |t: &str| (!t.is_empty()).then(|| ConfigDuration::parse(t).unwrap());
        LifecycleKeys {
            idle_pause_after: d(pause),
            idle_cpu_percent: cpu,
            idle_stop_after: d(stop),
            max_age: None,
            max_keepalive: d(keepalive),
        }
    }

    fn problems(k: LifecycleKeys) -> Vec<String> {
        let mut problems = Vec::new();
        k.check(&|f| format!("environments.gpu.{f}"), &mut problems);
        problems
    }

    #[test]
    fn good_rules_go_on_the_wire() {
        let k = keys("15m", 5, "2h", "3h");
        assert!(problems(k).is_empty());
        let p = k.to_proto().unwrap();
        assert_eq!(
            (
                p.idle_pause_after_ms,
                p.idle_cpu_percent,
                p.idle_stop_after_ms
            ),
            (900_000, 5, 7_200_000)
        );
        assert_eq!((p.max_age_ms, p.max_keepalive_ms), (0, 10_800_000));
        assert_eq!(keys("", 5, "", "").to_proto(), None, "no rule, no message");
    }

    #[test]
    fn bad_rules_name_their_key() {
        let p = problems(keys("2h", 5, "15m", ""));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "environments.gpu.idle_stop_after: 15m must be longer than idle_pause_after (2h)"
            ),
            "{p:?}"
        );
        let p = problems(keys("", 101, "", ""));
        assert!(
            p[0].starts_with("environments.gpu.idle_cpu_percent: 101"),
            "{p:?}"
        );
        let p = problems(keys("", 5, "", "3h"));
        assert!(p[0].starts_with("environments.gpu.max_keepalive:"), "{p:?}");
    }
}
