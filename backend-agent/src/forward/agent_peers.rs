//! Who may use a connection's agent socket (`ssh -A`): only processes of that SSH
//! connection. The socket is the student's, mode 0600, so the kernel already keeps
//! everyone else out; this keeps out the student's own processes of other
//! connections, which see it in /tmp. A session the proxy started with the
//! socket in `SSH_AUTH_SOCK` registers its process (by its pid in the container);
//! a connection to the socket is taken only from that process or a descendant of it,
//! judged by the peer's credentials the kernel recorded at `connect` and the parent
//! chain in `/proc`. A process that left its session's tree (reparented to the
//! container's init, as a daemonized `tmux` server is) belongs to no connection and
//! is refused, as is any peer the agent cannot see.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// How long a connection from a process not (yet) known waits for its session's
/// registration, which follows the helper's STARTED by a moment.
pub const REGISTRATION_WAIT: Duration = Duration::from_secs(2);
/// Ancestors looked at: more than any real process tree is deep.
const MAX_DEPTH: usize = 256;

/// An agent socket: the container it is in and its path there.
type Socket = (String, String);

/// The session processes of every agent socket on this node.
#[derive(Default)]
pub struct AgentPeers {
    sessions: Mutex<HashMap<Socket, HashSet<u32>>>,
    /// Bumped at every registration, for connections waiting on one.
    changed: watch::Sender<u64>,
}

/// A session's process, registered until this is dropped.
pub struct Registration {
    peers: Arc<AgentPeers>,
    socket: Socket,
    pid: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.peers.lock();
        if let Some(pids) = sessions.get_mut(&self.socket) {
            pids.remove(&self.pid);
            if pids.is_empty() {
                sessions.remove(&self.socket);
            }
        }
    }
}

impl AgentPeers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Socket, HashSet<u32>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the session process `pid` (in the container) of the connection whose
    /// agent socket is `path` in `container`.
    pub fn register(self: &Arc<Self>, container: &str, path: &str, pid: u32) -> Registration {
        let socket = (container.to_owned(), path.to_owned());
        self.lock().entry(socket.clone()).or_default().insert(pid);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        Registration {
            peers: self.clone(),
            socket,
            pid,
        }
    }

    /// Whether the process `peer` (a pid in this agent's namespace) is one of the
    /// connection's: a registered session process of the socket or a descendant of
    /// one. Waits up to [`REGISTRATION_WAIT`] for a registration that makes it so.
    pub async fn admits(&self, container: &str, path: &str, peer: Option<i32>) -> bool {
        let Some(peer) = peer.filter(|&p| p > 0) else {
            return false;
        };
        let socket = (container.to_owned(), path.to_owned());
        let mut changed = self.changed.subscribe();
        let wait = async {
            loop {
                // Read again each time: the chain may have been incomplete before.
                let chain = container_ancestry(peer as u32);
                if self.any_registered(&socket, &chain) {
                    return true;
                }
                if changed.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(REGISTRATION_WAIT, wait)
            .await
            .unwrap_or(false)
    }

    fn any_registered(&self, socket: &Socket, chain: &[u32]) -> bool {
        let sessions = self.lock();
        sessions
            .get(socket)
            .is_some_and(|pids| chain.iter().any(|pid| pids.contains(pid)))
    }
}

/// The pids, in its own container, of `host_pid` and its ancestors up to the
/// container's init; empty when the process is gone or not in a container.
fn container_ancestry(host_pid: u32) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut pid = host_pid;
    for _ in 0..MAX_DEPTH {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            break;
        };
        let Some((inner, parent)) = parse_status(&status) else {
            break;
        };
        chain.push(inner);
        if parent == 0 {
            break;
        }
        pid = parent;
    }
    chain
}

/// From a `/proc/PID/status`: the pid in the container's pid namespace, the one
/// below this agent's (`NSpid`'s second entry; none for a process of the agent's
/// own namespace), and the parent's pid. Deeper namespaces a student makes inside
/// the container are not looked at: their small pids are not the helper's.
fn parse_status(status: &str) -> Option<(u32, u32)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let nspids: Vec<u32> = field("NSpid:")?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    if nspids.len() < 2 {
        return None; // not inside a container: past its init
    }
    let parent = field("PPid:")?.parse().ok()?;
    Some((nspids[1], parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_the_inner_pid_and_the_parent() {
        let inside = "Name:\tbash\nPid:\t4242\nPPid:\t4200\nNSpid:\t4242\t17\n";
        assert_eq!(parse_status(inside), Some((17, 4200)));
        // A namespace the student made inside the container: still its pid there.
        let nested = "PPid:\t4242\nNSpid:\t4243\t18\t1\n";
        assert_eq!(parse_status(nested), Some((18, 4242)));
        // A process of the host's own namespace ends the chain.
        assert_eq!(parse_status("PPid:\t1\nNSpid:\t4200\n"), None);
        assert_eq!(parse_status("Name:\tx\n"), None);
    }

    #[tokio::test]
    async fn only_registered_sessions_are_admitted_and_not_after_they_end() {
        let peers = Arc::new(AgentPeers::default());
        let chain = [30, 17, 1];
        let socket = ("c1".to_owned(), "/tmp/a.sock".to_owned());
        assert!(!peers.any_registered(&socket, &chain));
        let session = peers.register("c1", "/tmp/a.sock", 17);
        assert!(peers.any_registered(&socket, &chain));
        // Another connection's socket, or the same path in another container: no.
        assert!(!peers.any_registered(&("c1".into(), "/tmp/b.sock".into()), &chain));
        assert!(!peers.any_registered(&("c2".into(), "/tmp/a.sock".into()), &chain));
        drop(session);
        assert!(!peers.any_registered(&socket, &chain));
        assert!(peers.lock().is_empty());
        // A peer the agent cannot see is refused at once.
        assert!(!peers.admits("c1", "/tmp/a.sock", None).await);
        assert!(!peers.admits("c1", "/tmp/a.sock", Some(0)).await);
    }

    #[tokio::test]
    async fn a_process_of_this_host_is_no_connections() {
        // This test's own process is in the agent's namespace, not a container's.
        let peers = Arc::new(AgentPeers::default());
        let _all = peers.register("c1", "/tmp/a.sock", 1);
        let me = std::process::id() as i32;
        assert!(container_ancestry(me as u32).is_empty());
        tokio::time::pause();
        assert!(!peers.admits("c1", "/tmp/a.sock", Some(me)).await);
    }
}
