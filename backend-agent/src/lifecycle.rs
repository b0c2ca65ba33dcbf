//! Containers' lifecycle on this node: idle containers paused, then stopped; woken
//! (unpaused, started, created or recreated) by the next login or forward; every
//! transition logged, counted and reported through one function,
//! [`Lifecycle::transition`].
//!
//! What keeps a container awake is tracked per (student, environment) in
//! [`activity`]: sessions, forwards and `ssh -R` listeners hold it open
//! ([`Lifecycle::hold`]); the [`idle`] loop adds its CPU use and the student's
//! [`keepalive`] file. What the student reads while waiting is [`words`].
//!
//! A transition and a login never cross: the idle loop pauses or stops only under
//! the container's lock and only while nothing holds it, and a login counts itself
//! first, then waits for that lock ([`Lifecycle::settle`]) before ensuring.

pub mod activity;
mod idle;
pub mod keepalive;
pub mod words;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use labssh_telemetry::metrics as telemetry;

use crate::backend::{BackendError, ContainerState, EnsureStep, KeyedLock, Renewal, SharedBackend};
use crate::catalogue::Catalogue;
use crate::hooks::{Event, Hooks, Target};
use crate::inventory::Inventory;
use activity::{Active, Key, Table};

/// A state as transitions name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No container (before a create, or removed for a recreate).
    Absent,
    /// Running.
    Running,
    /// Frozen.
    Paused,
    /// Stopped.
    Stopped,
}

impl State {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            State::Absent => "absent",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
        }
    }
}

/// Why a container changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Nothing used it for the environment's idle time.
    Idle,
    /// A student's session needed it.
    Login,
    /// A forward or `ssh -R` listener needed it.
    Forward,
    /// Older than `max_age`.
    MaxAge,
    /// Made from another image or settings (a roll-out).
    Outdated,
    /// An operator's or the student's action (`labssh container …`).
    Action,
}

impl Reason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Idle => "idle",
            Reason::Login => "login",
            Reason::Forward => "forward",
            Reason::MaxAge => "max_age",
            Reason::Outdated => "outdated",
            Reason::Action => "action",
        }
    }
}

/// One container's change of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The container's name.
    pub container: String,
    /// Whose.
    pub user: String,
    /// Its environment.
    pub environment: String,
    /// From.
    pub from: State,
    /// To.
    pub to: State,
    /// Why.
    pub reason: Reason,
}

/// The lifecycle of this agent's containers; lives as long as the agent.
pub struct Lifecycle {
    /// This agent's name, for metrics.
    agent: String,
    backend: SharedBackend,
    inventory: Arc<Inventory>,
    catalogue: Arc<Catalogue>,
    /// The environments' hooks: "idle" and "stop" run from here.
    hooks: Hooks,
    /// Who holds each container open, when it was last used.
    table: Arc<Table>,
    /// One per container: held across a pause or stop, waited for by logins.
    locks: KeyedLock,
    /// How long starting a stopped container took lately, for the students' words.
    start_estimate: Mutex<Option<Duration>>,
}

impl Lifecycle {
    /// The lifecycle of the containers `backend` holds, as `inventory` lists them,
    /// under the rules of `catalogue`'s environments.
    pub fn new(
        agent: &str,
        backend: SharedBackend,
        inventory: Arc<Inventory>,
        catalogue: Arc<Catalogue>,
        hooks: Hooks,
    ) -> Arc<Lifecycle> {
        Arc::new(Lifecycle {
            agent: agent.to_owned(),
            backend,
            inventory,
            catalogue,
            hooks,
            table: Arc::default(),
            locks: KeyedLock::default(),
            start_estimate: Mutex::default(),
        })
    }

    /// Counts a session, forward or listener holding `user`'s container of
    /// `environment` open until the guard is dropped.
    pub fn hold(&self, user: &str, environment: &str) -> Active {
        Active::hold(&self.table, key(user, environment))
    }

    /// Waits for a pause or stop of the container under way to finish; call after
    /// [`Lifecycle::hold`], before ensuring: no new one starts while held.
    pub async fn settle(&self, user: &str, environment: &str) {
        drop(self.locks.lock(&lock_name(&key(user, environment))).await);
    }

    /// Whether at most one holder (the caller) has the container open: it may then be
    /// recreated.
    pub fn alone(&self, user: &str, environment: &str) -> bool {
        self.table.open(&key(user, environment)) <= 1
    }

    /// What the student reads before `step` is taken for their container.
    pub fn words(&self, user: &str, environment: &str, step: EnsureStep) -> String {
        let stopped_after = self
            .table
            .with(&key(user, environment), |e| e.stopped_after);
        let estimate = *self
            .start_estimate
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        words::line(step, stopped_after, estimate)
    }

    /// Records what an ensure did to a container (the `steps` it reported, in order),
    /// for `reason` (a login or a forward); `started_in` is how long the ensure took.
    pub async fn ensured(
        &self,
        (user, environment, container): (&str, &str, &str),
        steps: &[EnsureStep],
        reason: Reason,
        started_in: Duration,
    ) {
        for &step in steps {
            let (from, to, why) = match step {
                EnsureStep::Unpausing => (State::Paused, State::Running, reason),
                EnsureStep::Starting => {
                    self.note_start(started_in);
                    (State::Stopped, State::Running, reason)
                }
                EnsureStep::Creating => (State::Absent, State::Running, reason),
                EnsureStep::Recreating(why) => {
                    let why = match why {
                        Renewal::MaxAge(_) => Reason::MaxAge,
                        Renewal::Outdated => Reason::Outdated,
                    };
                    (State::Absent, State::Running, why)
                }
            };
            let change = Transition {
                container: container.to_owned(),
                user: user.to_owned(),
                environment: environment.to_owned(),
                from,
                to,
                reason: why,
            };
            // Already done by the ensure: only recorded.
            let _ = self.transition(change).await;
        }
    }

