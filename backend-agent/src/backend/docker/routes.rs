//! Which way processes start in each container: through its helper, or with Docker
//! exec (containers created before the helper existed, environments with
//! `spawn = "exec"`, and helpers that stopped answering).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::time::Instant;

use crate::backend::helper::HelperSocket;

/// How a process is started in a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnPath {
    /// Through labssh-init's socket.
    Helper,
    /// With Docker exec.
    Exec,
}

impl SpawnPath {
    /// The name used in logs, metrics and the `labssh.spawn` label.
    pub fn name(self) -> &'static str {
        match self {
            SpawnPath::Helper => "helper",
            SpawnPath::Exec => "exec",
        }
    }
}

/// What the agent knows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The container's helper socket; `None` for Docker exec.
    pub helper: Option<HelperSocket>,
    /// Until when a missing socket means "still starting" rather than "no helper".
    pub ready_by: Instant,
}

impl Route {
    /// The path this route takes.
    pub fn path(&self) -> SpawnPath {
        match self.helper {
            Some(_) => SpawnPath::Helper,
            None => SpawnPath::Exec,
        }
    }
}

/// Routes by container id; filled by ensure and by lookups of unknown containers.
#[derive(Default)]
pub struct Routes {
    /// Container id → route.
    map: Mutex<HashMap<String, Route>>,
}

impl Routes {
    /// The known route of a container.
    pub fn get(&self, id: &str) -> Option<Route> {
        self.lock().get(id).cloned()
    }

    /// Records a route, replacing what was known (the container was just created or
    /// started, so an earlier fallback no longer applies).
    pub fn set(&self, id: &str, route: Route) {
        self.lock().insert(id.to_owned(), route);
    }

    /// Records a route unless one is known: a fallback decided earlier sticks while the
    /// container keeps running.
    pub fn set_if_unknown(&self, id: &str, route: Route) {
        self.lock().entry(id.to_owned()).or_insert(route);
    }

    /// The container's helper does not answer: use Docker exec until it is started
    /// again.
    pub fn fall_back_to_exec(&self, id: &str) {
        if let Some(route) = self.lock().get_mut(id) {
            route.helper = None;
        }
    }

    /// Forgets containers that no longer exist.
    pub fn retain(&self, ids: &HashSet<String>) {
        self.lock().retain(|id, _| ids.contains(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}
