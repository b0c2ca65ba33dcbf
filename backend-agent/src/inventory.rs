//! What the agent reports in heartbeats: its containers and open sessions.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use labssh_proto::pb;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backend::{ContainerInfo, ContainerState, SharedBackend};

/// The agent's view of its node, shared by the service and the controller link.
pub struct Inventory {
    /// Maximum containers, from the config.
    capacity: u32,
    /// The node's GPUs (device ids).
    gpus: Vec<String>,
    /// Containers as last read from the runtime, patched by ensures since.
    containers: Mutex<Containers>,
    /// Open Session streams.
    sessions: AtomicU32,
    /// Set by the controller's drain; reported in every status.
    draining: std::sync::atomic::AtomicBool,
    /// Signalled when the report changed enough to send a heartbeat at once.
    changed: Notify,
}

#[derive(Default)]
struct Containers {
    list: Vec<ContainerInfo>,
    /// Bumped by every local change, so a refresh that raced with one is dropped.
    version: u64,
    /// Names of containers made from another image or settings than their
    /// environment's now, as the lifecycle last judged.
    outdated: HashSet<String>,
    /// Names of containers a prestart created or started and no student used since.
    prestarted: HashSet<String>,
    /// The TCP ports listening in running containers, by name, as discovery last
    /// read them.
    listening: HashMap<String, Vec<pb::ListeningPort>>,
}

impl Inventory {
    /// An empty inventory for a node that holds `capacity` containers.
    pub fn new(capacity: u32) -> Inventory {
        Inventory {
            capacity,
            gpus: Vec::new(),
            containers: Mutex::default(),
            sessions: AtomicU32::new(0),
            draining: Default::default(),
            changed: Notify::new(),
        }
    }

