//! Session recording: pty sessions of environments with `record = "output"` (or
//! `"input-and-output"`) written by the proxy as asciicast v2 files,
//! `{dir}/{user}/{YYYY-MM-DD}/{session}.cast`, with `[recording] dir` in the proxy's
//! config; `labssh replay FILE` plays one.
//!
//! Recording never holds a session up, nor ends one: events go through a bounded
//! queue to a writer thread of their own. When the queue is full (a disk slower than
//! the session) or a write fails (a full disk), that session's recording stops, is
//! counted (`labssh_errors_total{component="proxy",kind="recording_dropped"}` /
//! `"recording_failed"`) and logged once; the session goes on.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use labssh_telemetry::metrics::{self as telemetry, Component};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Events queued towards the writer, across every session of the replica.
const QUEUE: usize = 16384;

/// `[recording]` in the proxy's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Where recordings go; empty means this replica records nothing (an
    /// environment asking for it is then logged, once per session).
    pub dir: PathBuf,
}

/// What an environment asks to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// What the session printed.
    Output,
    /// And what the student typed.
    InputAndOutput,
}

impl Mode {
    /// The environment's `record`; `None` for "off" or anything else.
    pub fn parse(record: &str) -> Option<Mode> {
        match record {
            "output" => Some(Mode::Output),
            "input-and-output" => Some(Mode::InputAndOutput),
            _ => None,
        }
    }
}

enum Msg {
    Open {
        id: u64,
        path: PathBuf,
        header: String,
        /// Set by the writer when the file cannot be written: the session stops
        /// sending it events.
        failed: Arc<AtomicBool>,
    },
    Event {
        id: u64,
        line: String,
    },
    Close {
        id: u64,
    },
}

/// The replica's recorder; cheap to clone.
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    dir: PathBuf,
    queue: SyncSender<Msg>,
    next_id: AtomicU64,
}

/// What a new recording is of.
pub struct Meta<'a> {
    pub user: &'a str,
    pub environment: &'a str,
    pub conn: u64,
    pub channel: u32,
    pub cols: u32,
    pub rows: u32,
    pub term: &'a str,
}

impl Recorder {
    /// A recorder writing under `config.dir`, or none.
    pub fn open(config: &RecordingConfig) -> io::Result<Recorder> {
        if config.dir.as_os_str().is_empty() {
            return Ok(Recorder::default());
        }
        std::fs::create_dir_all(&config.dir)?;
        let (queue, queued) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("labssh-recording".into())
            .spawn(move || write_all(queued))?;
        Ok(Recorder {
            inner: Some(Arc::new(Inner {
                dir: config.dir.clone(),
                queue,
                next_id: AtomicU64::new(1),
            })),
        })
    }

    /// Whether this replica records at all.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts recording a session; `None` when this replica records nothing.
    pub fn start(&self, mode: Mode, meta: Meta<'_>) -> Option<Recording> {
        let inner = self.inner.as_ref()?;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let now = chrono::Utc::now();
        let name = format!(
            "{}-c{}-ch{}.cast",
            now.format("%H%M%S%.3f"),
            meta.conn,
            meta.channel
        );
        let path = inner
            .dir
            .join(meta.user)
            .join(now.format("%Y-%m-%d").to_string())
            .join(name);
        let header = json!({
            "version": 2,
            "width": meta.cols,
            "height": meta.rows,
            "timestamp": now.timestamp(),
            "title": format!("{}@{}", meta.user, meta.environment),
            "env": {"TERM": meta.term},
        })
        .to_string();
        let failed = Arc::new(AtomicBool::new(false));
        let mut recording = Recording {
            inner: inner.clone(),
            id,
            path: path.clone(),
            mode,
            started: Instant::now(),
            on: true,
            failed: failed.clone(),
            output_tail: Vec::new(),
            input_tail: Vec::new(),
        };
        recording.send(Msg::Open {
            id,
            path,
            header,
            failed,
        });
        Some(recording)
    }
}

/// One session's recording; closed when dropped.
pub struct Recording {
    inner: Arc<Inner>,
    id: u64,
    path: PathBuf,
    mode: Mode,
    started: Instant,
    /// Still recording (a full queue stops it).
    on: bool,
    /// The writer could not write the file (a full disk): nothing more is sent.
    failed: Arc<AtomicBool>,
    /// The start of a UTF-8 character split across output chunks.
    output_tail: Vec<u8>,
    /// Likewise for input.
    input_tail: Vec<u8>,
}

impl Recording {
    /// Where it is written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the session printed.
    pub fn output(&mut self, data: &[u8]) {
        let text = whole_chars(&mut self.output_tail, data);
        self.event("o", &text);
    }

    /// What the student typed (only with `input-and-output`).
    pub fn input(&mut self, data: &[u8]) {
        if self.mode == Mode::InputAndOutput {
            let text = whole_chars(&mut self.input_tail, data);
            self.event("i", &text);
        }
    }

    /// The terminal's new size.
    pub fn resize(&mut self, cols: u32, rows: u32) {
        self.event("r", &format!("{cols}x{rows}"));
    }

    fn event(&mut self, code: &str, text: &str) {
        if text.is_empty() || !self.on {
            return;
        }
        if self.failed.load(Ordering::Relaxed) {
            // The writer closed the file already.
            self.on = false;
            return;
        }
        let t = self.started.elapsed().as_secs_f64();
        let line = json!([(t * 1e6).round() / 1e6, code, text]).to_string();
        self.send(Msg::Event { id: self.id, line });
    }

