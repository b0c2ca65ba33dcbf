//! One command hook: started through the backend (the helper's fast path where the
//! container has it) with no stdin, its output drained and all but the first line of
//! stderr discarded, killed at its deadline.

use std::time::Duration;

use futures::StreamExt;
use labssh_proto::pb;

use super::{Event, Target};
use crate::backend::{ExitStatus, Output, RunAs, SharedBackend, SpawnSpec};

/// The most of a hook's stderr kept: its first line, cut here.
const FIRST_LINE_MAX: usize = 200;
/// How long a killed hook may take to be gone before the agent stops waiting.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// How one hook went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited 0, or the webhook answered 2xx.
    Ok,
    /// It failed: the first line of its stderr, or what went wrong.
    Failed(String),
    /// It was still running at its timeout and was killed (or the webhook did not
    /// answer in time).
    TimedOut(Duration),
    /// No slot came free within its timeout: too many hooks at once.
    NoSlot(Duration),
}

impl Outcome {
    /// Whether it succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    /// The `outcome` label of `labssh_agent_hooks_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed(_) => "failed",
            Outcome::TimedOut(_) => "timed_out",
            Outcome::NoSlot(_) => "skipped",
        }
    }

    /// One line saying why it failed, for logs and the student.
    pub fn reason(&self) -> String {
        match self {
            Outcome::Ok => "it succeeded".to_owned(),
            Outcome::Failed(line) => line.clone(),
            Outcome::TimedOut(t) => format!("it did not finish within {}", secs(*t)),
            Outcome::NoSlot(t) => format!(
                "too many hooks are running on this node; it could not start within {}",
                secs(*t)
            ),
        }
    }
}

fn secs(t: Duration) -> String {
    humantime::format_duration(Duration::from_millis(t.as_millis() as u64)).to_string()
}

/// The hook's process: the student's usual environment, `LABSSH_EVENT`, `LABSSH_USER`
/// and `LABSSH_ENVIRONMENT`, as the environment's uid/gid in the home, or as root in `/`.
pub fn spec(event: Event, hook: &pb::Hook, target: &Target) -> SpawnSpec {
    let vars = [
        ("LABSSH_EVENT", event.name()),
        ("LABSSH_USER", target.user.as_str()),
        ("LABSSH_ENVIRONMENT", target.env.name.as_str()),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let mut spec = SpawnSpec::for_user(&target.user, &target.env, hook.run.clone(), vars, None);
    if hook.as_root {
        spec.run_as = RunAs::Root;
        // Root holds no DAC_OVERRIDE in the container: the student's 0700 home is
        // closed to it, and a failed chdir would be the first line of its stderr.
        spec.workdir = Some("/".to_owned());
    }
    spec
}

/// Runs `spec` in `container` until it exits or `deadline` passes (then it is killed).
pub async fn run(
    backend: &SharedBackend,
    container: &str,
    spec: SpawnSpec,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Outcome {
    let process = match tokio::time::timeout_at(deadline, backend.spawn(container, spec)).await {
        Err(_) => return Outcome::TimedOut(timeout),
        Ok(Err(e)) => return Outcome::Failed(format!("it did not start: {e}")),
        Ok(Ok(process)) => process,
    };
    let control = process.control.clone();
    let mut stdin = process.stdin;
    let mut output = process.output;
    let mut first = FirstLine::default();
    let finished = async {
        // Nothing reads the hook's stdin: EOF at once.
        let _ = stdin.shutdown().await;
        while let Some(chunk) = output.next().await {
            if let Output::Stderr(bytes) = chunk {
                first.push(&bytes);
            }
        }
        control.wait().await
    };
    let status = match tokio::time::timeout_at(deadline, finished).await {
        Ok(status) => status,
        Err(_) => {
            // Dropping the output and stdin hangs the rest of its group up too.
            if let Err(e) = tokio::time::timeout(KILL_GRACE, control.signal("KILL"))
                .await
                .unwrap_or(Ok(()))
            {
                tracing::debug!(error = %e, "cannot kill a hook that timed out");
            }
            return Outcome::TimedOut(timeout);
        }
    };
    match status {
        Ok(ExitStatus::Code(0)) => Outcome::Ok,
        Ok(status) => Outcome::Failed(first.line().unwrap_or_else(|| match status {
            ExitStatus::Code(code) => format!("it exited with status {code}"),
            ExitStatus::Signal(name) => format!("it was killed by SIG{name}"),
        })),
        Err(e) => Outcome::Failed(format!("its exit status is unknown: {e}")),
    }
}

/// The first line of a stream of bytes, at most [`FIRST_LINE_MAX`] of them.
#[derive(Default)]
struct FirstLine {
    bytes: Vec<u8>,
    done: bool,
}

impl FirstLine {
    /// Takes `chunk` into the line until it ends; the rest is dropped.
    fn push(&mut self, chunk: &[u8]) {
        if self.done {
            return;
        }
        let end = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..end.unwrap_or(chunk.len())];
        let room = FIRST_LINE_MAX - self.bytes.len();
        self.bytes.extend_from_slice(&part[..part.len().min(room)]);
        self.done = end.is_some() || self.bytes.len() == FIRST_LINE_MAX;
    }

    /// The line, printable, or `None` if it is blank.
    fn line(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.bytes);
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let clean = clean.trim();
        (!clean.is_empty()).then(|| clean.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_line_is_kept() {
        let mut first = FirstLine::default();
        first.push(b"exam not ");
        first.push(b"open yet\x1b[31m\nsecond line\n");
        first.push(b"third");
        assert_eq!(first.line().as_deref(), Some("exam not open yet [31m"));
        let mut long = FirstLine::default();
        long.push(&[b'x'; 150]);
        long.push(&[b'y'; 150]);
        long.push(b"\n");
        assert_eq!(long.line().unwrap().len(), FIRST_LINE_MAX);
        assert_eq!(FirstLine::default().line(), None);
        let mut blank = FirstLine::default();
        blank.push(b"  \r\n");
        assert_eq!(blank.line(), None);
    }

    #[test]
    fn hooks_run_with_the_labs_variables() {
        let target = Target {
            user: "alice".into(),
            env: pb::Environment {
                name: "default".into(),
                uid: 1000,
                gid: 1000,
                ..Default::default()
            },
            container: "lab-alice.default".into(),
        };
        let mut hook = pb::Hook {
            on: "login".into(),
            run: vec!["/bin/true".into()],
            ..Default::default()
        };
        let spec = spec(Event::Login, &hook, &target);
        let get = |spec: &SpawnSpec, k: &str| {
            spec.env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get(&spec, "LABSSH_EVENT").as_deref(), Some("login"));
        assert_eq!(get(&spec, "LABSSH_USER").as_deref(), Some("alice"));
        assert_eq!(get(&spec, "LABSSH_ENVIRONMENT").as_deref(), Some("default"));
        assert_eq!(
            spec.run_as,
            RunAs::Ids {
                uid: 1000,
                gid: 1000
            }
        );
        assert!(spec.pty.is_none());
        hook.as_root = true;
        assert_eq!(
            super::spec(Event::Login, &hook, &target).run_as,
            RunAs::Root
        );
    }
}
