//! Which `env` requests (OpenSSH's `SetEnv`/`SendEnv`) a session channel takes.
//!
//! The gathering phase ([`super::gather`]) answers each request by
//! [`EnvRequests::offer`] and puts the accepted ones into the process's
//! environment, so what the client was told is what the process gets.
//! OpenSSH's sshd takes any number of any size; here they are
//! bounded, so a client cannot make the proxy (or the agent after it) hold an
//! environment of unbounded size.

use crate::config::Config;

/// Variables one channel may set: far more than a locale and a few of the
/// student's own, small enough that the start message stays small.
pub const MAX_VARIABLES: usize = 64;
/// Longest variable name accepted, in bytes; real names are a few dozen.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest value accepted, in bytes: room for a long `PATH`-like list.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// Why an `env` request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The name is not in `accept_env` (the usual case; not worth a log line).
    #[error("not in accept_env")]
    NotAccepted,
    /// The name is longer than [`MAX_NAME_BYTES`].
    #[error("name longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong,
    /// The value is longer than [`MAX_VALUE_BYTES`].
    #[error("value longer than {MAX_VALUE_BYTES} bytes")]
    ValueTooLong,
    /// The channel already has [`MAX_VARIABLES`].
    #[error("more than {MAX_VARIABLES} variables")]
    TooMany,
}

/// The `env` requests of one session channel so far.
#[derive(Debug, Default)]
pub struct EnvRequests {
    /// Requests accepted (a repeated name counts again).
    accepted: usize,
    /// Whether a refusal for size or count was logged: once per channel.
    logged: bool,
}

impl EnvRequests {
    /// Takes or refuses the next request.
    pub fn offer(&mut self, config: &Config, name: &str, value: &str) -> Result<(), Refusal> {
        if name.len() > MAX_NAME_BYTES {
            return Err(Refusal::NameTooLong);
        }
        if !config.env_allowed(name) {
            return Err(Refusal::NotAccepted);
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(Refusal::ValueTooLong);
        }
        if self.accepted >= MAX_VARIABLES {
            return Err(Refusal::TooMany);
        }
        self.accepted += 1;
        Ok(())
    }

    /// Whether this refusal is the channel's first worth a log line.
    pub fn first_to_log(&mut self, refusal: Refusal) -> bool {
        if refusal == Refusal::NotAccepted || self.logged {
            return false;
        }
        self.logged = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_count_and_size() {
        let config = Config::default();
        let mut env = EnvRequests::default();
        assert_eq!(
            env.offer(&config, "LD_PRELOAD", "x"),
            Err(Refusal::NotAccepted)
        );
        let long = format!("LC_{}", "N".repeat(MAX_NAME_BYTES));
        assert_eq!(env.offer(&config, &long, "x"), Err(Refusal::NameTooLong));
        let big = "v".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(env.offer(&config, "LANG", &big), Err(Refusal::ValueTooLong));
        assert_eq!(
            env.offer(&config, "LANG", &big[..MAX_VALUE_BYTES]),
            Ok(()),
            "exactly the limit is fine"
        );
        for i in 1..MAX_VARIABLES {
            assert_eq!(env.offer(&config, &format!("LC_{i}"), "x"), Ok(()));
        }
        assert_eq!(env.offer(&config, "LC_MORE", "x"), Err(Refusal::TooMany));
        assert_eq!(env.offer(&config, "LANG", "x"), Err(Refusal::TooMany));
    }

    #[test]
    fn one_log_line_per_channel() {
        let mut env = EnvRequests::default();
        assert!(!env.first_to_log(Refusal::NotAccepted));
        assert!(env.first_to_log(Refusal::TooMany));
        assert!(!env.first_to_log(Refusal::TooMany));
        assert!(!env.first_to_log(Refusal::ValueTooLong));
    }
}
