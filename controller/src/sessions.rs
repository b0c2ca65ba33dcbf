//! Every proxy's open sessions, as their reports say: for operators (`labssh
//! sessions`, `labssh kick`), never for placement. Not state that matters: each
//! proxy sends a full snapshot on its `Report` stream whenever it changes and every
//! few seconds regardless, so a restarted controller has it all again within
//! seconds; a proxy's entries go when its stream ends, or when it has not reported
//! for [`STALE_AFTER`] (a proxy whose connection hangs).
//!
//! An operator watching a session (`Watch`) waits here, under a random number, for
//! the proxy holding it to answer the command with a `Feed` of that number.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use labssh_proto::pb;
use tokio::sync::mpsc;
use tonic::Status;

/// A proxy silent this long is taken for dead: proxies report every few seconds.
pub const STALE_AFTER: Duration = Duration::from_secs(15);
/// Commands queued towards one proxy.
pub const COMMAND_BUFFER: usize = 64;

/// Frames towards one operator's `Watch` stream.
pub type Watcher = mpsc::Sender<Result<pb::WatchFrame, Status>>;

/// One reporting proxy.
struct Proxy {
    /// Its stream, so a stale stream's end does not remove a newer one's entry.
    stream: u64,
    /// Its sessions, as last reported.
    sessions: Vec<pb::SessionInfo>,
    /// When it last reported.
    seen: Instant,
    /// Operators' commands for it.
    commands: mpsc::Sender<pb::ProxyCommand>,
}

