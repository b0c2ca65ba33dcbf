//! What the idle loop knows of each container (per student and environment): what
//! holds it open, when it was last used, when its CPU was last busy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

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
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            open: 0,
            last_active: now,
            last_busy: now,
            cpu: None,
            stopped_after: None,
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
}

impl Active {
    /// Counts one more holder of `key`.
    pub fn hold(table: &Arc<Table>, key: Key) -> Active {
        table.with(&key, |e| e.open += 1);
        Active {
            table: table.clone(),
            key,
        }
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
}
