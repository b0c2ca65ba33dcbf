//! The idle loop: every tick, each container whose environment has idle rules is
//! judged: held open → in use; CPU above the threshold since the last tick → busy;
//! a keep-alive in force → awake; otherwise idle since the latest of those, and
//! paused or stopped once idle long enough. It also marks outdated containers for
//! the inventory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use labssh_proto::pb;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{keepalive, key, Lifecycle, Reason, State, Transition};
use crate::backend::{settings_hash, ContainerInfo, ContainerState};

/// Ticks at most this far apart, whatever the timers...
const MAX_TICK: Duration = Duration::from_secs(15);
/// ...and at least this far: a quarter of the shortest timer, so a 2 s test timer
/// is judged about every 500 ms.
const MIN_TICK: Duration = Duration::from_millis(250);
/// Containers judged at once.
const CONCURRENCY: usize = 8;

impl Lifecycle {
    /// Judges the containers every tick until `stop`; the tick follows the
    /// catalogue, looked at every [`MIN_TICK`].
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(MIN_TICK) => {}
            }
            if last.elapsed() >= self.tick_interval() {
                last = Instant::now();
                self.tick().await;
            }
        }
    }

    /// A quarter of the shortest idle timer in the catalogue, within bounds.
    fn tick_interval(&self) -> Duration {
        let shortest = self
            .catalogue
            .all()
            .iter()
            .filter_map(|e| e.lifecycle.as_ref())
            .flat_map(|l| [l.idle_pause_after_ms, l.idle_stop_after_ms])
            .filter(|&ms| ms > 0)
            .min();
        shortest.map_or(MAX_TICK, |ms| {
            (Duration::from_millis(ms) / 4).clamp(MIN_TICK, MAX_TICK)
        })
    }

    /// One round over the inventory.
    pub async fn tick(&self) {
        let containers = self.inventory.list();
        let live: HashSet<_> = containers
            .iter()
            .map(|c| key(&c.user, &c.environment))
            .collect();
        self.table.retain(&live);
        let environments: HashMap<String, pb::Environment> = self
            .catalogue
            .all()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        self.mark_outdated(&containers, &environments).await;
        futures::stream::iter(containers.iter())
            .for_each_concurrent(CONCURRENCY, |c| async {
                if let Some(env) = environments.get(&c.environment) {
                    self.judge(c, env).await;
                }
            })
            .await;
    }

    /// Pauses or stops `c` if it idled long enough under `env`'s rules.
    async fn judge(&self, c: &ContainerInfo, env: &pb::Environment) {
        let Some(rules) = env.lifecycle.as_ref() else {
            return;
        };
        // A runtime that cannot freeze (Kubernetes) only stops idle containers.
        let pause_ms = match self.backend.can_pause() {
            true => rules.idle_pause_after_ms,
            false => 0,
        };
        let (pause, stop) = (
            Duration::from_millis(pause_ms),
            Duration::from_millis(rules.idle_stop_after_ms),
        );
        let from = match c.state {
            ContainerState::Running => State::Running,
            ContainerState::Paused => State::Paused,
            _ => return,
        };
        if pause.is_zero() && stop.is_zero() {
            return;
        }
        let k = key(&c.user, &c.environment);
        let now = Instant::now();
        if from == State::Running {
            let cpu = self.backend.cpu_time(&c.name).await.ok().flatten();
            self.note_cpu(&k, now, cpu, rules.idle_cpu_percent);
        }
        let (open, last_active, last_busy) = self
            .table
            .with(&k, |e| (e.open, e.last_active, e.last_busy));
        if open > 0 {
            return;
        }
        let mut idle_from = last_active.max(last_busy);
        if rules.max_keepalive_ms > 0 {
            // Owned by the student: by the ids the container was made with where
            // they come from the identity.
            let env = crate::identity::of_container(&self.backend, env.clone(), &c.name, c.ids);
            let file = match env.await {
                Some(env) => self.backend.keepalive(&c.name, &c.user, &env).await,
                None => Ok(None),
            };
            if let Ok(Some(file)) = file {
                let max = Duration::from_millis(rules.max_keepalive_ms);
                let wall = (now, SystemTime::now());
                if let Some(until) = keepalive::until(&file, max, last_active, wall) {
                    idle_from = idle_from.max(until.min(now));
                }
            }
        }
        let idle = now.saturating_duration_since(idle_from);
        let to = if !stop.is_zero() && idle >= stop {
            State::Stopped
        } else if !pause.is_zero() && idle >= pause && from == State::Running {
            State::Paused
        } else {
            return;
        };
        let change = Transition {
            container: c.name.clone(),
            user: c.user.clone(),
            environment: c.environment.clone(),
            from,
            to,
            reason: Reason::Idle,
        };
        match self.transition(change).await {
            Ok(true) if to == State::Stopped => {
                self.table.with(&k, |e| e.stopped_after = Some(idle));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(container = %c.name, error = %e, "cannot {} an idle container", if to == State::Stopped { "stop" } else { "pause" })
            }
        }
    }

    /// Records a CPU reading; a container whose share of one CPU since the last
    /// reading reached `percent` (or that cannot be measured, or was not yet) was
    /// busy until now.
    fn note_cpu(&self, k: &super::Key, now: Instant, cpu: Option<Duration>, percent: u32) {
        self.table.with(k, |e| {
            let Some(cpu) = cpu else {
                e.last_busy = now;
                e.cpu = None;
                return;
            };
            if let Some((then, used)) = e.cpu {
                let wall = now.saturating_duration_since(then).as_secs_f64();
                let spent = cpu.saturating_sub(used).as_secs_f64();
                if wall > 0.0 && spent * 100.0 >= wall * f64::from(percent) {
                    e.last_busy = now;
                }
            } else {
                e.last_busy = now;
            }
            e.cpu = Some((now, cpu));
        });
    }

    /// Tells the inventory which containers were made from another image or other
    /// settings than their environment's now (unknown ones are not counted).
    async fn mark_outdated(
        &self,
        containers: &[ContainerInfo],
        environments: &HashMap<String, pb::Environment>,
    ) {
        let mut images: HashMap<String, Option<String>> = HashMap::new();
        let mut outdated = HashSet::new();
        for c in containers {
            let Some(env) = environments.get(&c.environment) else {
                continue;
            };
            if c.version.settings.is_empty() {
                continue;
            }
            if c.version.settings != settings_hash(env) {
                outdated.insert(c.name.clone());
                continue;
            }
            if !images.contains_key(&env.image) {
                let id = self.backend.image_id(&env.image).await.ok().flatten();
                images.insert(env.image.clone(), id);
            }
            if let Some(Some(id)) = images.get(&env.image) {
                if !c.version.image.is_empty() && c.version.image != *id {
                    outdated.insert(c.name.clone());
                }
            }
        }
        self.inventory.set_outdated(outdated);
    }
}
