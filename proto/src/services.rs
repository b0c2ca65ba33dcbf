//! Names of the services running in students' containers, the same for the controller
//! that lists them, the CLI and the web front door that looks them up:
//! `PORT-USER` in the student's default environment, `PORT-USER-ENV` in another
//! (`8888-alice`, `3000-bob-web`), and `LABEL-USER[-ENV]` where the environment gives
//! the port a friendly name (`jupyter-alice`). Lowercase letters, digits and '-' (and
//! '_' where a login name has one): a DNS label when at most 63 characters, so
//! `https://8888-alice.lab.example.edu/` works under a wildcard name.

/// The longest friendly name of a port.
pub const LABEL_MAX_LEN: usize = 24;
/// What a friendly name looks like, for messages.
pub const LABEL_RULE: &str =
    "lowercase letters and digits, starting with a letter, at most 24 characters (no '-': it separates the parts of a service's name)";

/// `[a-z][a-z0-9]{0,23}`: a friendly name of a port (`jupyter`). Never all digits, so
/// it is never read as a port.
pub fn valid_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= LABEL_MAX_LEN
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// The name of `user`'s service `first` (a port or a friendly name) in `environment`.
pub fn name(first: &str, user: &str, environment: &str, default_environment: &str) -> String {
    if environment == default_environment {
        format!("{first}-{user}")
    } else {
        format!("{first}-{user}-{environment}")
    }
}

/// Whether the service `name` can be `user`'s: `FIRST-USER` or `FIRST-USER-ENV`,
/// FIRST a port or a friendly name. A name of any other form is someone else's (or
/// nobody's).
pub fn could_be_of(name: &str, user: &str) -> bool {
    let Some((first, rest)) = name.split_once('-') else {
        return false;
    };
    let first_ok =
        (!first.is_empty() && first.bytes().all(|b| b.is_ascii_digit())) || valid_label(first);
    first_ok
        && (rest == user
            || rest
                .strip_prefix(user)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|env| !env.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name("8888", "alice", "default", "default"), "8888-alice");
        assert_eq!(name("3000", "bob", "web", "default"), "3000-bob-web");
        assert_eq!(
            name("jupyter", "ann-lee", "gpu", "default"),
            "jupyter-ann-lee-gpu"
        );
    }

    #[test]
    fn labels() {
        for ok in ["jupyter", "rstudio2", "a"] {
            assert!(valid_label(ok), "{ok}");
        }
        for bad in [
            "",
            "8888",
            "2fa",
            "my-app",
            "my_app",
            "Jupyter",
            &"a".repeat(25),
        ] {
            assert!(!valid_label(bad), "{bad}");
        }
    }

    #[test]
    fn only_names_of_the_users_own_form_can_be_theirs() {
        for ok in [
            "8888-alice",
            "3000-alice-web",
            "jupyter-alice",
            "jupyter-alice-gpu-2",
        ] {
            assert!(could_be_of(ok, "alice"), "{ok}");
        }
        for other in [
            "8888-bob",
            "8888-alicex",
            "8888-alice-",
            "8888",
            "alice",
            "-alice",
            "Jupyter-alice",
            "8888-bob-alice",
            "x_y-alice",
        ] {
            assert!(!could_be_of(other, "alice"), "{other}");
        }
        // A user whose name is another's prefix.
        assert!(!could_be_of("8888-ann-lee", "ann-lee-x"));
        assert!(could_be_of("8888-ann-lee", "ann"), "ann's environment lee");
    }
}
