//! This replica's open connections and sessions, reported to the controller so
//! operators see every proxy's in one list (`labssh sessions`), and ended when an
//! operator kicks them (`labssh kick`).
//!
//! The report is a full snapshot on the controller's `Report` stream each time the
//! table changes (at most every [`MIN_INTERVAL`]) and every [`HEARTBEAT`] regardless;
//! the stream is made again, with back-off, whenever it breaks. Nothing here holds a
//! login or a session up: the controller being away only means operators do not see
//! this replica for a while.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labssh_proto::pb;
use pb::controller_client::ControllerClient;
use russh::server::Handle;
use russh::ChannelId;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

/// Reports come at most this often, however busy the replica.
const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// And at least this often, so the controller knows the replica lives.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Back-off bounds for making the stream again.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(5);
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
    sessions: HashMap<(u64, ChannelId), pb::SessionInfo>,
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

    /// A session channel that started; `info`'s id and proxy are filled in.
    pub fn session(
        self: &Arc<Self>,
        conn: u64,
        channel: ChannelId,
        mut info: pb::SessionInfo,
    ) -> SessionEntry {
        info.id = format!("{}/{conn}/{}", self.proxy, u32::from(channel));
        info.proxy = self.proxy.clone();
        self.lock().sessions.insert((conn, channel), info);
        self.bump();
        SessionEntry {
            live: self.clone(),
            key: (conn, channel),
        }
    }

    /// Every open session, oldest first.
    pub fn snapshot(&self) -> pb::ProxyReport {
        let mut sessions: Vec<pb::SessionInfo> = self.lock().sessions.values().cloned().collect();
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
                .find(|(_, s)| !command.kick_session.is_empty() && s.id == command.kick_session)
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
    mut controller: ControllerClient<Channel>,
    audit: &crate::audit::Audit,
) -> Result<(), tonic::Status> {
    let (reports, queued) = mpsc::channel(4);
    let _ = reports.send(live.snapshot()).await;
    let mut commands = controller
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
