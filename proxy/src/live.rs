//! This replica's open connections and sessions, reported to the controller so
//! operators see every proxy's in one list (`labssh sessions`), and ended when an
//! operator kicks them (`labssh kick`).
//!
//! The report is a full snapshot on the controller's `Report` stream each time the
//! table changes (at most every [`MIN_INTERVAL`]) and every [`HEARTBEAT`] regardless;
//! the stream is made again, with back-off, whenever it breaks. Nothing here holds a
//! login or a session up: the controller being away only means operators do not see
//! this replica for a while.
//!
//! Each session's [`Tap`] counts its bytes and, for a terminal session an operator
//! watches (`labssh sessions --watch`), passes its output on through a bounded
//! broadcast: a watcher that falls behind skips output, never slows the session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use labssh_proto::pb;
use pb::controller_client::ControllerClient;
use pb::watch_frame::Frame;
use russh::server::Handle;
use russh::ChannelId;
use tokio::sync::{broadcast, mpsc, watch};
use tonic::transport::Channel;

/// Reports come at most this often, however busy the replica.
const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// And at least this often, so the controller knows the replica lives.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Back-off bounds for making the stream again.
const RETRY_MIN: Duration = Duration::from_millis(500);
/// Short, so a restarted controller lists this replica again within seconds.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Output chunks a watcher may fall behind by before it skips some.
const WATCH_BACKLOG: usize = 1024;
/// How long a line to a watched student waits for room in their window.
const TELL_TIMEOUT: Duration = Duration::from_secs(10);
/// The output a watcher coming in gets from before (a screenful or so).
const RECENT: usize = 8 * 1024;
/// Frames queued towards the controller's Feed; the backlog is the broadcast's.
const FEED_BUFFER: usize = 64;
/// What a kicked student reads.
pub const KICKED: &str = "labssh: your session was ended by an operator";

/// A logged-in connection: whose, and how to end it.
struct Connection {
    user: String,
    handle: Handle,
}

#[derive(Default)]
struct Table {
    connections: HashMap<u64, Connection>,
    sessions: HashMap<(u64, ChannelId), (pb::SessionInfo, Arc<Tap>)>,
}

/// One session's byte counts, and a terminal session's output for watchers.
pub struct Tap {
    to_container: AtomicU64,
    to_client: AtomicU64,
    /// Terminal sessions only.
    screen: Option<Screen>,
}

struct Screen {
    /// Made for the first watcher: a broadcast channel holds its whole backlog's slots
    /// from the start (tens of kB), which an unwatched session has no use for.
    frames: OnceLock<broadcast::Sender<Frame>>,
    /// Whose, and the terminal's size now, for a watcher that comes in later.
    start: Mutex<pb::WatchStart>,
    /// The last output (at most [`RECENT`] bytes, kept under twice that), so a
    /// watcher coming in sees the lines before. Output is kept and sent on under
    /// this lock, so a watcher gets every chunk once: in the copy or after it.
    recent: Mutex<Vec<u8>>,
}

impl Screen {
    /// The watchers' channel, while anyone watches.
    fn watched(&self) -> Option<&broadcast::Sender<Frame>> {
        self.frames
            .get()
            .filter(|frames| frames.receiver_count() > 0)
    }

    /// A new watcher's receiver, the channel made if this is the first. Called under
    /// the `recent` lock, as output is sent.
    fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.frames
            .get_or_init(|| broadcast::channel(WATCH_BACKLOG).0)
            .subscribe()
    }

    /// The recent output, from the first whole line when it was cut.
    fn recent(recent: &[u8]) -> Bytes {
        let from = recent.len().saturating_sub(RECENT);
        let tail = &recent[from..];
        let tail = match (from, tail.iter().position(|&b| b == b'\n')) {
            (0, _) | (_, None) => tail,
            (_, Some(newline)) => &tail[newline + 1..],
        };
        Bytes::copy_from_slice(tail)
    }
}

impl Tap {
    fn new(info: &pb::SessionInfo, pty: Option<&pb::PtyRequest>) -> Tap {
        let screen = pty.map(|pty| Screen {
            frames: OnceLock::new(),
            start: Mutex::new(pb::WatchStart {
                user: info.user.clone(),
                environment: info.environment.clone(),
                term: pty.term.clone(),
                cols: pty.cols,
                rows: pty.rows,
            }),
            recent: Mutex::default(),
        });
        Tap {
            to_container: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            screen,
        }
    }

