//! What the idle loop knows of each container (per student and environment): what
//! holds it open, when it was last used, when its CPU was last busy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A container's key: (student, environment).
pub type Key = (String, String);

/// One container's activity.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Open sessions, forwarded connections and `ssh -R` listeners.
    pub open: u32,
    /// When the last of them closed (or the agent first saw the container).
    pub last_active: Instant,
    /// When its CPU was last seen above the environment's idle threshold.
    pub last_busy: Instant,
    /// The last CPU reading: when, and the container's CPU time then.
    pub cpu: Option<(Instant, Duration)>,
    /// How long it had idled when the lifecycle stopped it, for the next login's
    /// words; cleared when it runs again.
    pub stopped_after: Option<Duration>,
    /// Ends the sessions holding it now (an operator's or the student's action).
    pub ending: Ending,
}

/// Ends, on an operator's or the student's action, the sessions that held a
/// container open when it was taken: each is told why. A session that starts
/// afterwards holds the next one.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    token: CancellationToken,
    why: Arc<OnceLock<String>>,
}

impl Ending {
    /// Resolves with the line for the student once the sessions are ended.
    pub async fn ended(&self) -> &str {
        self.token.cancelled().await;
        self.why
            .get()
            .map(String::as_str)
            .unwrap_or("your container was stopped")
    }

    /// Ends every holder, telling them `why`.
    fn end(&self, why: &str) {
        let _ = self.why.set(why.to_owned());
        self.token.cancel();
    }
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            open: 0,
            last_active: now,
            last_busy: now,
            cpu: None,
            stopped_after: None,
            ending: Ending::default(),
        }
    }
}

/// Every container's activity; an entry is made on first use.
#[derive(Default)]
pub struct Table {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Table {
    /// The entries, locked (never across an await).
    pub fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the entry of `key`, made now if missing.
    pub fn with<T>(&self, key: &Key, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.lock();
        let entry = entries
            .entry(key.clone())
            .or_insert_with(|| Entry::new(Instant::now()));
        f(entry)
    }

    /// How many hold `key` open.
    pub fn open(&self, key: &Key) -> u32 {
        self.lock().get(key).map_or(0, |e| e.open)
    }

    /// Ends the sessions holding `key` now, each told `why`; returns how many
    /// held it. Later holders are not ended.
    pub fn end(&self, key: &Key, why: &str) -> u32 {
        let (ending, open) = self.with(key, |e| (std::mem::take(&mut e.ending), e.open));
        ending.end(why);
        open
    }

    /// Forgets the containers not in `live`, unless something holds them open.
    pub fn retain(&self, live: &std::collections::HashSet<Key>) {
        self.lock().retain(|k, e| e.open > 0 || live.contains(k));
    }
}

/// One session, forward or listener holding a container open; dropping it records
/// the container as used until now.
pub struct Active {
    table: Arc<Table>,
    key: Key,
    /// Ends it with the others holding the container now.
    ending: Ending,
}

impl Active {
    /// Counts one more holder of `key`.
    pub fn hold(table: &Arc<Table>, key: Key) -> Active {
        let ending = table.with(&key, |e| {
            e.open += 1;
            e.ending.clone()
        });
        Active {
            table: table.clone(),
            key,
            ending,
        }
    }

    /// What ends this holder on an action on its container.
    pub fn ending(&self) -> &Ending {
        &self.ending
    }
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Active({}.{})", self.key.0, self.key.1)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.table.with(&self.key, |e| {
            e.open = e.open.saturating_sub(1);
            e.last_active = Instant::now();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_counted_per_container() {
        let table = Arc::new(Table::default());
        let alice = ("alice".to_owned(), "default".to_owned());
        let bob = ("bob".to_owned(), "default".to_owned());
        let a1 = Active::hold(&table, alice.clone());
        let _a2 = Active::hold(&table, alice.clone());
        assert_eq!((table.open(&alice), table.open(&bob)), (2, 0));
        let before = Instant::now();
        drop(a1);
        assert_eq!(table.open(&alice), 1);
        assert!(table.with(&alice, |e| e.last_active) >= before);
        table.retain(&Default::default());
        assert_eq!(table.open(&alice), 1, "held entries are kept");
    }

    #[tokio::test]
    async fn an_end_reaches_the_holders_of_then_only() {
        let table = Arc::new(Table::default());
        let alice = ("alice".to_owned(), "default".to_owned());
        let bob = ("bob".to_owned(), "default".to_owned());
        let before = Active::hold(&table, alice.clone());
        let other = Active::hold(&table, bob.clone());
        assert_eq!(table.end(&alice, "reset by an operator"), 1);
        let after = Active::hold(&table, alice.clone());
        assert_eq!(before.ending().ended().await, "reset by an operator");
        let pending = |a: &Active| futures::FutureExt::now_or_never(a.ending().ended()).is_none();
        assert!(pending(&after), "a later session is not ended");
        assert!(pending(&other), "another student's is not ended");
        assert_eq!(table.end(&alice, "stopped"), 2);
        assert_eq!(after.ending().ended().await, "stopped");
    }
}
