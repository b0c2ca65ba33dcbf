//! The student's keep-alive: `echo 3h > ~/.labssh-keepalive` postpones idling by that
//! long from when the file was written, never past `max_keepalive` after the student
//! left (their last session, forward or listener closed). The file is the student's
//! own and read as untrusted text: a duration, nothing else.

use std::time::{Duration, SystemTime};

use labssh_proto::duration::ConfigDuration;
use tokio::time::Instant;

use crate::backend::KeepaliveFile;

/// Until when (on the agent's clock) `file` keeps the container awake: its
/// duration from its write time (a time in the future counts as now), capped at
/// `max` after `left`. `None` for a file that says no duration.
pub fn until(
    file: &KeepaliveFile,
    max: Duration,
    left: Instant,
    now: (Instant, SystemTime),
) -> Option<Instant> {
    let first_line = file.text.lines().next().unwrap_or_default();
    let asked = ConfigDuration::parse(first_line).ok()?.0;
    let written_ago = now
        .1
        .duration_since(file.modified)
        .unwrap_or(Duration::ZERO);
    let written = now.0.checked_sub(written_ago).unwrap_or(now.0);
    let wanted = written.checked_add(asked).unwrap_or(now.0 + max);
    Some(wanted.min(left + max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str, ago: Duration, wall: SystemTime) -> KeepaliveFile {
        KeepaliveFile {
            modified: wall - ago,
            text: text.to_owned(),
        }
    }

    #[test]
    fn postpones_as_asked_within_the_cap() {
        let now = (Instant::now(), SystemTime::now());
        let h = Duration::from_secs(3600);
        let left = now.0;
        // Written an hour ago for 3 h: two more hours.
        let until3 = until(&file("3h\n", h, now.1), 12 * h, left, now).unwrap();
        assert_eq!(until3, now.0 + 2 * h);
        // Asked for more than the cap: the cap, from when the student left.
        let capped = until(&file("100h", Duration::ZERO, now.1), 4 * h, left, now).unwrap();
        assert_eq!(capped, left + 4 * h);
        // A write time in the future (touch -d) counts as now.
        let future = KeepaliveFile {
            modified: now.1 + 10 * h,
            text: "1h".to_owned(),
        };
        assert_eq!(until(&future, 12 * h, left, now).unwrap(), now.0 + h);
        // Anything but a duration is no keep-alive.
        for junk in ["", "forever", "-1h", "\u{0}"] {
            assert_eq!(
                until(&file(junk, h, now.1), 12 * h, left, now),
                None,
                "{junk:?}"
            );
        }
    }
}
