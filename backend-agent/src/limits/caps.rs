//! Per-student caps on what the agent holds open for one student on this node.
//!
//! Each open session, forwarded connection, `ssh -R` listener and accepted-but-not-
//! attached `ssh -R` connection costs the agent a file descriptor or two; the proxies'
//! per-connection limits do not bound a student who opens ten connections, or whose
//! connections land on several replicas. So the agent counts per student: a
//! [`Held`] is taken before the resource is opened and released when it is dropped,
//! whatever path the session or forward ends by, so no count leaks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::Config;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Session stream: shell, command or subsystem.
    Session,
    /// A forwarded TCP connection: `ssh -L`, `ssh -D`, or an accepted `ssh -R` one.
    Forward,
    /// An `ssh -R` listener.
    Listener,
    /// An accepted `ssh -R` connection the proxy has not attached yet.
    PendingRemote,
}

impl Kind {
    #[cfg(test)]
    const ALL: [Kind; 4] = [
        Kind::Session,
        Kind::Forward,
        Kind::Listener,
        Kind::PendingRemote,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// In the student's words, for the refusal.
    fn what(self) -> &'static str {
        match self {
            Kind::Session => "open sessions",
            Kind::Forward => "open forwarded connections",
            Kind::Listener => "remote forwards (ssh -R)",
            Kind::PendingRemote => "remote-forwarded connections waiting for your ssh client",
        }
    }

    /// The config key that sets the cap, for logs.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Session => "max_sessions_per_user",
            Kind::Forward => "max_forwards_per_user",
            Kind::Listener => "max_listeners_per_user",
            Kind::PendingRemote => "max_pending_remote_per_user",
        }
    }
}

/// The caps, one per [`Kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapConfig {
    /// Indexed by [`Kind::index`].
    caps: [u32; 4],
}

impl CapConfig {
    /// The cap on `kind`.
    pub fn cap(&self, kind: Kind) -> u32 {
        self.caps[kind.index()]
    }
}

impl From<&Config> for CapConfig {
    fn from(c: &Config) -> Self {
        CapConfig {
            caps: [
                c.max_sessions_per_user,
                c.max_forwards_per_user,
                c.max_listeners_per_user,
                c.max_pending_remote_per_user,
            ],
        }
    }
}

/// A refusal: the student holds as many of something as they may.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many {} on this node for {user} ({cap}); close some and try again", kind.what())]
pub struct OverCap {
    /// What ran out.
    pub kind: Kind,
    /// Whose.
    pub user: String,
    /// The cap.
    pub cap: u32,
}

/// Counts per student; an entry exists only while the student holds something.
pub struct Caps {
    config: CapConfig,
    held: Mutex<HashMap<String, [u32; 4]>>,
}

impl Caps {
    /// No student holds anything yet.
    pub fn new(config: CapConfig) -> Caps {
        Caps {
            config,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, [u32; 4]>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one `kind` for `user`, or refuses when they hold their cap already.
    pub fn acquire(self: &Arc<Self>, user: &str, kind: Kind) -> Result<Held, OverCap> {
        let cap = self.config.cap(kind);
        let mut held = self.held();
        let counts = held.entry(user.to_owned()).or_default();
        if counts[kind.index()] >= cap {
            if counts.iter().all(|&n| n == 0) {
                held.remove(user);
            }
            return Err(OverCap {
                kind,
                user: user.to_owned(),
                cap,
            });
        }
        counts[kind.index()] += 1;
        Ok(Held {
            caps: self.clone(),
            user: user.to_owned(),
            kind,
        })
    }

    /// [`Caps::acquire`] for opening a `what` ("session", "remote forward"), a
    /// refusal logged with the key that sets the cap.
    pub fn admit(self: &Arc<Self>, user: &str, kind: Kind, what: &str) -> Result<Held, OverCap> {
        self.acquire(user, kind).inspect_err(|over| {
            tracing::info!(user, cap = over.cap, "{what} refused: {}", over.kind.key());
        })
    }

    /// How many `kind` `user` holds now.
    #[cfg(test)]
    pub fn count(&self, user: &str, kind: Kind) -> u32 {
        self.held().get(user).map_or(0, |c| c[kind.index()])
    }

    /// How many students hold anything.
    #[cfg(test)]
    fn students(&self) -> usize {
        self.held().len()
    }

    fn release(&self, user: &str, kind: Kind) {
        let mut held = self.held();
        if let Some(counts) = held.get_mut(user) {
            counts[kind.index()] = counts[kind.index()].saturating_sub(1);
            if counts.iter().all(|&n| n == 0) {
                held.remove(user);
            }
        }
    }
}

/// One counted resource; dropping it gives the count back.
pub struct Held {
    caps: Arc<Caps>,
    user: String,
    kind: Kind,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({}, {:?})", self.user, self.kind)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.caps.release(&self.user, self.kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(sessions: u32, forwards: u32) -> Arc<Caps> {
        Arc::new(Caps::new(CapConfig {
            caps: [sessions, forwards, 1, 1],
        }))
    }

    #[test]
    fn a_student_over_the_cap_is_refused_and_others_are_not() {
        let caps = caps(2, 3);
        let a = caps.acquire("alice", Kind::Session).unwrap();
        let _b = caps.acquire("alice", Kind::Session).unwrap();
        let refused = caps.acquire("alice", Kind::Session).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "too many open sessions on this node for alice (2); close some and try again"
        );
        // Another student, and another kind for the same student, are unaffected.
        let _bob = caps.acquire("bob", Kind::Session).unwrap();
        let _f = caps.acquire("alice", Kind::Forward).unwrap();
        drop(a);
        assert_eq!(caps.count("alice", Kind::Session), 1);
        let _c = caps.acquire("alice", Kind::Session).unwrap();
    }

    #[test]
    fn counts_go_away_with_the_last_resource() {
        let caps = caps(1, 1);
        let held: Vec<Held> = Kind::ALL
            .iter()
            .map(|&k| caps.acquire("alice", k).unwrap())
            .collect();
        for &k in &Kind::ALL {
            assert!(caps.acquire("alice", k).is_err(), "{k:?}");
        }
        assert_eq!(caps.students(), 1);
        drop(held);
        assert_eq!(caps.students(), 0, "no entry left behind");
        // A refusal for someone holding nothing leaves no entry either.
        let zero = Arc::new(Caps::new(CapConfig { caps: [0; 4] }));
        assert!(zero.acquire("bob", Kind::Session).is_err());
        assert_eq!(zero.students(), 0);
    }

    #[test]
    fn held_across_threads() {
        let caps = caps(1000, 1);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let caps = caps.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let _h = caps.acquire("alice", Kind::Session).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(caps.count("alice", Kind::Session), 0);
        assert_eq!(caps.students(), 0);
    }
}
