//! What a test binary's own process could leak, counted: descriptors, tokio tasks and
//! the channels the proxy counts active (proxy and agent run in this process). Only
//! for binaries of one test, whose counts are that test's alone.

use std::time::{Duration, Instant};

use labssh_testkit::telemetry::prometheus::Exposition;

/// What could leak in this process.
#[derive(Debug, Clone, PartialEq)]
pub struct Counts {
    /// Open descriptors of this process (proxy and agent sockets among them).
    pub fds: usize,
    /// Live tokio tasks of the runtime the cluster runs on.
    pub tasks: usize,
    /// Channels the proxy splices (sessions and forwards).
    pub proxy_active: f64,
}

impl Counts {
    /// The counts now.
    pub fn now() -> Counts {
        let exposition = Exposition::parse(&labssh_telemetry::metrics::render()).unwrap();
        Counts {
            fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            proxy_active: exposition.sum("labssh_proxy_sessions_active", &[]),
        }
    }

    /// Whether nothing exceeds `baseline`.
    pub fn within(&self, baseline: &Counts) -> bool {
        self.fds <= baseline.fds
            && self.tasks <= baseline.tasks
            && self.proxy_active <= baseline.proxy_active
    }
}

/// `count()` once it stops changing (earlier connections finish closing), or after
/// `patience`.
pub async fn settled<T: PartialEq>(patience: Duration, count: impl Fn() -> T) -> T {
    let mut last = count();
    let deadline = Instant::now() + patience;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = count();
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}
