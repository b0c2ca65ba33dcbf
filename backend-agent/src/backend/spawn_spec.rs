//! How to start one process in a student's container: program, environment, terminal
//! and identity, as a session asks for it.

use labssh_proto::pb;

/// How to start one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    /// Program and arguments; never empty.
    pub argv: Vec<String>,
    /// The process's environment variables, without duplicates.
    pub env: Vec<(String, String)>,
    /// A terminal, when the client asked for one.
    pub pty: Option<PtySpec>,
    /// The identity the process runs as.
    pub run_as: RunAs,
    /// Working directory; `None` keeps the image's.
    pub workdir: Option<String>,
    /// Keep the process for a re-attach if the agent goes away (labssh-init only):
    /// the session's id and grace.
    pub keep: Option<labssh_helper_proto::wire::Keep>,
}

/// Terminal type and initial size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtySpec {
    /// `TERM`, e.g. "xterm-256color".
    pub term: String,
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// Who a process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAs {
    /// uid 0, gid 0 (with only the capabilities the container has).
    Root,
    /// Numeric ids; they need not exist in the image's /etc/passwd.
    Ids {
        /// User id.
        uid: u32,
        /// Group id.
        gid: u32,
    },
}

impl RunAs {
    /// Who `user`'s processes (and unix sockets) in environment `env` run as: the
    /// environment's ids, root only where the environment says so.
    pub fn student(user: &str, env: &pb::Environment) -> RunAs {
        if env.run_as_root {
            RunAs::Root
        } else if !crate::identity::ids_known(env) {
            // Ids from an identity never filled in: a caller's mistake, and
            // never root (the 0 the catalogue holds there).
            tracing::warn!(user, environment = %env.name, "no uid/gid known for the student; running as nobody");
            RunAs::Ids {
                uid: NOBODY,
                gid: NOBODY,
            }
        } else {
            RunAs::Ids {
                uid: env.uid,
                gid: env.gid,
            }
        }
    }
}

/// Used when an environment names no shell; every image the agent can use has one.
const FALLBACK_SHELL: &str = "/bin/sh";

/// The environment's shell, or `/bin/sh` when it names none.
pub fn shell(env: &pb::Environment) -> &str {
    if env.shell.is_empty() {
        FALLBACK_SHELL
    } else {
        &env.shell
    }
}

/// Where a student's files live inside every one of their containers.
pub fn home_dir(user: &str) -> String {
    format!("/home/{user}")
}

/// The overflow id: what a process runs as when the student's ids are unknown.
const NOBODY: u32 = 65_534;

impl SpawnSpec {
    /// The spec for a process of `user` in environment `env`: runs as the environment's
    /// user in the home directory, with HOME, USER, LOGNAME, SHELL (and TERM with a pty),
    /// then the environment's variables, then `extra_env`; later values win.
    pub fn for_user(
        user: &str,
        env: &pb::Environment,
        argv: Vec<String>,
        extra_env: impl IntoIterator<Item = (String, String)>,
        pty: Option<PtySpec>,
    ) -> SpawnSpec {
        let home = home_dir(user);
        let mut vars = EnvVars::default();
        vars.set("HOME", &home);
        vars.set("USER", user);
        vars.set("LOGNAME", user);
        vars.set("SHELL", shell(env));
        if let Some(pty) = &pty {
            vars.set("TERM", &pty.term);
        }
        let mut from_env: Vec<_> = env.env.iter().collect();
        from_env.sort(); // protobuf maps have no order; make the result reproducible
        for (k, v) in from_env {
            vars.set(k, v);
        }
        for (k, v) in extra_env {
            vars.set(&k, &v);
        }
        SpawnSpec {
            argv,
            env: vars.0,
            pty,
            run_as: RunAs::student(user, env),
            workdir: Some(home),
            keep: None,
        }
    }
}

#[derive(Default)]
struct EnvVars(Vec<(String, String)>);

impl EnvVars {
    fn set(&mut self, key: &str, value: &str) {
        // Such names cannot be passed as KEY=VALUE; skip rather than corrupt others.
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            tracing::debug!(key, "skipping unusable environment variable");
            return;
        }
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.0.push((key.to_owned(), value.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_spec_for_user() {
        let env = pb::Environment {
            name: "default".into(),
            shell: "/bin/sh".into(),
            uid: 1000,
            gid: 100,
            env: [("LANG".to_owned(), "C.UTF-8".to_owned())].into(),
            ..Default::default()
        };
        let pty = PtySpec {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
        };
        let spec = SpawnSpec::for_user(
            "alice",
            &env,
            vec!["/bin/sh".into(), "-l".into()],
            [("LANG".to_owned(), "de_DE.UTF-8".to_owned())],
            Some(pty),
        );
        assert_eq!(
            spec.run_as,
            RunAs::Ids {
                uid: 1000,
                gid: 100
            }
        );
        assert_eq!(spec.workdir.as_deref(), Some("/home/alice"));
        let get = |k: &str| {
            spec.env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("HOME"), Some("/home/alice"));
        assert_eq!(get("LOGNAME"), Some("alice"));
        assert_eq!(get("TERM"), Some("xterm"));
        assert_eq!(get("LANG"), Some("de_DE.UTF-8"));
        assert_eq!(spec.env.iter().filter(|(k, _)| k == "LANG").count(), 1);
    }
}
