//! The one configuration error of every role: its file could not be read, its TOML
//! did not parse, or its values break rules.
//!
//! The proxy, the controller and the agent share this shape; each keeps the wording
//! operators already know from it (and its tests check), chosen by [`ConfigRole`].
//! Every message names the file when there is one, and every offending key.

use std::fmt;
use std::path::{Path, PathBuf};

/// Which role's configuration it is; decides the wording of the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigRole {
    /// `proxy.toml`.
    Proxy,
    /// `controller.toml`.
    Controller,
    /// `agent.toml`.
    Agent,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// Whose configuration.
        role: ConfigRole,
        /// The file that was asked for.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    Parse {
        /// Whose configuration.
        role: ConfigRole,
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The parser's message, which names the offending key and line.
        message: String,
    },
    /// The values parsed but break one or more rules.
    Invalid {
        /// Whose configuration.
        role: ConfigRole,
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// Every problem found, each starting with the key it is about.
        problems: Vec<String>,
    },
}

impl ConfigError {
    /// `Ok` when `problems` is empty, else [`ConfigError::Invalid`] with all of them.
    pub fn check(role: ConfigRole, problems: Vec<String>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                role,
                path: None,
                problems,
            })
        }
    }

    /// Reads the file at `path` and hands its text to `parse`; errors name the file.
    pub fn load<T>(
        role: ConfigRole,
        path: &Path,
        parse: impl FnOnce(&str) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            role,
            path: path.to_owned(),
            source,
        })?;
        parse(&text).map_err(|e| e.in_file(path))
    }

    /// The same error, said of the file at `path`.
    fn in_file(self, file: &Path) -> ConfigError {
        match self {
            ConfigError::Parse { role, message, .. } => ConfigError::Parse {
                role,
                path: Some(file.to_owned()),
                message,
            },
            ConfigError::Invalid { role, problems, .. } => ConfigError::Invalid {
                role,
                path: Some(file.to_owned()),
                problems,
            },
            read @ ConfigError::Read { .. } => read,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConfigRole::*;
        match self {
            ConfigError::Read { role, path, source } => {
                let path = path.display();
                match role {
                    Proxy => write!(f, "{path}: {source}"),
                    Controller => write!(f, "cannot read controller config {path}: {source}"),
                    Agent => write!(f, "cannot read config file {path}: {source}"),
                }
            }
            ConfigError::Parse {
                role,
                path,
                message,
            } => {
                let path = path.as_deref().map(Path::display);
                match (role, path) {
                    (Proxy, Some(p)) => write!(f, "{p}: {message}"),
                    (Proxy, None) => write!(f, "<proxy config>: {message}"),
                    (Controller, Some(p)) => write!(f, "invalid controller config {p}: {message}"),
                    (Controller, None) => {
                        write!(f, "invalid controller config <string>: {message}")
                    }
                    (Agent, Some(p)) => write!(f, "invalid config file {p}: {message}"),
                    (Agent, None) => write!(f, "invalid config: {message}"),
                }
            }
            ConfigError::Invalid {
                role,
                path,
                problems,
            } => match role {
                Proxy => write!(
                    f,
                    "invalid proxy configuration:\n  {}",
                    problems.join("\n  ")
                ),
                Controller => {
                    let n = problems.len();
                    let s = if n == 1 { "" } else { "s" };
                    write!(f, "invalid controller config ({n} problem{s}):")?;
                    problems.iter().try_for_each(|p| write!(f, "\n  - {p}"))
                }
                Agent => match path {
                    Some(p) => write!(f, "invalid config file {}: ", p.display()),
                    None => write!(f, "invalid config: "),
                }
                .and_then(|()| f.write_str(&problems.join("; "))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(role: ConfigRole, path: Option<&str>, problems: &[&str]) -> String {
        ConfigError::Invalid {
            role,
            path: path.map(PathBuf::from),
            problems: problems.iter().map(|p| p.to_string()).collect(),
        }
        .to_string()
    }

    #[test]
    fn each_role_keeps_its_wording() {
        assert_eq!(
            invalid(ConfigRole::Proxy, None, &["a: x", "b: y"]),
            "invalid proxy configuration:\n  a: x\n  b: y"
        );
        assert_eq!(
            invalid(ConfigRole::Controller, Some("c.toml"), &["a: x"]),
            "invalid controller config (1 problem):\n  - a: x"
        );
        assert_eq!(
            invalid(ConfigRole::Agent, Some("agent.toml"), &["a: x", "b: y"]),
            "invalid config file agent.toml: a: x; b: y"
        );
        assert_eq!(
            invalid(ConfigRole::Agent, None, &["a: x"]),
            "invalid config: a: x"
        );
        let parse = |role, path: Option<&str>| {
            ConfigError::Parse {
                role,
                path: path.map(PathBuf::from),
                message: "unknown field `x`".into(),
            }
            .to_string()
        };
        assert_eq!(
            parse(ConfigRole::Proxy, None),
            "<proxy config>: unknown field `x`"
        );
        assert_eq!(
            parse(ConfigRole::Controller, Some("c.toml")),
            "invalid controller config c.toml: unknown field `x`"
        );
        assert_eq!(
            parse(ConfigRole::Agent, None),
            "invalid config: unknown field `x`"
        );
    }

    #[test]
    fn load_names_the_file_and_keeps_the_cause() {
        let missing = Path::new("/nonexistent/labssh/agent.toml");
        let e = ConfigError::load(ConfigRole::Agent, missing, |_| Ok(())).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(std::error::Error::source(&e).is_some());
        assert!(e
            .to_string()
            .starts_with("cannot read config file /nonexistent/labssh/agent.toml: "));

        let dir = std::env::temp_dir().join(format!("labssh-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.toml");
        std::fs::write(&file, "capacity = 0\n").unwrap();
        let e = ConfigError::load(ConfigRole::Agent, &file, |text| {
            assert_eq!(text, "capacity = 0\n");
            ConfigError::check(ConfigRole::Agent, vec!["capacity: must be > 0".into()])
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "invalid config file {}: capacity: must be > 0",
                file.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(ConfigError::check(ConfigRole::Proxy, Vec::new()).is_ok());
    }
}
