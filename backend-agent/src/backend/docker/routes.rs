//! Which way processes start in each container: through its helper, or with Docker
//! exec (containers created before the helper existed, and environments with
//! `spawn = "exec"`). A container created with the helper never falls back to Docker
//! exec: a helper that is gone is restored, never bypassed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use labssh_proto::pb;
use tokio::time::Instant;

use crate::backend::helper::HelperSocket;
pub use crate::backend::SpawnPath;

/// What the agent knows about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The container's name.
    pub name: String,
    /// How processes start in it.
    pub path: SpawnPath,
    /// A helper container's helper, reached through its init; `None` when there is
    /// nothing to reach (Docker exec, or a helper that must be restored first).
    pub helper: Option<HelperSocket>,
    /// Until when a missing socket means "still starting" rather than "no helper".
    pub ready_by: Instant,
    /// Whose container it is and what it was made from, when an ensure told: what
    /// recreating it takes, should restarting not bring its helper back.
    pub owner: Option<Owner>,
}

/// The student and environment a container was ensured for.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    /// The student.
    pub user: String,
    /// The environment as the catalogue had it at that ensure.
    pub env: Arc<pb::Environment>,
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

    /// Records a route, replacing what was known.
    pub fn set(&self, id: &str, route: Route) {
        self.lock().insert(id.to_owned(), route);
    }

    /// Forgets one container (it was removed).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Forgets containers that no longer exist.
    pub fn retain(&self, ids: &HashSet<String>) {
        self.lock().retain(|id, _| ids.contains(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}
