//! Connections a Listen call accepted for `ssh -R`, waiting for the proxy to attach
//! them with a Forward stream; unattached ones are closed after [`ATTACH_TIMEOUT`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::Duplex;
use crate::limits::caps::Held;

/// An accepted `ssh -R` connection waits this long for the proxy to attach it.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(15);
/// Accepted connections waiting to be attached, across all listeners.
const MAX_PENDING: usize = 1024;

/// Connections accepted for `ssh -R` that the proxy has not attached yet.
#[derive(Default)]
pub struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Accepted>>,
}

/// One accepted connection, and whose it is.
pub struct Accepted {
    /// The student whose listener accepted it.
    pub user: String,
    /// Their environment.
    pub environment: String,
    /// The container's name.
    pub container: String,
    /// The connection.
    pub stream: Box<dyn Duplex>,
    /// Who connected, inside the container; `None` on a unix socket, whose peers
    /// have no address.
    pub peer: Option<SocketAddr>,
    /// Counts against the student's forwards, for as long as the connection lives.
    pub forward: Held,
    /// Counts against the student's waiting connections until attached.
    pub waiting: Held,
}

impl Pending {
    /// Parks `accepted`; `None` when too many wait already (it is then closed).
    pub fn park(self: &Arc<Self>, accepted: Accepted) -> Option<u64> {
        // Unpredictable ids: a proxy can only attach what it was told about.
        let id = self.next.fetch_add(1, Ordering::Relaxed) ^ (rand::random::<u64>() << 20);
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if waiting.len() >= MAX_PENDING {
                return None;
            }
            waiting.insert(id, accepted);
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ATTACH_TIMEOUT).await;
            if this.take(id).is_some() {
                tracing::warn!(
                    connection = id,
                    "accepted connection never attached; closed"
                );
            }
        });
        Some(id)
    }

    /// The connection `id`, once: it no longer waits.
    pub fn take(&self, id: u64) -> Option<Accepted> {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// How many wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none wait.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::caps::{CapConfig, Caps, Kind};
    use tokio::net::TcpStream;

    #[test]
    fn pending_connections_are_taken_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            let pending = Arc::new(Pending::default());
            let config = crate::config::Config {
                max_pending_remote_per_user: 1,
                ..Default::default()
            };
            let caps = Arc::new(Caps::new(CapConfig::from(&config)));
            let id = pending
                .park(Accepted {
                    user: "alice".into(),
                    environment: "default".into(),
                    container: "c".into(),
                    stream: Box::new(server),
                    peer: Some(peer),
                    forward: caps.acquire("alice", Kind::Forward).unwrap(),
                    waiting: caps.acquire("alice", Kind::PendingRemote).unwrap(),
                })
                .unwrap();
            assert_eq!(pending.len(), 1);
            assert!(caps.acquire("alice", Kind::PendingRemote).is_err());
            let taken = pending.take(id).unwrap();
            assert!(pending.take(id).is_none());
            assert!(pending.is_empty());
            drop(taken);
            assert_eq!(
                caps.count("alice", Kind::Forward),
                0,
                "released with the connection"
            );
            assert_eq!(caps.count("alice", Kind::PendingRemote), 0);
            drop(client);
        });
    }
}
