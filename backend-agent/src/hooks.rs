//! Lifecycle hooks: the environment's `[[hooks]]`, run inside the student's container
//! (through the backend, as the student or root) or POSTed to a webhook, on the
//! container's events (create, start, login, logout, idle, stop) and timers (`after`,
//! `every`).
//!
//! Every hook has a deadline (its `timeout`, counting the wait for a slot), runs in one
//! of two bounded pools (logins wait only behind other logins' hooks, never behind a
//! flood of background ones), and is logged and counted whatever happens. Only a
//! required `create` or `login` hook can refuse anything: the session it belongs to.

mod command;
mod timers;
mod webhook;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labssh_proto::pb;
use labssh_telemetry::metrics as telemetry;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{Ensured, KeyedLock, SharedBackend};
use crate::catalogue::Catalogue;
pub use command::Outcome;

/// Hooks run at once in the background (start, logout, idle, stop, timers): a flood
/// of them waits for a slot, within each hook's own timeout, instead of piling up.
const BACKGROUND_SLOTS: usize = 64;
/// Hooks run at once on logins' paths (create, login), apart from the background ones.
const LOGIN_SLOTS: usize = 128;
/// A hook whose `timeout` the controller left out (it always sends one).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What a hook fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The container was created (before its first session starts).
    Create,
    /// The container started, after its creation or from stopped.
    Start,
    /// A session (shell, command or SFTP) is about to start.
    Login,
    /// A session ended.
    Logout,
    /// The container is about to be paused for idleness.
    Idle,
    /// The container is about to be stopped.
    Stop,
    /// An `after` timer: once, that long after the container started.
    After,
    /// An `every` timer: repeatedly while the container runs.
    Every,
}

impl Event {
    /// The name in `on`, in `LABSSH_EVENT`, in the webhook's JSON and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Event::Create => "create",
            Event::Start => "start",
            Event::Login => "login",
            Event::Logout => "logout",
            Event::Idle => "idle",
            Event::Stop => "stop",
            Event::After => "after",
            Event::Every => "every",
        }
    }

    /// Whether `hook` fires on this event (timer events match by their timer).
    fn matches(self, hook: &pb::Hook) -> bool {
        match self {
            Event::After => hook.on.is_empty() && hook.after_ms > 0,
            Event::Every => hook.on.is_empty() && hook.every_ms > 0,
            other => hook.on == other.name(),
        }
    }
}

/// Whose container a hook runs for.
#[derive(Debug, Clone)]
pub struct Target {
    /// The student.
    pub user: String,
    /// Their environment, hooks included.
    pub env: pb::Environment,
    /// The container (id or name).
    pub container: String,
}

/// The agent's hook runner; cheap to clone.
#[derive(Clone)]
pub struct Hooks(Arc<Inner>);

struct Inner {
    /// This agent's name, in webhooks and metrics.
    agent: String,
    backend: SharedBackend,
    catalogue: Arc<Catalogue>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    background: Arc<Semaphore>,
    login: Arc<Semaphore>,
    /// `None` when no HTTP client could be built (the failure is logged once).
    http: Option<reqwest::Client>,
    /// Containers whose create hooks have not succeeded yet: their next login runs
    /// them again.
    create_pending: Mutex<HashSet<String>>,
    /// One create-hook run per container at a time.
    create_lock: KeyedLock,
    /// The armed timers of each running container.
    timers: timers::Armed,
}

