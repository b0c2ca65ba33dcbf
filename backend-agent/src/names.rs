//! Checks on the names that end up in container, volume and host names.
//!
//! The proxy validates user names too; the agent checks again because these strings
//! become Docker object names and paths inside containers.

/// Longest Linux login name the agent accepts (the usual `useradd` limit).
const MAX_USER_LEN: usize = 32;
/// Longest environment name; keeps container and host names within Docker's limits.
const MAX_ENV_LEN: usize = 63;

/// A student's login name: `[a-z_][a-z0-9_-]{0,31}`.
pub fn is_valid_user(user: &str) -> bool {
    let b = user.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_USER_LEN
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

/// An environment name usable in a container name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,62}`.
pub fn is_valid_env(env: &str) -> bool {
    let b = env.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ENV_LEN
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        for ok in ["alice", "_svc", "a-b_c9", &"a".repeat(32)] {
            assert!(is_valid_user(ok), "{ok}");
        }
        for bad in [
            "",
            "Alice",
            "9lives",
            "a b",
            "a/b",
            "..",
            "a.b",
            &"a".repeat(33),
        ] {
            assert!(!is_valid_user(bad), "{bad}");
        }
    }

    #[test]
    fn envs() {
        for ok in ["default", "gpu", "py3.12", "Desk_top-2"] {
            assert!(is_valid_env(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", &"a".repeat(64)] {
            assert!(!is_valid_env(bad), "{bad}");
        }
    }
}