/// See the module documentation.
#[derive(Default)]
pub struct Sessions {
    proxies: Mutex<HashMap<String, Proxy>>,
    next_stream: std::sync::atomic::AtomicU64,
    /// Operators waiting for a proxy's feed, by the command's number.
    watches: Mutex<HashMap<u64, Watcher>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("proxies", &self.lock().len())
            .finish()
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Proxy>> {
        self.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new stream's number, for [`Sessions::report`] and [`Sessions::gone`].
    pub fn stream(&self) -> u64 {
        self.next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// `proxy`'s sessions are now `sessions`; `commands` reaches it.
    pub fn report(
        &self,
        stream: u64,
        proxy: &str,
        mut sessions: Vec<pb::SessionInfo>,
        commands: &mpsc::Sender<pb::ProxyCommand>,
        now: Instant,
    ) {
        for s in &mut sessions {
            // The stream's name is the proxy's word for all its sessions.
            s.proxy = proxy.to_owned();
        }
        self.lock().insert(
            proxy.to_owned(),
            Proxy {
                stream,
                sessions,
                seen: now,
                commands: commands.clone(),
            },
        );
    }

    /// `proxy`'s stream `stream` ended: its sessions leave the list, unless a
    /// newer stream of the same proxy reports them.
    pub fn gone(&self, stream: u64, proxy: &str) {
        let mut proxies = self.lock();
        if proxies.get(proxy).is_some_and(|p| p.stream == stream) {
            proxies.remove(proxy);
        }
    }

    /// Every live proxy's sessions matching `request`, oldest first, and the live
    /// proxies' names.
    pub fn list(&self, request: &pb::ListSessionsRequest, now: Instant) -> pb::ListSessionsReply {
        let proxies = self.live(now);
        let mut sessions: Vec<pb::SessionInfo> = proxies
            .values()
            .flat_map(|p| p.sessions.iter())
            .filter(|s| request.user.is_empty() || s.user == request.user)
            .filter(|s| request.agent.is_empty() || s.agent == request.agent)
            .cloned()
            .collect();
        sessions.sort_by(|a, b| (a.started_unix_ms, &a.id).cmp(&(b.started_unix_ms, &b.id)));
        let mut names: Vec<String> = proxies.keys().cloned().collect();
        names.sort();
        pb::ListSessionsReply {
            sessions,
            proxies: names,
        }
    }

    /// Tells the proxies holding what `request` names to end it: a user's
    /// connections go on every proxy (one with only forwards reports no session);
    /// a session's only on its own.
    pub fn kick(&self, request: &pb::KickRequest, by: &str, now: Instant) -> pb::KickReply {
        let proxies = self.live(now);
        let mut reply = pb::KickReply::default();
        for proxy in proxies.values() {
            let matching = proxy
                .sessions
                .iter()
                .filter(|s| {
                    (!request.user.is_empty() && s.user == request.user)
                        || (!request.session.is_empty() && s.id == request.session)
                })
                .count() as u32;
            if matching == 0 && request.user.is_empty() {
                continue;
            }
            let command = pb::ProxyCommand {
                kick_user: request.user.clone(),
                kick_session: request.session.clone(),
                by: by.to_owned(),
                ..Default::default()
            };
            if proxy.commands.try_send(command).is_ok() {
                reply.proxies += 1;
                reply.sessions += matching;
            }
        }
        reply
    }

    /// Asks the proxy holding terminal session `id` to feed it to `watcher`;
    /// returns the number its feed will carry.
    pub fn watch(&self, id: &str, by: &str, watcher: Watcher, now: Instant) -> Result<u64, Status> {
        let proxies = self.live(now);
        let (proxy, session) = proxies
            .values()
            .find_map(|p| p.sessions.iter().find(|s| s.id == id).map(|s| (p, s)))
            .ok_or_else(|| Status::not_found(format!("no proxy reports an open session {id}")))?;
        if !session.watchable {
            return Err(Status::failed_precondition(format!(
                "session {id} is a {} with no terminal: only terminal sessions can be watched",
                session.kind
            )));
        }
        let watch = {
            let mut watching = self.watching();
            let n = loop {
                let n: u64 = rand::random();
                if n != 0 && !watching.contains_key(&n) {
                    break n;
                }
            };
            watching.insert(n, watcher);
            n
        };
        let command = pb::ProxyCommand {
            watch_session: id.to_owned(),
            watch,
            by: by.to_owned(),
            ..Default::default()
        };
        if proxy.commands.try_send(command).is_err() {
            self.watching().remove(&watch);
            return Err(Status::unavailable(format!(
                "the proxy holding session {id} is not taking commands"
            )));
        }
        Ok(watch)
    }

    /// The operator waiting for feed `watch`, taken: each feed is answered once.
    pub fn claim(&self, watch: u64) -> Option<Watcher> {
        self.watching().remove(&watch)
    }

    fn watching(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Watcher>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The proxies that reported within [`STALE_AFTER`], under the lock; stale
    /// ones are dropped first.
    fn live(&self, now: Instant) -> std::sync::MutexGuard<'_, HashMap<String, Proxy>> {
        let mut proxies = self.lock();
        proxies.retain(|_, p| now.duration_since(p.seen) < STALE_AFTER);
        proxies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, user: &str, agent: &str, started: i64) -> pb::SessionInfo {
        pb::SessionInfo {
            id: id.into(),
            user: user.into(),
            agent: agent.into(),
            started_unix_ms: started,
            ..Default::default()
        }
    }

    #[test]
    fn reports_are_listed_filtered_and_go_with_their_stream_or_silence() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let (tx_a, _rx_a) = mpsc::channel(4);
        let (tx_b, _rx_b) = mpsc::channel(4);
        let a = sessions.stream();
        let b = sessions.stream();
        sessions.report(
            a,
            "p1:22",
            vec![session("p1:22/1/0", "alice", "n1", 2)],
            &tx_a,
            now,
        );
        sessions.report(
            b,
            "p2:22",
            vec![session("p2:22/4/0", "bob", "n2", 1)],
            &tx_b,
            now,
        );
        let all = sessions.list(&Default::default(), now);
        let ids: Vec<&str> = all.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["p2:22/4/0", "p1:22/1/0"], "oldest first");
        assert_eq!(all.proxies, ["p1:22", "p2:22"]);
        assert_eq!(all.sessions[1].proxy, "p1:22");
        let alice = pb::ListSessionsRequest {
            user: "alice".into(),
            ..Default::default()
        };
        assert_eq!(sessions.list(&alice, now).sessions.len(), 1);
        let n2 = pb::ListSessionsRequest {
            agent: "n2".into(),
            ..Default::default()
        };
        assert_eq!(sessions.list(&n2, now).sessions[0].user, "bob");

        // A stale stream's end leaves a newer one's entry alone.
        let a2 = sessions.stream();
        sessions.report(a2, "p1:22", vec![], &tx_a, now);
        sessions.gone(a, "p1:22");
        assert_eq!(sessions.list(&Default::default(), now).proxies.len(), 2);
        sessions.gone(a2, "p1:22");
        assert_eq!(sessions.list(&Default::default(), now).proxies, ["p2:22"]);
        // A proxy silent too long is gone.
        let later = now + STALE_AFTER;
        assert!(sessions.list(&Default::default(), later).proxies.is_empty());
    }

