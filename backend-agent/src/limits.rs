//! What one student may use of what the node shares: counts of open sessions,
//! forwards and listeners across all their SSH connections ([`caps`]), disk space of
//! their home and container ([`disk_quota`]), and the agent's own descriptor budget
//! that those caps are sized against ([`nofile`]), and which of a container's own
//! limits a student hit ([`cgroup`]).
//!
//! The agent enforces these because it is the one place that sees all of a student's
//! sessions on its node, whichever proxy replica each came through.

pub mod caps;
pub mod cgroup;
pub mod disk_quota;
pub mod nofile;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::SharedBackend;
use crate::catalogue::Catalogue;
use crate::config::Config;
use crate::inventory::Inventory;

/// The per-student limits of one agent; lives as long as the agent.
pub struct Limits {
    /// Open sessions, forwards, listeners and pending `ssh -R` connections.
    pub caps: Arc<caps::Caps>,
    /// Measured disk usage against the catalogue's quotas.
    pub disk: Arc<disk_quota::DiskQuotas>,
}

impl Limits {
    /// The limits from `config`, with disk usage measured on a task of `tasks` until
    /// `stop`.
    pub fn start(
        config: &Config,
        backend: SharedBackend,
        inventory: Arc<Inventory>,
        catalogue: Arc<Catalogue>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Arc<Limits> {
        let disk = Arc::new(disk_quota::DiskQuotas::default());
        tasks.spawn(disk.clone().measure_loop(
            backend,
            inventory,
            catalogue,
            Duration::from_secs(config.disk_check_interval_secs),
            stop,
        ));
        Arc::new(Limits {
            caps: Arc::new(caps::Caps::new(caps::CapConfig::from(config))),
            disk,
        })
    }
}
