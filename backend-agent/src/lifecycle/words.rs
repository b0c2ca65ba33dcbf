//! What a student reads while their session waits for the container: one line per
//! step, on stderr (the proxy prefixes "labssh: ").

use std::time::Duration;

use crate::backend::{EnsureStep, Renewal};

/// A length as a person says it: "40 s", "15 min", "2 h", "14 d".
pub fn spoken(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=89 => format!("{} s", s.max(1)),
        90..=5399 => format!("{} min", (s + 30) / 60),
        5400..=172_799 => format!("{} h", (s + 1800) / 3600),
        _ => format!("{} d", (s + 43_200) / 86_400),
    }
}

/// The line for `step`; `stopped_after` is how long the container had idled when it
/// was stopped (if the lifecycle stopped it), `estimate` how long starts take here.
pub fn line(
    step: EnsureStep,
    stopped_after: Option<Duration>,
    estimate: Option<Duration>,
) -> String {
    let about = estimate
        .map(|e| format!(" (about {} s)", e.as_secs_f64().ceil().max(1.0) as u64))
        .unwrap_or_default();
    match step {
        EnsureStep::Unpausing => "waking your paused container…".to_owned(),
        EnsureStep::Starting => match stopped_after {
            Some(idle) => format!(
                "your container was stopped after {} idle; starting it{about}",
                spoken(idle)
            ),
            None => format!("starting your container…{about}"),
        },
        EnsureStep::Creating => "creating your container…".to_owned(),
        EnsureStep::Recreating(Renewal::MaxAge(age)) => format!(
            "your container is {} old; making a fresh one (your home is kept)…",
            spoken(age)
        ),
        EnsureStep::Recreating(Renewal::Outdated) => {
            "your environment was updated; making a fresh container (your home is kept)…".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_the_issue_says() {
        let h2 = Duration::from_secs(7200);
        assert_eq!(
            line(
                EnsureStep::Starting,
                Some(h2),
                Some(Duration::from_millis(1400))
            ),
            "your container was stopped after 2 h idle; starting it (about 2 s)"
        );
        assert_eq!(
            line(EnsureStep::Starting, None, None),
            "starting your container…"
        );
        assert_eq!(spoken(Duration::from_secs(3)), "3 s");
        assert_eq!(spoken(Duration::from_secs(900)), "15 min");
        assert_eq!(spoken(Duration::from_secs(14 * 86_400)), "14 d");
        assert!(line(
            EnsureStep::Recreating(Renewal::MaxAge(Duration::from_secs(15 * 86_400))),
            None,
            None
        )
        .contains("15 d old"));
    }
}