    #[test]
    fn a_kick_reaches_the_proxies_holding_it() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let (tx_a, mut rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(4);
        let (a, b) = (sessions.stream(), sessions.stream());
        sessions.report(
            a,
            "p1",
            vec![session("p1/1/0", "alice", "n1", 1)],
            &tx_a,
            now,
        );
        sessions.report(b, "p2", vec![session("p2/2/0", "bob", "n1", 1)], &tx_b, now);
        // By session: only its proxy.
        let reply = sessions.kick(
            &pb::KickRequest {
                session: "p2/2/0".into(),
                ..Default::default()
            },
            "admin:ta",
            now,
        );
        assert_eq!((reply.sessions, reply.proxies), (1, 1));
        let command = rx_b.try_recv().unwrap();
        assert_eq!(
            (command.kick_session.as_str(), command.by.as_str()),
            ("p2/2/0", "admin:ta")
        );
        assert!(rx_a.try_recv().is_err());
        // By user: every proxy (forwards-only connections report no session).
        let reply = sessions.kick(
            &pb::KickRequest {
                user: "alice".into(),
                ..Default::default()
            },
            "admin:ta",
            now,
        );
        assert_eq!((reply.sessions, reply.proxies), (1, 2));
        assert_eq!(rx_a.try_recv().unwrap().kick_user, "alice");
        assert_eq!(rx_b.try_recv().unwrap().kick_user, "alice");
        // An unknown session reaches nobody.
        let reply = sessions.kick(
            &pb::KickRequest {
                session: "p9/1/0".into(),
                ..Default::default()
            },
            "admin:ta",
            now,
        );
        assert_eq!((reply.sessions, reply.proxies), (0, 0));
    }

    #[test]
    fn a_watch_asks_the_proxy_holding_a_terminal_session_and_is_claimed_once() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let (tx_a, mut rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(4);
        let mut shell = session("p1/1/0", "alice", "n1", 1);
        shell.watchable = true;
        let mut sftp = session("p2/2/0", "bob", "n1", 1);
        sftp.kind = "subsystem".into();
        let (a, b) = (sessions.stream(), sessions.stream());
        sessions.report(a, "p1", vec![shell], &tx_a, now);
        sessions.report(b, "p2", vec![sftp], &tx_b, now);
        let (watcher, _frames) = mpsc::channel(4);

        let watch = sessions
            .watch("p1/1/0", "admin:ta", watcher.clone(), now)
            .unwrap();
        let command = rx_a.try_recv().unwrap();
        assert_eq!(
            (
                command.watch_session.as_str(),
                command.watch,
                command.by.as_str()
            ),
            ("p1/1/0", watch, "admin:ta")
        );
        assert!(command.kick_user.is_empty() && command.kick_session.is_empty());
        assert!(sessions.claim(watch).is_some());
        assert!(sessions.claim(watch).is_none(), "a feed is answered once");

        let status = sessions
            .watch("p2/2/0", "admin:ta", watcher.clone(), now)
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("no terminal"), "{status:?}");
        let status = sessions
            .watch("p9/1/0", "admin:ta", watcher, now)
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(rx_b.try_recv().is_err(), "nothing asked of the other proxy");
    }
}