    /// The student sent `n` bytes.
    pub fn input(&self, n: usize) {
        self.to_container.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The student's terminal was sent `data`.
    pub fn output(&self, data: &Bytes) {
        self.to_client
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Some(screen) = &self.screen {
            let mut recent = screen.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.extend_from_slice(data);
            if recent.len() > 2 * RECENT {
                let cut = recent.len() - RECENT;
                recent.drain(..cut);
            }
            if let Some(frames) = screen.watched() {
                let _ = frames.send(Frame::Output(data.clone()));
            }
        }
    }

    /// The student's terminal is now `cols` × `rows`.
    pub fn resize(&self, size: &pb::WindowSize) {
        if let Some(screen) = &self.screen {
            let mut start = screen.start.lock().unwrap_or_else(|e| e.into_inner());
            (start.cols, start.rows) = (size.cols, size.rows);
            drop(start);
            if let Some(frames) = screen.watched() {
                let _ = frames.send(Frame::Resize(*size));
            }
        }
    }

    pub fn to_container(&self) -> u64 {
        self.to_container.load(Ordering::Relaxed)
    }

    pub fn to_client(&self) -> u64 {
        self.to_client.load(Ordering::Relaxed)
    }
}

/// See the module documentation.
pub struct Live {
    /// This replica's name, in session ids.
    proxy: String,
    table: Mutex<Table>,
    /// Bumped on every change.
    changed: watch::Sender<u64>,
}

/// Keeps a connection in the table until dropped.
pub struct ConnectionEntry {
    live: Arc<Live>,
    conn: u64,
}

impl Drop for ConnectionEntry {
    fn drop(&mut self) {
        let mut table = self.live.lock();
        table.connections.remove(&self.conn);
        table.sessions.retain(|(conn, _), _| *conn != self.conn);
        drop(table);
        self.live.bump();
    }
}

/// Keeps a session in the table until dropped.
pub struct SessionEntry {
    live: Arc<Live>,
    key: (u64, ChannelId),
    tap: Arc<Tap>,
}

impl SessionEntry {
    /// Where the session counts its bytes and shows its output.
    pub fn tap(&self) -> &Tap {
        &self.tap
    }
}

impl Drop for SessionEntry {
    fn drop(&mut self) {
        self.live.lock().sessions.remove(&self.key);
        self.live.bump();
    }
}

impl Live {
    /// An empty table for the replica `proxy`.
    pub fn new(proxy: &str) -> Arc<Live> {
        Arc::new(Live {
            proxy: proxy.to_owned(),
            table: Mutex::default(),
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A connection that logged in as `user`.
    pub fn connection(self: &Arc<Self>, conn: u64, user: &str, handle: Handle) -> ConnectionEntry {
        self.lock().connections.insert(
            conn,
            Connection {
                user: user.to_owned(),
                handle,
            },
        );
        self.bump();
        ConnectionEntry {
            live: self.clone(),
            conn,
        }
    }

    /// A session channel (or a forward) that started; `info`'s id and proxy are
    /// filled in. One with a terminal (`pty`) can be watched.
    pub fn session(
        self: &Arc<Self>,
        conn: u64,
        channel: ChannelId,
        mut info: pb::SessionInfo,
        pty: Option<&pb::PtyRequest>,
    ) -> SessionEntry {
        info.id = format!("{}/{conn}/{}", self.proxy, u32::from(channel));
        info.proxy = self.proxy.clone();
        info.watchable = pty.is_some();
        let tap = Arc::new(Tap::new(&info, pty));
        self.lock()
            .sessions
            .insert((conn, channel), (info, tap.clone()));
        self.bump();
        SessionEntry {
            live: self.clone(),
            key: (conn, channel),
            tap,
        }
    }

    /// Every open session, oldest first, with its bytes so far.
    pub fn snapshot(&self) -> pb::ProxyReport {
        let mut sessions: Vec<pb::SessionInfo> = self
            .lock()
            .sessions
            .values()
            .map(|(info, tap)| pb::SessionInfo {
                bytes_to_container: tap.to_container(),
                bytes_to_client: tap.to_client(),
                ..info.clone()
            })
            .collect();
        sessions.sort_by(|a, b| (a.started_unix_ms, &a.id).cmp(&(b.started_unix_ms, &b.id)));
        pb::ProxyReport {
            proxy: self.proxy.clone(),
            sessions,
        }
    }

    /// Ends what `command` names: every connection of its user, or the connection
    /// of its session; each of their sessions is told why first. Returns how many
    /// connections it ended.
    pub async fn kick(&self, command: &pb::ProxyCommand) -> Vec<(u64, String)> {
        let targets: Vec<(u64, String, Handle, Vec<ChannelId>)> = {
            let table = self.lock();
            let session_conn = table
                .sessions
                .iter()
                .find(|(_, (s, _))| {
                    !command.kick_session.is_empty() && s.id == command.kick_session
                })
                .map(|((conn, _), _)| *conn);
            table
                .connections
                .iter()
                .filter(|(conn, c)| {
                    (!command.kick_user.is_empty() && c.user == command.kick_user)
                        || Some(**conn) == session_conn
                })
                .map(|(conn, c)| {
                    let channels = table
                        .sessions
                        .keys()
                        .filter(|(k, _)| k == conn)
                        .map(|(_, ch)| *ch)
                        .collect();
                    (*conn, c.user.clone(), c.handle.clone(), channels)
                })
                .collect()
        };
        for (_, _, handle, channels) in &targets {
            let line = format!("\r\n{KICKED}\r\n");
            for channel in channels {
                let _ = handle
                    .extended_data(*channel, 1, bytes::Bytes::from(line.clone()))
                    .await;
            }
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    KICKED.into(),
                    String::new(),
                )
                .await;
        }
        targets
            .into_iter()
            .map(|(conn, user, _, _)| (conn, user))
            .collect()
    }
}

impl Live {
    /// Starts a watcher on the terminal session `id`: where it stands, and its
    /// output from now on. The student is told who watches.
    pub async fn watch(
        &self,
        id: &str,
        by: &str,
    ) -> Result<(pb::WatchStart, broadcast::Receiver<Frame>, Bytes, Notice), String> {
        let found = {
            let table = self.lock();
            table
                .sessions
                .iter()
                .find(|(_, (info, _))| info.id == id)
                .map(|((conn, channel), (_, tap))| {
                    let handle = table.connections.get(conn).map(|c| c.handle.clone());
                    (*channel, tap.clone(), handle)
                })
        };
        let Some((channel, tap, handle)) = found else {
            return Err(format!("session {id} is not open on this proxy"));
        };
        let Some(screen) = &tap.screen else {
            return Err(format!(
                "session {id} has no terminal: only terminal sessions can be watched"
            ));
        };
        let (frames, recent) = {
            let recent = screen.recent.lock().unwrap_or_else(|e| e.into_inner());
            (screen.subscribe(), Screen::recent(&recent))
        };
        let start = screen
            .start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let notice = Notice {
            student: handle.map(|h| (h, channel)),
            session: Arc::downgrade(&tap),
        };
        notice
            .tell(&format!("{by} is now watching this session (read-only)"))
            .await;
        Ok((start, frames, recent, notice))
    }
}

/// Tells the student of a watched session about the watch.
#[derive(Clone)]
pub struct Notice {
    /// Their connection, and the session's channel.
    student: Option<(Handle, ChannelId)>,
    /// Gone once the session is.
    session: std::sync::Weak<Tap>,
}

impl Notice {
    /// A line on the student's terminal (stderr), while the session is open.
    async fn tell(&self, what: &str) {
        if let Some((handle, channel)) = self
            .student
            .as_ref()
            .filter(|_| self.session.strong_count() > 0)
        {
            let line = format!("\r\nlabssh: {what}\r\n");
            // A client that never opens its window must not hold the feed up.
            let told = handle.extended_data(*channel, 1, Bytes::from(line));
            let _ = tokio::time::timeout(TELL_TIMEOUT, told).await;
        }
    }
}

/// Feeds one watched session to the controller until the session ends, the
/// operator goes, or the controller does.
async fn feed(
    live: Arc<Live>,
    mut controller: ControllerClient<Channel>,
    command: pb::ProxyCommand,
    audit: crate::audit::Audit,
) {
    let (frames, queued) = mpsc::channel(FEED_BUFFER);
    let watch = command.watch;
    let message = move |frame| pb::FeedMessage {
        watch,
        frame: Some(pb::WatchFrame { frame: Some(frame) }),
    };
    let (by, session) = (command.by.clone(), command.watch_session.clone());
    let watched = live.watch(&session, &by).await;
    let notice = watched
        .as_ref()
        .ok()
        .map(|(_, _, _, notice)| notice.clone());
    // Owns the sender: the feed's stream ends with it.
    let producer = async move {
        let mut output = match watched {
            Ok((start, output, recent, _)) => {
                tracing::info!(%session, %by, "an operator watches a session");
                audit.record(
                    "watch",
                    serde_json::json!({
                        "user": start.user,
                        "session": session,
                        "by": by,
                    }),
                );
                let _ = frames.send(message(Frame::Start(start))).await;
                if !recent.is_empty() {
                    let _ = frames.send(message(Frame::Output(recent))).await;
                }
                output
            }
            Err(why) => {
                let _ = frames.send(message(Frame::Ended(why))).await;
                return;
            }
        };
        let why = loop {
            let frame = match output.recv().await {
                Ok(frame) => frame,
                Err(broadcast::error::RecvError::Lagged(n)) => Frame::Lagged(n),
                Err(broadcast::error::RecvError::Closed) => break "the session ended",
            };
            if frames.send(message(frame)).await.is_err() {
                return;
            }
        };
        let _ = frames.send(message(Frame::Ended(why.to_owned()))).await;
    };
    let call = controller.feed(labssh_telemetry::grpc::request(
        tokio_stream::wrappers::ReceiverStream::new(queued),
    ));
    // The call ends when the operator stops watching; the producer when the
    // session ends (its last frame then still goes out with the call).
    tokio::pin!(call);
    tokio::select! {
        result = &mut call => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "feeding a watched session ended");
            }
        }
        () = producer => {
            let _ = call.await;
        }
    }
    // A session that goes on is told the watch is over.
    if let Some(notice) = notice {
        notice
            .tell(&format!("{} stopped watching this session", command.by))
            .await;
    }
}

