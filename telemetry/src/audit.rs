//! The audit log: one JSON line per event an auditor asks about — on a proxy a login
//! or a failed one, a session's start and end, a forwarded connection's open and
//! close; on the controller an operator's action — to a file (rotated by size) or to
//! stdout for a collector (`[audit] path = "-"`).
//!
//! Never a password, a key's private part, a command line or any byte of a session:
//! only who, from where, what kind, where it ran, how it ended and how many bytes.
//!
//! Writing never holds a session up: lines go through a bounded queue to a thread of
//! their own; when the queue is full (a disk slower than the events) a line is dropped
//! and counted (`labssh_errors_total{component="proxy",kind="audit_dropped"}`, or the
//! controller's component), and a
//! failed write (a full disk) is counted as `audit_write_failed` and logged once,
//! never passed on to the student.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use crate::metrics::{self as telemetry, Component};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Lines queued towards the writer thread.
const QUEUE: usize = 8192;

/// `[audit]` in the proxy's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Where the lines go: a file path, `-` for stdout, empty for no audit log.
    pub path: String,
    /// A file is rotated (`PATH` → `PATH.1` → … → `PATH.KEEP`) before it would
    /// grow past this many MiB.
    pub max_mb: u64,
    /// Rotated files kept besides the current one.
    pub keep: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: String::new(),
            max_mb: 100,
            keep: 5,
        }
    }
}

impl AuditConfig {
    /// What is wrong with it, in the config's words.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.path.is_empty() || self.path == "-" {
            return problems;
        }
        if self.max_mb == 0 {
            problems.push("audit.max_mb: must be at least 1".to_owned());
        }
        if self.keep == 0 {
            problems.push("audit.keep: must be at least 1".to_owned());
        }
        problems
    }
}

/// Where events are recorded; cheap to clone. Off, it records nothing.
#[derive(Clone, Default)]
pub struct Audit {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.enabled())
            .finish()
    }
}

struct Inner {
    lines: SyncSender<String>,
    /// Who writes: `proxy` or `controller`, the key of `name` in every line.
    component: Component,
    /// This replica, in every line.
    name: String,
    /// A drop was logged already (once is enough; the metric counts them all).
    dropped_logged: AtomicBool,
}

impl Audit {
    /// Opens the log `config` names (creating the file, mode 0600), or none; each
    /// line names `component` (`"proxy": NAME`).
    pub fn open(config: &AuditConfig, component: Component, name: &str) -> io::Result<Audit> {
        let sink = match config.path.as_str() {
            "" => return Ok(Audit::default()),
            "-" => Sink::Stdout,
            path => Sink::File(Rotating::open(
                PathBuf::from(path),
                config.max_mb.saturating_mul(1024 * 1024),
                config.keep,
            )?),
        };
        let (lines, queued) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("labssh-audit".into())
            .spawn(move || write_lines(queued, sink, component))?;
        Ok(Audit {
            inner: Some(Arc::new(Inner {
                lines,
                component,
                name: name.to_owned(),
                dropped_logged: AtomicBool::new(false),
            })),
        })
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Records `event` with `fields` (a JSON object), stamped with the time and
    /// this replica's name.
    pub fn record(&self, event: &str, fields: Value) {
        let Some(inner) = &self.inner else { return };
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(now()));
        line.insert("event".into(), Value::String(event.to_owned()));
        line.insert(
            inner.component.as_str().into(),
            Value::String(inner.name.clone()),
        );
        if let Value::Object(fields) = fields {
            line.extend(fields);
        }
        let text = Value::Object(line).to_string();
        match inner.lines.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                telemetry::error(inner.component, "audit_dropped");
                if !inner.dropped_logged.swap(true, Ordering::Relaxed) {
                    tracing::error!("the audit log cannot keep up; events are being dropped (counted as audit_dropped)");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                telemetry::error(inner.component, "audit_dropped");
            }
        }
    }
}

/// RFC 3339 in UTC with milliseconds.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

enum Sink {
    Stdout,
    File(Rotating),
}

/// The writer thread: a line at a time, until every sender is gone.
fn write_lines(queued: Receiver<String>, mut sink: Sink, component: Component) {
    let mut failing = false;
    for line in queued {
        let written = match &mut sink {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                writeln!(out, "{line}").and_then(|()| out.flush())
            }
            Sink::File(file) => file.write_line(&line),
        };
        match written {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the audit log is written again");
            }
            Ok(()) => {}
            Err(e) => {
                telemetry::error(component, "audit_write_failed");
                if !std::mem::replace(&mut failing, true) {
                    tracing::error!(error = %e, "cannot write the audit log; its events are lost until it can (counted as audit_write_failed)");
                }
            }
        }
    }
}

/// An append-only file rotated by size.
struct Rotating {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    keep: u32,
}

impl Rotating {
    fn open(path: PathBuf, max: u64, keep: u32) -> io::Result<Rotating> {
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Rotating {
            path,
            file,
            size,
            max,
            keep,
        })
    }

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max {
            self.rotate()?;
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        self.size += len;
        Ok(())
    }

    /// `PATH.{keep-1}` → `PATH.{keep}`, …, `PATH` → `PATH.1`, and a new `PATH`.
    fn rotate(&mut self) -> io::Result<()> {
        for n in (1..self.keep).rev() {
            let from = numbered(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn each_event_is_one_json_line_with_time_event_and_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let config = AuditConfig {
            path: path.display().to_string(),
            ..Default::default()
        };
        let audit = Audit::open(&config, Component::Proxy, "proxy-a").unwrap();
        audit.record("login", json!({"user": "alice", "method": "password"}));
        drop(audit); // the writer finishes the queue and stops
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while lines(&path).is_empty() {
            assert!(std::time::Instant::now() < deadline, "nothing written");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let line = &lines(&path)[0];
        assert_eq!(line["event"], "login");
        assert_eq!(line["proxy"], "proxy-a");
        assert_eq!(line["user"], "alice");
        assert!(line["ts"].as_str().unwrap().ends_with('Z'), "{line}");
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_full_file_is_rotated_and_only_keep_old_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut file = Rotating::open(path.clone(), 100, 2).unwrap();
        for i in 0..10 {
            // 50 bytes a line with its newline: two lines a file.
            file.write_line(&format!("{i:049}")).unwrap();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), format!("{:049}\n{:049}\n", 8, 9));
        assert_eq!(read(&numbered(&path, 1)), format!("{:049}\n{:049}\n", 6, 7));
        assert_eq!(read(&numbered(&path, 2)), format!("{:049}\n{:049}\n", 4, 5));
        assert!(!numbered(&path, 3).exists());
    }

    #[test]
    fn off_records_nothing_and_bad_sizes_are_named() {
        Audit::default().record("login", json!({}));
        let bad = AuditConfig {
            path: "/var/log/labssh/audit.log".into(),
            max_mb: 0,
            keep: 0,
        };
        assert_eq!(
            bad.problems(),
            vec![
                "audit.max_mb: must be at least 1",
                "audit.keep: must be at least 1"
            ]
        );
        let stdout = AuditConfig {
            path: "-".into(),
            max_mb: 0,
            keep: 0,
        };
        assert!(stdout.problems().is_empty());
    }
}
