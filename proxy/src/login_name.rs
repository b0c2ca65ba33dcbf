//! Parsing of SSH login names: `alice`, `alice+env`, or `alice+` (the student's
//! self-service login, which the proxy answers itself: [`LoginName::helpdesk`]).
//!
//! Names are checked against a safe set before they reach any lookup,
//! container name, label or log line, so a crafted username can never name
//! another student's container.

/// Separates the user from the environment in `alice+gpu`.
pub const ENV_SEPARATOR: char = '+';
/// POSIX-ish login names, as `useradd` accepts by default.
pub const USER_MAX_LEN: usize = labssh_proto::names::USER_MAX_LEN;
/// Environment names share the container-name alphabet.
pub const ENV_MAX_LEN: usize = 32;

/// A validated login: the user and the environment they asked for
/// (`None` means the default environment).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginName {
    /// The account in the users file.
    pub user: String,
    /// The environment requested after `+`, if any.
    pub environment: Option<String>,
    /// `alice+`: the student's self-service commands (list, stop, start, reset
    /// their containers), answered by the proxy with no container involved.
    pub helpdesk: bool,
}

/// Why a login name was refused. The message is safe to show the student.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginNameError {
    #[error("invalid username: use lowercase letters, digits, '_' or '-', starting with a letter or '_', at most {USER_MAX_LEN} characters")]
    User,
    #[error("invalid environment name after '+': use lowercase letters, digits, '_' or '-', at most {ENV_MAX_LEN} characters")]
    Environment,
}

impl LoginName {
    /// Parses `user` or `user+env`.
    pub fn parse(login: &str) -> Result<LoginName, LoginNameError> {
        let (user, environment) = match login.split_once(ENV_SEPARATOR) {
            Some((user, env)) => (user, Some(env)),
            None => (login, None),
        };
        if !valid_user(user) {
            return Err(LoginNameError::User);
        }
        let helpdesk = environment == Some("");
        if let Some(env) = environment.filter(|_| !helpdesk) {
            if !valid_environment(env) {
                return Err(LoginNameError::Environment);
            }
        }
        Ok(LoginName {
            user: user.to_string(),
            environment: environment.filter(|_| !helpdesk).map(str::to_string),
            helpdesk,
        })
    }
}

/// `[a-z_][a-z0-9_-]{0,31}`, the rule every role shares.
pub fn valid_user(user: &str) -> bool {
    labssh_proto::names::valid_user(user)
}

/// `[a-z0-9][a-z0-9_-]{0,31}`
pub fn valid_environment(env: &str) -> bool {
    let mut chars = env.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
        _ => return false,
    }
    env.len() <= ENV_MAX_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_environment_logins() {
        assert_eq!(
            LoginName::parse("alice").unwrap(),
            LoginName {
                user: "alice".into(),
                environment: None,
                helpdesk: false,
            }
        );
        assert_eq!(
            LoginName::parse("alice+").unwrap(),
            LoginName {
                user: "alice".into(),
                environment: None,
                helpdesk: true,
            }
        );
        assert_eq!(
            LoginName::parse("alice+gpu").unwrap(),
            LoginName {
                user: "alice".into(),
                environment: Some("gpu".into()),
                helpdesk: false,
            }
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        for bad in [
            "",
            "Alice",
            "al ice",
            "../bob",
            "bob;rm",
            "-bob",
            "9bob",
            "bob/x",
            "bob\0",
            "bob.x",
            "ab\u{e9}",
            &"a".repeat(33),
        ] {
            assert_eq!(LoginName::parse(bad), Err(LoginNameError::User), "{bad:?}");
        }
        for bad in [
            "alice++",
            "alice+GPU",
            "alice+gpu+x",
            "alice+../x",
            "alice+-x",
        ] {
            assert_eq!(
                LoginName::parse(bad),
                Err(LoginNameError::Environment),
                "{bad:?}"
            );
        }
    }
}
