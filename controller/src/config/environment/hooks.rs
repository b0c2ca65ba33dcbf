//! `[[environments.NAME.hooks]]`: commands run inside the container and webhooks
//! called on lifecycle events and timers, as configured, checked and sent to agents.

use labssh_proto::duration::ConfigDuration;
use labssh_proto::pb;
use serde::Deserialize;

/// The events a hook can fire on.
pub const EVENTS: [&str; 6] = ["create", "start", "login", "logout", "idle", "stop"];
/// A hook with no `timeout` is killed after this long.
pub const DEFAULT_TIMEOUT: ConfigDuration = ConfigDuration(std::time::Duration::from_secs(30));
/// The longest `timeout`: a hook is a short task, not a service.
pub const MAX_TIMEOUT: ConfigDuration = ConfigDuration(std::time::Duration::from_secs(600));
/// The longest `timeout` of a `create` or `login` hook: the student waits for it, and
/// the proxy gives up on a session that does not start within a minute.
pub const MAX_LOGIN_TIMEOUT: ConfigDuration = ConfigDuration(std::time::Duration::from_secs(50));
/// The shortest `every`: a timer hook more often than this is a busy loop.
pub const MIN_EVERY: ConfigDuration = ConfigDuration(std::time::Duration::from_secs(1));

/// One hook: when (`on`, `after` or `every`) and what (`run` or `webhook`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HookConfig {
    /// The event: create | start | login | logout | idle | stop.
    pub on: Option<String>,
    /// Once, this long after the container starts.
    pub after: Option<ConfigDuration>,
    /// Repeatedly, this often while the container runs.
    pub every: Option<ConfigDuration>,
    /// Program and arguments run inside the container (no shell).
    pub run: Option<Vec<String>>,
    /// "user" (the environment's uid/gid, the default) or "root".
    #[serde(rename = "as")]
    pub run_as: Option<String>,
    /// Killed after this long; [`DEFAULT_TIMEOUT`] when absent.
    pub timeout: Option<ConfigDuration>,
    /// A failing `create` or `login` hook refuses the login.
    pub required: bool,
    /// http:// or https:// URL the agent POSTs the event to as JSON.
    pub webhook: Option<String>,
}

impl HookConfig {
    /// The wire form agents receive.
    pub fn to_proto(&self) -> pb::Hook {
        pb::Hook {
            on: self.on.clone().unwrap_or_default(),
            after_ms: self.after.map_or(0, ConfigDuration::as_millis),
            every_ms: self.every.map_or(0, ConfigDuration::as_millis),
            run: self.run.clone().unwrap_or_default(),
            as_root: self.run_as.as_deref() == Some("root"),
            timeout_ms: self.timeout.unwrap_or(DEFAULT_TIMEOUT).as_millis(),
            required: self.required,
            webhook: self.webhook.clone().unwrap_or_default(),
        }
    }

    /// Appends this hook's problems, each prefixed with `key`
    /// (`environments.NAME.hooks[I]`).
    pub fn check(&self, key: &str, problems: &mut Vec<String>) {
        self.check_when(key, problems);
        self.check_what(key, problems);
        let login = matches!(self.on.as_deref(), Some("create" | "login"));
        if self.required && !login {
            problems.push(format!(
                "{key}.required: only a hook with on = \"create\" or \"login\" can refuse a login"
            ));
        }
        if let Some(timeout) = self.timeout {
            let max = if login {
                MAX_LOGIN_TIMEOUT
            } else {
                MAX_TIMEOUT
            };
            if timeout.is_zero() {
                problems.push(format!("{key}.timeout: must be more than 0"));
            } else if timeout > max {
                problems.push(format!("{key}.timeout: {timeout} is longer than {max}"));
            }
        }
    }

    /// Exactly one of `on`, `after`, `every`, and each one sound.
    fn check_when(&self, key: &str, problems: &mut Vec<String>) {
        let given = [
            self.on.is_some(),
            self.after.is_some(),
            self.every.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            problems.push(format!(
                "{key}: needs exactly one of `on`, `after` and `every`"
            ));
        }
        if let Some(on) = &self.on {
            if !EVENTS.contains(&on.as_str()) {
                problems.push(format!(
                    "{key}.on: {on:?} must be one of {}",
                    EVENTS.join(", ")
                ));
            }
        }
        if self.after.is_some_and(ConfigDuration::is_zero) {
            problems.push(format!(
                "{key}.after: must be more than 0 (use on = \"start\")"
            ));
        }
        if let Some(every) = self.every {
            if every < MIN_EVERY {
                problems.push(format!("{key}.every: {every} is shorter than {MIN_EVERY}"));
            }
        }
    }

    /// Exactly one of `run` and `webhook`, and each one sound.
    fn check_what(&self, key: &str, problems: &mut Vec<String>) {
        match (&self.run, &self.webhook) {
            (Some(_), Some(_)) | (None, None) => {
                problems.push(format!("{key}: needs exactly one of `run` and `webhook`"))
            }
            (Some(run), None) => check_run(run, &format!("{key}.run"), problems),
            (None, Some(url)) => {
                if let Err(why) = check_webhook(url) {
                    problems.push(format!("{key}.webhook: {url:?} {why}"));
                }
                if self.run_as.is_some() {
                    problems.push(format!("{key}.as: a webhook runs nothing in the container"));
                }
            }
        }
        if let Some(run_as) = &self.run_as {
            if !matches!(run_as.as_str(), "user" | "root") {
                problems.push(format!("{key}.as: {run_as:?} must be \"user\" or \"root\""));
            }
        }
    }
}

