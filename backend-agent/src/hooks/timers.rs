//! Timer hooks: `after` once, that long after the container started; `every`
//! repeatedly while it runs. Armed when a container starts (and, at agent start, for
//! those already running), from the environment as it was then; cancelled at agent
//! shutdown or when the container starts again. A timer that comes due on a container
//! that is no longer running (stopped, paused, or restarted since) ends them all
//! quietly; [`Hooks::resumed`] arms them again after an unpause.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use labssh_proto::pb;
use tokio_util::sync::CancellationToken;

use super::{has_hooks, Event, Hooks, Target};
use crate::backend::ContainerState;

/// Each running container's timers: the start they count from, and their token.
#[derive(Default)]
pub struct Armed(Mutex<HashMap<String, (SystemTime, CancellationToken)>>);

impl Armed {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SystemTime, CancellationToken)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Hooks {
    /// Arms `target`'s timer hooks counting from `started` (asked of the runtime when
    /// `None`); timers armed for an earlier start of the same container are cancelled.
    pub(super) async fn arm(&self, target: Target, started: Option<SystemTime>) {
        if !has_hooks(&target.env, Event::After) && !has_hooks(&target.env, Event::Every) {
            return;
        }
        let started = match started {
            Some(at) => at,
            None => match self.0.backend.started_at(&target.container).await {
                Ok(Some(at)) => at,
                Ok(None) => return, // stopped again already
                Err(e) => {
                    tracing::warn!(container = %target.container, error = %e, "timer hooks not armed");
                    return;
                }
            },
        };
        let token = self.0.shutdown.child_token();
        {
            let mut armed = self.0.timers.lock();
            if let Some((at, _)) = armed.get(&target.container) {
                if *at == started {
                    return; // armed for this start already
                }
            }
            if let Some((_, old)) = armed.insert(target.container.clone(), (started, token.clone()))
            {
                old.cancel();
            }
        }
        for (index, hook) in target.env.hooks.iter().enumerate() {
            let timer = match (hook.on.is_empty(), hook.after_ms, hook.every_ms) {
                (true, after, _) if after > 0 => Timer::After(Duration::from_millis(after)),
                (true, 0, every) if every > 0 => Timer::Every(Duration::from_millis(every)),
                _ => continue,
            };
            let (hooks, target, hook, token) =
                (self.clone(), target.clone(), hook.clone(), token.clone());
            self.0.tasks.spawn(async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = hooks.tick(timer, started, index, &hook, &target) => {}
                }
            });
        }
    }

    /// Runs one timer hook at each of its times while the container still runs from
    /// `started`.
    async fn tick(
        &self,
        timer: Timer,
        started: SystemTime,
        index: usize,
        hook: &pb::Hook,
        target: &Target,
    ) {
        let mut n = 1u32;
        loop {
            let Some(due) = timer.due(n, started) else {
                return; // an `after` already past: it ran before the agent restarted
            };
            let wait = due
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            match self.0.backend.started_at(&target.container).await {
                Ok(Some(at)) if at == started => {}
                _ => {
                    tracing::debug!(container = %target.container, "timer hooks end: the container no longer runs");
                    self.disarm(&target.container, started);
                    return;
                }
            }
            let event = timer.event();
            self.run_one(event, index, hook, target, &self.0.background)
                .await;
            if matches!(timer, Timer::After(_)) {
                return;
            }
            // The next time still due, skipping any a slow hook overran.
            let elapsed = SystemTime::now()
                .duration_since(started)
                .unwrap_or(Duration::ZERO);
            n = timer.next_after(elapsed);
        }
    }

    /// Ends and forgets `container`'s timers if they are still those of `started`.
    fn disarm(&self, container: &str, started: SystemTime) {
        let mut armed = self.0.timers.lock();
        if armed.get(container).is_some_and(|(at, _)| *at == started) {
            if let Some((_, token)) = armed.remove(container) {
                token.cancel();
            }
        }
    }

    /// Arms `target`'s timers again after its container was unpaused (a timer that came
    /// due while it was frozen ended them); a no-op if they still run.
    pub async fn resumed(&self, target: Target) {
        self.arm(target, None).await;
    }

    /// Once the controller's catalogue has arrived: arms the timers of this agent's
    /// containers that were already running when it started.
    pub(super) async fn arm_existing(self) {
        tokio::select! {
            _ = self.0.shutdown.cancelled() => return,
            _ = self.0.catalogue.received() => {}
        }
        let containers = match self.0.backend.inventory().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "timer hooks of running containers not armed");
                return;
            }
        };
        for c in containers {
            if c.state != ContainerState::Running {
                continue;
            }
            let Ok(env) = self.0.catalogue.get(&c.environment) else {
                continue;
            };
            let env = crate::identity::of_container(&self.0.backend, env, &c.name, c.ids);
            let Some(env) = env.await else {
                continue;
            };
            let target = Target {
                user: c.user,
                env,
                container: c.name,
            };
            self.arm(target, None).await;
        }
    }
}

/// When a timer hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Once, this long after the start.
    After(Duration),
    /// At every multiple of this after the start.
    Every(Duration),
}

impl Timer {
    fn event(self) -> Event {
        match self {
            Timer::After(_) => Event::After,
            Timer::Every(_) => Event::Every,
        }
    }

    /// The `n`th time it runs (from 1), if it is still to come (an `after` that is
    /// past is not: it ran, or its moment went by while no agent ran).
    fn due(self, n: u32, started: SystemTime) -> Option<SystemTime> {
        match self {
            Timer::After(after) => {
                let due = started + after;
                (due >= SystemTime::now()).then_some(due)
            }
            Timer::Every(every) => Some(started + every.saturating_mul(n)),
        }
    }

    /// The first `n` whose time is after `elapsed` since the start.
    fn next_after(self, elapsed: Duration) -> u32 {
        let period = match self {
            Timer::After(d) | Timer::Every(d) => d.as_millis().max(1),
        };
        u32::try_from(elapsed.as_millis() / period + 1).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_come_due_from_the_start() {
        let now = SystemTime::now();
        let every = Timer::Every(Duration::from_secs(10));
        assert_eq!(every.due(1, now), Some(now + Duration::from_secs(10)));
        assert_eq!(every.due(3, now), Some(now + Duration::from_secs(30)));
        assert_eq!(every.next_after(Duration::from_secs(25)), 3);
        assert_eq!(every.next_after(Duration::from_secs(10)), 2);
        let after = Timer::After(Duration::from_secs(60));
        assert_eq!(after.due(1, now), Some(now + Duration::from_secs(60)));
        let long_ago = now - Duration::from_secs(3600);
        assert_eq!(
            after.due(1, long_ago),
            None,
            "a past `after` does not run again"
        );
        assert_eq!(after.event(), Event::After);
    }
}
