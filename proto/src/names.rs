//! The names every role checks the same way: students' login names and the
//! groups of the users file. Checked before a name reaches a lookup, a
//! container name, a label or a log line, so a crafted name never names
//! another student's container.

/// POSIX-ish login names, as `useradd` accepts by default.
pub const USER_MAX_LEN: usize = 32;
/// Long enough for course codes with a term (`cs101-2026-fall`), short enough
/// for one line of a summary.
pub const GROUP_MAX_LEN: usize = 64;

/// What a valid login name looks like, for messages.
pub const USER_RULE: &str =
    "lowercase letters, digits, '_' or '-', starting with a letter or '_', at most 32 characters";
/// What a valid group name looks like, for messages.
pub const GROUP_RULE: &str =
    "lowercase letters, digits, '_', '-' or '.', starting with a letter or digit, at most 64 characters";

/// `[a-z_][a-z0-9_-]{0,31}`
pub fn valid_user(user: &str) -> bool {
    let b = user.as_bytes();
    !b.is_empty()
        && b.len() <= USER_MAX_LEN
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

/// `[a-z0-9][a-z0-9_.-]{0,63}`
pub fn valid_group(group: &str) -> bool {
    let b = group.as_bytes();
    !b.is_empty()
        && b.len() <= GROUP_MAX_LEN
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b[1..].iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        for ok in ["alice", "_x", "a-1", &"a".repeat(32)] {
            assert!(valid_user(ok), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "9bob",
            "-bob",
            "bob.x",
            "b b",
            "bоb",
            &"a".repeat(33),
        ] {
            assert!(!valid_user(bad), "{bad}");
        }
    }

    #[test]
    fn groups() {
        for ok in ["cs101", "cs101-2026.fall", "7a", &"g".repeat(64)] {
            assert!(valid_group(ok), "{ok}");
        }
        for bad in ["", "CS101", "-x", ".x", "a b", "a/b", "ä", &"g".repeat(65)] {
            assert!(!valid_group(bad), "{bad}");
        }
    }
}