/// A program and its arguments: the program named, nothing with a NUL byte.
fn check_run(run: &[String], key: &str, problems: &mut Vec<String>) {
    match run.first() {
        None => problems.push(format!("{key}: must name a program")),
        Some(program) if program.trim().is_empty() => problems.push(format!(
            "{key}: the program (first element) must not be empty"
        )),
        Some(_) => {}
    }
    if run.iter().any(|a| a.contains('\0')) {
        problems.push(format!("{key}: arguments must not contain a NUL byte"));
    }
}

/// `http://HOST[:PORT]/...` or `https://...`: why not, if it is not.
fn check_webhook(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not carry a user name or password");
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err("must name a host");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper {
        hooks: Vec<HookConfig>,
    }

    fn load(text: &str) -> Result<Vec<HookConfig>, String> {
        toml::from_str::<Wrapper>(text)
            .map(|w| w.hooks)
            .map_err(|e| e.to_string())
    }

    fn problems(text: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, hook) in load(text).unwrap().iter().enumerate() {
            hook.check(&format!("environments.x.hooks[{i}]"), &mut problems);
        }
        problems
    }

    #[test]
    fn the_issues_example_reads_and_converts() {
        let text = r#"
            [[hooks]]
            on = "create"
            run = ["/usr/local/bin/fetch-course-files"]
            as = "root"
            timeout = "30s"
            required = false
            [[hooks]]
            after = "50m"
            run = ["sh", "-c", "wall 'lab ends in 10 minutes'"]
            [[hooks]]
            on = "login"
            webhook = "https://grades.example.edu/labssh"
        "#;
        assert_eq!(problems(text), Vec::<String>::new());
        let wire: Vec<_> = load(text)
            .unwrap()
            .iter()
            .map(HookConfig::to_proto)
            .collect();
        assert_eq!(wire[0].on, "create");
        assert!(wire[0].as_root);
        assert_eq!(wire[0].timeout_ms, 30_000);
        assert_eq!((wire[1].on.as_str(), wire[1].after_ms), ("", 3_000_000));
        assert!(!wire[1].as_root);
        assert_eq!(wire[1].timeout_ms, DEFAULT_TIMEOUT.as_millis());
        assert_eq!(wire[2].webhook, "https://grades.example.edu/labssh");
        assert!(wire[2].run.is_empty());
    }

    #[test]
    fn bad_hooks_are_named() {
        let found = problems(
            r#"
            [[hooks]]
            on = "login"
            every = "5m"
            run = ["/bin/true"]
            [[hooks]]
            on = "boot"
            webhook = "ftp://x/"
            [[hooks]]
            on = "logout"
            required = true
            run = []
            [[hooks]]
            every = "10ms"
            run = [""]
            as = "admin"
            [[hooks]]
            on = "login"
            webhook = "https:///path"
            timeout = "5m"
            [[hooks]]
            on = "stop"
            run = ["/bin/true"]
            webhook = "http://a/"
            [[hooks]]
            after = "0s"
            webhook = "http://u:p@a/"
            as = "root"
        "#,
        );
        let expect = [
            "environments.x.hooks[0]: needs exactly one of `on`, `after` and `every`",
            "environments.x.hooks[1].on: \"boot\" must be one of create, start, login, logout, idle, stop",
            "environments.x.hooks[1].webhook: \"ftp://x/\" must start with http:// or https://",
            "environments.x.hooks[2].run: must name a program",
            "environments.x.hooks[2].required: only a hook with on = \"create\" or \"login\"",
            "environments.x.hooks[3].every: 10ms is shorter than 1s",
            "environments.x.hooks[3].run: the program (first element) must not be empty",
            "environments.x.hooks[3].as: \"admin\" must be \"user\" or \"root\"",
            "environments.x.hooks[4].webhook: \"https:///path\" must name a host",
            "environments.x.hooks[4].timeout: 5m is longer than 50s",
            "environments.x.hooks[5]: needs exactly one of `run` and `webhook`",
            "environments.x.hooks[6].after: must be more than 0",
            "environments.x.hooks[6].webhook: \"http://u:p@a/\" must not carry a user name",
            "environments.x.hooks[6].as: a webhook runs nothing in the container",
        ];
        for want in expect {
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn typos_and_bad_durations_fail_to_read() {
        let typo =
            load("[[hooks]]\non = \"login\"\nrun = [\"/bin/true\"]\nrequire = true").unwrap_err();
        assert!(typo.contains("unknown field `require`"), "{typo}");
        let soon = load("[[hooks]]\nafter = \"soon\"\nrun = [\"/bin/true\"]").unwrap_err();
        assert!(soon.contains("is not a duration"), "{soon}");
    }

    #[test]
    fn webhook_hosts() {
        for good in [
            "http://127.0.0.1:8080/hook",
            "https://grades.example.edu",
            "http://[::1]:9/x",
        ] {
            assert_eq!(check_webhook(good), Ok(()), "{good}");
        }
        for bad in [
            "http://",
            "https://:80/",
            "http://[]/",
            "grades.example.edu",
            "http://a b/",
        ] {
            assert!(check_webhook(bad).is_err(), "{bad}");
        }
    }
}