    fn send(&mut self, msg: Msg) {
        if !self.on {
            return;
        }
        match self.inner.queue.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.on = false;
                telemetry::error(Component::Proxy, "recording_dropped");
                tracing::error!(path = %self.path.display(), "session recording stopped: the disk cannot keep up (the session goes on)");
                // Whatever was written stays; the writer closes the file.
                self.close();
            }
        }
    }

    /// Tells the writer to close the file. The close must reach it (it holds the
    /// file open until then), but a session's task never blocks on the queue: a
    /// full one gets a thread to wait.
    fn close(&self) {
        if let Err(TrySendError::Full(msg)) = self.inner.queue.try_send(Msg::Close { id: self.id })
        {
            let queue = self.inner.queue.clone();
            std::thread::spawn(move || {
                let _ = queue.send(msg);
            });
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.on {
            self.close();
        }
    }
}

/// `data` after what `tail` held, up to its last whole UTF-8 character; an
/// incomplete one at the end waits in `tail` for the next chunk. Invalid bytes
/// become U+FFFD.
fn whole_chars(tail: &mut Vec<u8>, data: &[u8]) -> String {
    tail.extend_from_slice(data);
    let mut end = tail.len();
    // At most 3 bytes of an unfinished character can sit at the end.
    for back in 1..=3.min(tail.len()) {
        let b = tail[tail.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        if b >= 0xC0 {
            let need = if b >= 0xF0 {
                4
            } else if b >= 0xE0 {
                3
            } else {
                2
            };
            if need > back {
                end = tail.len() - back;
            }
        }
        break;
    }
    let text = String::from_utf8_lossy(&tail[..end]).into_owned();
    tail.drain(..end);
    text
}

/// The writer thread: files by recording, a write error ending that recording.
fn write_all(queued: Receiver<Msg>) {
    let mut files: HashMap<u64, (PathBuf, File, Arc<AtomicBool>)> = HashMap::new();
    for msg in queued {
        match msg {
            Msg::Open {
                id,
                path,
                header,
                failed: stop,
            } => match create(&path, &header) {
                Ok(file) => {
                    files.insert(id, (path, file, stop));
                }
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    failed(&path, &e);
                }
            },
            Msg::Event { id, line } => {
                if let Some((path, file, stop)) = files.get_mut(&id) {
                    if let Err(e) = writeln!(file, "{line}") {
                        stop.store(true, Ordering::Relaxed);
                        failed(path, &e);
                        files.remove(&id);
                    }
                }
            }
            Msg::Close { id } => {
                if let Some((path, mut file, _)) = files.remove(&id) {
                    if let Err(e) = file.flush() {
                        failed(&path, &e);
                    }
                }
            }
        }
    }
}

fn failed(path: &Path, e: &io::Error) {
    telemetry::error(Component::Proxy, "recording_failed");
    tracing::error!(path = %path.display(), error = %e, "session recording stopped: cannot write it (the session goes on)");
}

fn create(path: &Path, header: &str) -> io::Result<File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{header}")?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_chunks_are_kept_whole() {
        let mut tail = Vec::new();
        let text = "héllo → ✓";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(1) {
            out.push_str(&whole_chars(&mut tail, chunk));
        }
        assert_eq!(out, text);
        assert!(tail.is_empty());
        // Invalid bytes do not stall the rest.
        assert_eq!(whole_chars(&mut tail, b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn modes_are_the_environments_words() {
        assert_eq!(Mode::parse("output"), Some(Mode::Output));
        assert_eq!(Mode::parse("input-and-output"), Some(Mode::InputAndOutput));
        assert_eq!(Mode::parse("off"), None);
        assert_eq!(Mode::parse(""), None);
    }

    #[test]
    fn a_recording_is_an_asciicast_with_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::open(&RecordingConfig {
            dir: dir.path().to_owned(),
        })
        .unwrap();
        let meta = Meta {
            user: "alice",
            environment: "default",
            conn: 7,
            channel: 0,
            cols: 80,
            rows: 24,
            term: "xterm",
        };
        let mut rec = recorder.start(Mode::Output, meta).unwrap();
        rec.output(b"hello ");
        rec.input(b"secret typing");
        rec.resize(100, 30);
        rec.output(b"world\r\n");
        let path = rec.path().to_owned();
        drop(rec);
        drop(recorder);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let lines = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 4 {
                break text;
            }
            assert!(Instant::now() < deadline, "{text:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let lines: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 80);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hello ");
        // Output only: no input event.
        assert_eq!(lines[2][1], "r");
        assert_eq!(lines[2][2], "100x30");
        assert_eq!(lines[3][2], "world\r\n");
        assert!(path.starts_with(dir.path().join("alice")));
    }

    #[test]
    fn a_file_that_cannot_be_written_stops_the_session_sending_events() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::open(&RecordingConfig {
            dir: dir.path().to_owned(),
        })
        .unwrap();
        // alice's directory cannot be made: a file is in its place.
        std::fs::write(dir.path().join("alice"), b"in the way").unwrap();
        let meta = Meta {
            user: "alice",
            environment: "default",
            conn: 8,
            channel: 0,
            cols: 80,
            rows: 24,
            term: "xterm",
        };
        let mut rec = recorder.start(Mode::InputAndOutput, meta).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !rec.failed.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "the writer never said it failed");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(rec.on);
        rec.output(b"after the failure");
        assert!(!rec.on, "events are no longer made once the file failed");
    }
}