/// Reports the table to the controller until the replica stops, and carries out
/// its commands.
pub async fn report(
    live: Arc<Live>,
    controller: ControllerClient<Channel>,
    audit: crate::audit::Audit,
) {
    let mut retry = RETRY_MIN;
    loop {
        match stream_once(&live, controller.clone(), &audit).await {
            Ok(()) => retry = RETRY_MIN,
            Err(e) => {
                tracing::debug!(error = %e, "session report stream ended; making it again");
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
        tokio::time::sleep(retry).await;
    }
}

async fn stream_once(
    live: &Arc<Live>,
    controller: ControllerClient<Channel>,
    audit: &crate::audit::Audit,
) -> Result<(), tonic::Status> {
    let (reports, queued) = mpsc::channel(4);
    let _ = reports.send(live.snapshot()).await;
    let mut commands = controller
        .clone()
        .report(labssh_telemetry::grpc::request(
            tokio_stream::wrappers::ReceiverStream::new(queued),
        ))
        .await?
        .into_inner();
    let mut changed = live.changed.subscribe();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            command = commands.message() => match command? {
                Some(command) if command.watch != 0 => {
                    tokio::spawn(feed(live.clone(), controller.clone(), command, audit.clone()));
                }
                Some(command) => {
                    let ended = live.kick(&command).await;
                    tracing::info!(user = %command.kick_user, session = %command.kick_session, by = %command.by, connections = ended.len(), "kicked by an operator");
                    for (conn, user) in ended {
                        audit.record(
                            "kick",
                            serde_json::json!({
                                "conn": conn,
                                "user": user,
                                "session": command.kick_session,
                                "by": command.by,
                            }),
                        );
                    }
                }
                None => return Ok(()),
            },
            _ = changed.changed() => {
                // Changes in a burst make one report.
                tokio::time::sleep(MIN_INTERVAL).await;
                changed.borrow_and_update();
                if reports.send(live.snapshot()).await.is_err() {
                    return Ok(());
                }
            }
            _ = heartbeat.tick() => {
                if reports.send(live.snapshot()).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terminal() -> Tap {
        let pty = pb::PtyRequest {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
            ..Default::default()
        };
        Tap::new(&pb::SessionInfo::default(), Some(&pty))
    }

    #[test]
    fn a_watcher_gets_the_recent_lines_then_every_chunk_once() {
        let tap = terminal();
        for i in 0..2000 {
            tap.output(&Bytes::from(format!("line {i:04}\n")));
        }
        let screen = tap.screen.as_ref().unwrap();
        let kept = screen.recent.lock().unwrap().len();
        assert!(kept <= 2 * RECENT, "{kept} bytes kept");
        let recent = Screen::recent(&screen.recent.lock().unwrap());
        let text = String::from_utf8(recent.to_vec()).unwrap();
        assert!(text.len() <= RECENT);
        assert!(
            text.starts_with("line ") && text.ends_with("line 1999\n"),
            "{text:?}"
        );
        // Not a watched byte counted twice or lost: what comes after the copy
        // arrives through the subscription.
        let mut frames = screen.subscribe();
        tap.output(&Bytes::from_static(b"after\n"));
        match frames.try_recv() {
            Ok(Frame::Output(b)) => assert_eq!(&b[..], b"after\n"),
            other => panic!("{other:?}"),
        }
        assert_eq!(tap.to_client(), 2000 * 10 + 6);
    }

    #[test]
    fn a_session_without_a_terminal_keeps_no_output() {
        let tap = Tap::new(&pb::SessionInfo::default(), None);
        tap.output(&Bytes::from_static(b"secret bytes of an exec\n"));
        assert!(tap.screen.is_none());
        assert_eq!(tap.to_client(), 24);
    }
}