    /// THE transition function: every change of a container's state goes through
    /// here, is logged, counted (`labssh_agent_container_transitions_total`) and
    /// put in the inventory. A pause or stop (`to` Paused or Stopped) is carried out
    /// here, under the container's lock and only while nothing holds it open (false
    /// when a login came first); the others were done by an ensure and are recorded.
    pub async fn transition(&self, change: Transition) -> Result<bool, BackendError> {
        let key = key(&change.user, &change.environment);
        if matches!(change.to, State::Paused | State::Stopped) {
            let _guard = self.locks.lock(&lock_name(&key)).await;
            if self.table.open(&key) > 0 {
                return Ok(false);
            }
            self.run_hooks(&change).await;
            match change.to {
                State::Paused => self.backend.pause(&change.container).await?,
                _ => self.backend.stop(&change.container).await?,
            }
            let state = match change.to {
                State::Paused => ContainerState::Paused,
                _ => ContainerState::Stopped,
            };
            self.inventory.note_state(&change.container, state);
        }
        self.record(&change);
        Ok(true)
    }

    /// Logs and counts a change already made, and clears what a start ends.
    fn record(&self, change: &Transition) {
        let key = key(&change.user, &change.environment);
        let started = !matches!(change.to, State::Paused | State::Stopped | State::Absent);
        if started && matches!(change.from, State::Stopped | State::Absent) {
            // "start" and "create" hooks ran in `Shared::ensure`, which did this.
            self.table.with(&key, |e| e.stopped_after = None);
        }
        tracing::info!(
            container = %change.container,
            user = %change.user,
            environment = %change.environment,
            from = change.from.label(),
            to = change.to.label(),
            reason = change.reason.label(),
            "container {}", change.to.label()
        );
        telemetry::container_transition(
            &self.agent,
            change.from.label(),
            change.to.label(),
            change.reason.label(),
        );
    }

    /// Takes `user`'s container of `environment` for an action: the sessions holding
    /// it are ended (each told `why`) and given [`ACTION_GRACE`] to let go; then
    /// `action` runs under the container's lock, logins waiting behind it. Returns
    /// how many held it, and what `action` gave.
    pub async fn take<T>(
        &self,
        (user, environment): (&str, &str),
        why: &str,
        action: impl std::future::Future<Output = T>,
    ) -> (u32, T) {
        let key = key(user, environment);
        let _guard = self.locks.lock(&lock_name(&key)).await;
        let held = self.table.end(&key, why);
        let deadline = tokio::time::Instant::now() + ACTION_GRACE;
        // Sessions, forwards and listeners alike end on being told.
        while self.table.open(&key) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (held, action.await)
    }

    /// Stops a container taken with [`Lifecycle::take`]: its "idle" and "stop"
    /// hooks run first, as for an idle stop.
    pub async fn stop_taken(&self, change: Transition) -> Result<(), BackendError> {
        self.run_hooks(&change).await;
        self.backend.stop(&change.container).await?;
        self.inventory
            .note_state(&change.container, ContainerState::Stopped);
        self.record(&change);
        Ok(())
    }

    /// Records a change an action made (a removal, or a start by an ensure).
    pub fn note_action(&self, change: Transition) {
        self.record(&change);
    }

    /// The "idle" hooks of a container going idle (paused, or stopped while it ran)
    /// and the "stop" hooks of one being stopped, awaited (each bounded by its
    /// timeout) while the container still runs: a paused one is thawed for its stop
    /// hooks. A hook that fails is logged and counted by the hooks; the change goes on.
    async fn run_hooks(&self, change: &Transition) {
        let Ok(env) = self.catalogue.get(&change.environment) else {
            return;
        };
        let env = crate::identity::of_container(&self.backend, env, &change.container, None);
        let Some(env) = env.await else {
            return;
        };
        let target = Target {
            user: change.user.clone(),
            env,
            container: change.container.clone(),
        };
        if change.from == State::Running {
            self.hooks.run(Event::Idle, &target).await;
        }
        if change.to != State::Stopped || !self.hooks.has(&target.env, Event::Stop) {
            return;
        }
        if change.from == State::Paused {
            if let Err(e) = self.backend.unpause(&change.container).await {
                tracing::warn!(container = %change.container, error = %e, "stop hooks not run: cannot thaw the container");
                return;
            }
        }
        self.hooks.run(Event::Stop, &target).await;
    }

    /// Remembers how long a start took, smoothed.
    fn note_start(&self, took: Duration) {
        let mut estimate = self
            .start_estimate
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *estimate = Some(match *estimate {
            Some(before) => (before * 3 + took) / 4,
            None => took,
        });
    }
}

/// How long an action waits for the sessions it ended to let their container go
/// (they hang up their processes: HUP, then KILL after 2 s).
const ACTION_GRACE: Duration = Duration::from_secs(5);

/// The key of `user`'s container of `environment`.
fn key(user: &str, environment: &str) -> Key {
    (user.to_owned(), environment.to_owned())
}

/// The lock's name for `key`.
fn lock_name(key: &Key) -> String {
    format!("{}\u{0}{}", key.0, key.1)
}