impl Hooks {
    /// A runner for `agent`'s containers; its background work lives on `tasks` and
    /// ends with `shutdown`. Arms the timers of containers already running once the
    /// controller's catalogue arrives.
    pub fn start(
        agent: &str,
        backend: SharedBackend,
        catalogue: Arc<Catalogue>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Hooks {
        let http = webhook::client()
            .inspect_err(|e| tracing::error!(error = %e, "no HTTP client: webhooks will fail"))
            .ok();
        let hooks = Hooks(Arc::new(Inner {
            agent: agent.to_owned(),
            backend,
            catalogue,
            tasks: tasks.clone(),
            shutdown,
            background: Arc::new(Semaphore::new(BACKGROUND_SLOTS)),
            login: Arc::new(Semaphore::new(LOGIN_SLOTS)),
            http,
            create_pending: Mutex::default(),
            create_lock: KeyedLock::default(),
            timers: timers::Armed::default(),
        }));
        tasks.spawn(hooks.clone().arm_existing());
        hooks
    }

    /// Runs `event`'s hooks in the background, in order; returns at once. For start,
    /// logout, idle and stop when nothing needs to wait for them.
    /// Whether `env` has any hook for `event`.
    pub fn has(&self, env: &pb::Environment, event: Event) -> bool {
        has_hooks(env, event)
    }

    /// Runs `event`'s hooks for `target` in the background.
    pub fn fire(&self, event: Event, target: Target) {
        if !has_hooks(&target.env, event) {
            return;
        }
        let hooks = self.clone();
        let shutdown = self.0.shutdown.clone();
        self.0.tasks.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = hooks.run(event, &target) => {}
            }
        });
    }

    /// Runs `event`'s hooks in order and waits for them (each bounded by its timeout);
    /// failures are logged and counted, never returned. For idle and stop, whose hooks
    /// must run before the container is paused or stopped.
    pub async fn run(&self, event: Event, target: &Target) {
        for (index, hook) in hooks_of(&target.env, event) {
            self.run_one(event, index, hook, target, &self.0.background)
                .await;
        }
    }

    /// Runs `event`'s hooks (create, login) before the session they belong to starts:
    /// commands in order, each awaited; webhooks that are not required in the
    /// background, so a slow server never holds a login up. The first failing
    /// required hook ends the run with the line for the student.
    pub async fn run_required(&self, event: Event, target: &Target) -> Result<(), String> {
        for (index, hook) in hooks_of(&target.env, event) {
            if !hook.webhook.is_empty() && !hook.required {
                let (hooks, hook, target) = (self.clone(), hook.clone(), target.clone());
                let shutdown = self.0.shutdown.clone();
                self.0.tasks.spawn(async move {
                    let run = hooks.run_one(event, index, &hook, &target, &hooks.0.background);
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = run => {}
                    }
                });
                continue;
            }
            let outcome = self
                .run_one(event, index, hook, target, &self.0.login)
                .await;
            if hook.required && !outcome.is_ok() {
                return Err(format!(
                    "your lab's {} hook refused the login: {}",
                    event.name(),
                    outcome.reason()
                ));
            }
        }
        Ok(())
    }

    /// What a session's ensure found or did: runs the create hooks of a new container
    /// (again at each login until they succeed), fires the start hooks and arms the
    /// timers of a container that started. An error is the line for the student.
    pub async fn ensured(
        &self,
        user: &str,
        env: &pb::Environment,
        ensured: &Ensured,
    ) -> Result<(), String> {
        let target = Target {
            user: user.to_owned(),
            env: env.clone(),
            container: ensured.name.clone(),
        };
        let mut created = Ok(());
        if has_hooks(env, Event::Create) {
            if ensured.created {
                self.pending().insert(ensured.name.clone());
            }
            if self.pending().contains(&ensured.name) {
                created = self.create(&target).await;
            }
        }
        if ensured.created || ensured.started {
            self.fire(Event::Start, target.clone());
            self.arm(target, None).await;
        }
        created
    }

    /// Runs the create hooks unless a concurrent login just did.
    async fn create(&self, target: &Target) -> Result<(), String> {
        let _one = self.0.create_lock.lock(&target.container).await;
        if !self.pending().contains(&target.container) {
            return Ok(());
        }
        self.run_required(Event::Create, target).await?;
        self.pending().remove(&target.container);
        Ok(())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .create_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one hook within its deadline (the wait for a slot in `pool` included),
    /// then logs and counts what happened.
    async fn run_one(
        &self,
        event: Event,
        index: usize,
        hook: &pb::Hook,
        target: &Target,
        pool: &Semaphore,
    ) -> Outcome {
        let began = Instant::now();
        let timeout = match hook.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let outcome = match tokio::time::timeout_at(deadline, pool.acquire()).await {
            Err(_) => Outcome::NoSlot(timeout),
            Ok(Err(_closed)) => Outcome::Failed("the agent is shutting down".to_owned()),
            Ok(Ok(_slot)) if hook.webhook.is_empty() => {
                let spec = command::spec(event, hook, target);
                command::run(&self.0.backend, &target.container, spec, deadline, timeout).await
            }
            Ok(Ok(_slot)) => {
                let call = webhook::Call {
                    event: event.name(),
                    user: &target.user,
                    environment: &target.env.name,
                    agent: &self.0.agent,
                };
                webhook::post(self.0.http.as_ref(), &hook.webhook, &call, timeout).await
            }
        };
        let (user, environment, event_name) = (&target.user, &target.env.name, event.name());
        match &outcome {
            Outcome::Ok => {
                tracing::info!(
                    user,
                    environment,
                    event = event_name,
                    hook = index,
                    "hook ran"
                )
            }
            failed => tracing::warn!(
                user, environment, event = event_name, hook = index, required = hook.required,
                reason = %failed.reason(), "hook failed"
            ),
        }
        let label = match (&outcome, hook.required) {
            (Outcome::Ok, _) => "ok",
            (_, true) => "refused",
            (failed, false) => failed.label(),
        };
        telemetry::hook(&self.0.agent, event_name, label, began.elapsed());
        outcome
    }
}

/// Whether `env` has any hook for `event`.
fn has_hooks(env: &pb::Environment, event: Event) -> bool {
    env.hooks.iter().any(|h| event.matches(h))
}

/// `env`'s hooks for `event`, in the order given, with their index in the list.
fn hooks_of(env: &pb::Environment, event: Event) -> impl Iterator<Item = (usize, &pb::Hook)> {
    env.hooks
        .iter()
        .enumerate()
        .filter(move |(_, h)| event.matches(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_match_their_hooks_only() {
        let on = |on: &str| pb::Hook {
            on: on.into(),
            ..Default::default()
        };
        let after = pb::Hook {
            after_ms: 1000,
            ..Default::default()
        };
        let every = pb::Hook {
            every_ms: 1000,
            ..Default::default()
        };
        assert!(Event::Login.matches(&on("login")));
        assert!(!Event::Logout.matches(&on("login")));
        assert!(Event::After.matches(&after) && !Event::Every.matches(&after));
        assert!(Event::Every.matches(&every) && !Event::After.matches(&every));
        assert!(!Event::Login.matches(&after));
        let env = pb::Environment {
            hooks: vec![on("login"), after, on("login")],
            ..Default::default()
        };
        let indices: Vec<_> = hooks_of(&env, Event::Login).map(|(i, _)| i).collect();
        assert_eq!(indices, [0, 2]);
        assert!(has_hooks(&env, Event::After) && !has_hooks(&env, Event::Stop));
    }
}