    /// The same, reporting the node's GPUs.
    pub fn with_gpus(self, gpus: Vec<String>) -> Inventory {
        Inventory { gpus, ..self }
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, Containers> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The status sent in Register and Heartbeat messages.
    pub fn status(&self) -> pb::AgentStatus {
        let containers = self.containers();
        pb::AgentStatus {
            capacity: self.capacity,
            containers: containers.list.len() as u32,
            sessions: self.sessions.load(Ordering::Relaxed),
            inventory: containers
                .list
                .iter()
                .map(|c| pb::ContainerInfo {
                    outdated: containers.outdated.contains(&c.name),
                    listening: match c.state {
                        ContainerState::Running => containers
                            .listening
                            .get(&c.name)
                            .cloned()
                            .unwrap_or_default(),
                        _ => Vec::new(),
                    },
                    ..c.into()
                })
                .collect(),
            draining: self.draining.load(Ordering::Relaxed),
            gpus: self.gpus.clone(),
            prestarted: containers
                .list
                .iter()
                .filter(|c| c.state == ContainerState::Running)
                .filter(|c| containers.prestarted.contains(&c.name))
                .count() as u32,
        }
    }

    /// Records the controller's drain request and reports it at once.
    pub fn set_draining(&self, draining: bool) {
        if self.draining.swap(draining, Ordering::Relaxed) != draining {
            tracing::info!(draining, "drain state changed by the controller");
            self.changed.notify_one();
        }
    }

    /// Records a container an ensure just created or started, and asks for a heartbeat.
    pub fn note_running(&self, name: &str, user: &str, environment: &str) {
        self.note(name, user, environment, ContainerState::Running, false);
    }

    /// Records a container an ensure just created (again), of the catalogue as it is.
    pub fn note_created(&self, name: &str, user: &str, environment: &str) {
        self.note(name, user, environment, ContainerState::Running, true);
    }

    /// Records a container the lifecycle paused or stopped, and asks for a heartbeat.
    pub fn note_state(&self, name: &str, state: ContainerState) {
        let mut containers = self.containers();
        let Some(slot) = containers.list.iter_mut().find(|c| c.name == name) else {
            return;
        };
        slot.state = state;
        containers.version += 1;
        drop(containers);
        self.changed.notify_one();
    }

    /// Records `name` in `state`; a `created` one is of the catalogue as it is now.
    fn note(
        &self,
        name: &str,
        user: &str,
        environment: &str,
        state: ContainerState,
        created: bool,
    ) {
        let mut containers = self.containers();
        containers.version += 1;
        let slot = containers.list.iter().position(|c| c.name == name);
        let kept = slot
            .filter(|_| !created)
            .map(|i| containers.list[i].clone());
        let info = ContainerInfo {
            name: name.to_owned(),
            user: user.to_owned(),
            environment: environment.to_owned(),
            state,
            // The GPUs it holds stay until the next refresh says otherwise.
            gpus: kept.as_ref().map(|k| k.gpus.clone()).unwrap_or_default(),
            version: kept.as_ref().map(|k| k.version.clone()).unwrap_or_default(),
            // Read from its label at the next refresh.
            ids: kept.as_ref().and_then(|k| k.ids),
            created: kept
                .and_then(|k| k.created)
                .or_else(|| created.then(std::time::SystemTime::now)),
        };
        if created {
            containers.outdated.remove(name);
        }
        match slot {
            Some(i) => containers.list[i] = info,
            None => containers.list.push(info),
        }
        drop(containers);
        self.changed.notify_one();
    }

    /// Records a container an action removed, and asks for a heartbeat.
    pub fn note_removed(&self, name: &str) {
        let mut containers = self.containers();
        containers.list.retain(|c| c.name != name);
        containers.prestarted.remove(name);
        containers.outdated.remove(name);
        containers.version += 1;
        drop(containers);
        self.changed.notify_one();
    }

    /// Marks `name` prestarted: made ready ahead of its student.
    pub fn mark_prestarted(&self, name: &str) {
        if self.containers().prestarted.insert(name.to_owned()) {
            self.changed.notify_one();
        }
    }

    /// A student's session, forward or listener ensured `name`: not prestarted any more.
    pub fn mark_used(&self, name: &str) {
        if self.containers().prestarted.remove(name) {
            self.changed.notify_one();
        }
    }

    /// The containers as last known.
    pub fn list(&self) -> Vec<ContainerInfo> {
        self.containers().list.clone()
    }

    /// Replaces what listens in the running containers (discovery's latest reading);
    /// a heartbeat follows at once when it changed, so a service that appeared or went
    /// is in the registry without waiting for the next tick.
    pub fn set_listening(&self, listening: HashMap<String, Vec<pb::ListeningPort>>) {
        let mut containers = self.containers();
        if containers.listening != listening {
            containers.listening = listening;
            drop(containers);
            self.changed.notify_one();
        }
    }

    /// Replaces the set of outdated containers; a heartbeat follows when it changed.
    pub fn set_outdated(&self, outdated: HashSet<String>) {
        let mut containers = self.containers();
        if containers.outdated != outdated {
            containers.outdated = outdated;
            drop(containers);
            self.changed.notify_one();
        }
    }

    /// Reads the runtime's list and replaces ours, unless an ensure changed ours meanwhile
    /// (then the next refresh will).
    pub async fn refresh(&self, backend: &SharedBackend) {
        let before = self.containers().version;
        match backend.inventory().await {
            Ok(mut list) => {
                list.sort_by(|a, b| a.name.cmp(&b.name));
                let mut containers = self.containers();
                if containers.version == before && containers.list != list {
                    containers.list = list;
                    containers.version += 1;
                    drop(containers);
                    self.changed.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read container inventory"),
        }
    }

    /// Resolves when the report changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Counts an open session until the guard is dropped.
    pub fn open_session(self: &Arc<Self>) -> SessionGuard {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        SessionGuard(self.clone())
    }
}

/// Keeps a session counted while it lives.
pub struct SessionGuard(Arc<Inventory>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Re-reads the inventory every `every`, and whenever the runtime says it changed,
/// until `shutdown`.
pub async fn refresh_loop(
    inventory: Arc<Inventory>,
    backend: SharedBackend,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => inventory.refresh(&backend).await,
            _ = backend.inventory_changed() => inventory.refresh(&backend).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_counts_containers_and_sessions() {
        let inv = Arc::new(Inventory::new(5));
        inv.note_running("p-a-x", "a", "x");
        inv.note_running("p-a-x", "a", "x");
        let guard = inv.open_session();
        let s = inv.status();
        assert_eq!((s.capacity, s.containers, s.sessions), (5, 1, 1));
        assert_eq!(s.inventory[0].user, "a");
        drop(guard);
        assert_eq!(inv.status().sessions, 0);
    }

    #[test]
    fn prestarted_containers_are_counted_until_used_and_only_while_running() {
        let inv = Inventory::new(5);
        inv.note_running("p-a-x", "a", "x");
        inv.note_running("p-b-x", "b", "x");
        inv.mark_prestarted("p-a-x");
        inv.mark_prestarted("p-b-x");
        assert_eq!(inv.status().prestarted, 2);
        inv.mark_used("p-a-x");
        assert_eq!(inv.status().prestarted, 1);
        inv.note_state("p-b-x", ContainerState::Stopped);
        assert_eq!(inv.status().prestarted, 0, "stopped: not ready any more");
    }
}
