//! The agents the controller knows: who they are, where proxies reach them,
//! what they last reported and whether they are alive.
//!
//! Nothing is persisted. After a controller restart every agent reconnects
//! and registers with its full inventory, which rebuilds the placement state.
//!
//! All state sits behind one `std::sync::Mutex`: critical sections are short
//! map updates and never await, and one lock keeps the agents and the
//! placer's pending assignments consistent with each other. The placer keeps
//! its indexes up to date from every report, so a placement under the lock
//! costs a few look-ups, not a pass over the agents. What costs more is done
//! with the lock released: a new ring (after a membership change) is built
//! and swapped in, and a heartbeat's inventory is indexed and compared with
//! the last one outside, so under the lock a heartbeat costs the users whose
//! containers changed (usually none) and placements do not queue behind it.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use labssh_proto::pb;
use tracing::{info, warn};

use crate::config::Config;
use crate::placement::{GpuDemand, PlaceError, Placer, Report};

/// The agents, their liveness and the placer, shared by every rpc.
#[derive(Debug)]
pub struct Registry {
    /// Agents by name plus placement state; see the module docs on locking.
    state: Mutex<State>,
    /// Silence after which a connected agent counts as dead.
    dead_after: Duration,
}

#[derive(Debug)]
struct State {
    /// Every agent ever registered since start-up, live or dead, by name.
    agents: BTreeMap<String, Agent>,
    /// Generation handed to the next registration; never reused.
    next_generation: u64,
    /// Consistent hashing and recent placements.
    placer: Placer,
}

/// What the registry knows about one agent.
#[derive(Debug)]
struct Agent {
    /// gRPC endpoint proxies use to reach it.
    endpoint: String,
    /// Which registration this entry belongs to; only that registration's
    /// stream may update it or mark it dead.
    generation: u64,
    /// The last status reported (register or heartbeat); the placer has its
    /// inventory indexed.
    status: pb::AgentStatus,
    /// When anything was last heard on its stream.
    last_seen: Instant,
    /// False once its stream ended; it stays listed as dead.
    connected: bool,
    /// Set when the sweep has logged it dead for silence, so that is logged
    /// once, and its return is logged too.
    silent: bool,
    /// An operator's drain request since this controller started; until
    /// then the agent's own report (`status.draining`) counts, so a drain
    /// survives a controller restart.
    drain_requested: Option<bool>,
    /// The agent's stream, for telling it about drains.
    outbound: Option<Outbound>,
}

/// Messages to one agent's Attach stream. Weak, so the registry never keeps
/// a stream open after its serving task (the only strong sender) is gone.
pub type Outbound = tokio::sync::mpsc::WeakSender<Result<pb::ControllerMessage, tonic::Status>>;

impl Agent {
    fn is_live(&self, now: Instant, dead_after: Duration) -> bool {
        self.connected && now.saturating_duration_since(self.last_seen) < dead_after
    }

    fn draining(&self) -> bool {
        self.drain_requested.unwrap_or(self.status.draining)
    }
}

/// Proof of one agent registration, held by the task serving its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The agent's name.
    name: String,
    /// Distinguishes this registration from earlier and later ones of the
    /// same name.
    generation: u64,
}

impl Registration {
    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The agent registered again on another stream; this one is stale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent '{0}' registered again on another stream")]
pub struct Superseded(pub String);

/// Where a placement landed, with what the caller needs to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Name of the agent.
    pub agent: String,
    /// Its gRPC endpoint.
    pub endpoint: String,
    /// True when it already holds the container.
    pub existing: bool,
    /// Something the student should be told (see `PlaceReply.notice`).
    pub notice: String,
}

impl Registry {
    /// An empty registry with the configuration's timing and placement knob.
    pub fn new(config: &Config) -> Self {
        Self {
            state: Mutex::new(State {
                agents: BTreeMap::new(),
                next_generation: 1,
                placer: Placer::new(config.load_epsilon).with_sigmas(config.load_sigmas),
            }),
            dead_after: config.dead_after(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data, still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an agent's registration, replacing any earlier one of the
    /// same name.
    pub fn register(
        &self,
        name: &str,
        endpoint: &str,
        status: pb::AgentStatus,
        now: Instant,
    ) -> Registration {
        let mut state = self.lock();
        let generation = state.next_generation;
        state.next_generation += 1;
        let drain_requested = state.agents.get(name).and_then(|a| a.drain_requested);
        let agent = Agent {
            drain_requested,
            outbound: None,
            endpoint: endpoint.to_string(),
            generation,
            status,
            last_seen: now,
            connected: true,
            silent: false,
        };
        info!(
            agent = name,
            endpoint,
            capacity = agent.status.capacity,
            containers = agent.status.containers,
            "agent registered"
        );
        state
            .placer
            .report(name, &agent.status, true, agent.draining());
        if let Some(old) = state.agents.insert(name.to_string(), agent) {
            if old.is_live(now, self.dead_after) {
                info!(agent = name, old_endpoint = %old.endpoint, "agent re-registered; replacing its earlier stream");
            }
        }
        Registration {
            name: name.to_string(),
            generation,
        }
    }

    /// Records a heartbeat. Fails when the registration was replaced, so the
    /// stale stream can be closed.
    pub fn heartbeat(
        &self,
        registration: &Registration,
        status: pb::AgentStatus,
        now: Instant,
    ) -> Result<(), Superseded> {
        // The inventory is indexed and compared with the last one with the
        // lock released: under it, only the users whose containers changed are
        // re-indexed, so placements do not wait behind a large inventory.
        let report = Report::new(&status);
        let base = self.lock().placer.inventory(&registration.name);
        let change = report.changes_from(base.as_ref());
        drop(base);
        let (old_status, old_inventory) = {
            let mut state = self.lock();
            let agent = current(&mut state, registration)?;
            let old_status = std::mem::replace(&mut agent.status, status);
            touch(agent, &registration.name, now);
            let (connected, draining) = (agent.connected, agent.draining());
            let old_inventory =
                state
                    .placer
                    .apply(&registration.name, report, change, connected, draining);
            (old_status, old_inventory)
        };
        // Freed here, not under the lock.
        drop((old_status, old_inventory));
        Ok(())
    }

    /// Remembers the stream of a registration, for drain messages.
    pub fn set_outbound(&self, registration: &Registration, outbound: Outbound) {
        let mut state = self.lock();
        if let Ok(agent) = current(&mut state, registration) {
            agent.outbound = Some(outbound);
        }
    }

    /// Drains (or resumes) an agent; returns its new state, or `None` for an
    /// unknown agent. The agent is told, so it reports the state back to a
    /// controller that restarts.
    pub fn drain(&self, name: &str, drain: bool) -> Option<bool> {
        let mut state = self.lock();
        let state = &mut *state;
        let agent = state.agents.get_mut(name)?;
        agent.drain_requested = Some(drain);
        state.placer.set_draining(name, drain);
        if let Some(outbound) = agent.outbound.as_ref().and_then(|o| o.upgrade()) {
            let _ = outbound.try_send(Ok(pb::ControllerMessage {
                msg: Some(pb::controller_message::Msg::SetDraining(pb::SetDraining {
                    draining: drain,
                })),
            }));
        }
        info!(
            agent = name,
            draining = drain,
            "drain state set by an operator"
        );
        Some(drain)
    }

    /// Records that something other than a heartbeat was heard.
    pub fn touch(&self, registration: &Registration, now: Instant) -> Result<(), Superseded> {
        let mut state = self.lock();
        touch(current(&mut state, registration)?, &registration.name, now);
        Ok(())
    }

    /// Marks the agent dead because its stream ended, unless a newer
    /// registration has taken its place.
    pub fn disconnect(&self, registration: &Registration, reason: &str) {
        let mut state = self.lock();
        if let Ok(agent) = current(&mut state, registration) {
            agent.connected = false;
            warn!(agent = %registration.name, endpoint = %agent.endpoint, reason, "agent dead: stream ended");
            state.placer.set_connected(&registration.name, false);
        }
    }

    /// Logs agents that went silent since the last sweep and returns their
    /// names. Placement checks liveness itself; this only makes deaths
    /// visible promptly in the logs.
    pub fn sweep(&self, now: Instant) -> Vec<String> {
        let mut state = self.lock();
        let mut newly_dead = Vec::new();
        for (name, agent) in &mut state.agents {
            if agent.connected && !agent.silent && !agent.is_live(now, self.dead_after) {
                agent.silent = true;
                let silent_ms = now.saturating_duration_since(agent.last_seen).as_millis();
                warn!(agent = %name, endpoint = %agent.endpoint, silent_ms, "agent dead: missed heartbeats");
                newly_dead.push(name.clone());
            }
        }
        newly_dead
    }

    /// Chooses the agent for (user, environment) among the live ones.
    /// `environment` must already be resolved against the catalogue.
    pub fn place(&self, user: &str, environment: &str, now: Instant) -> Result<Placed, PlaceError> {
        self.place_with(user, environment, &GpuDemand::None, now)
    }

    /// [`Registry::place`] for an environment whose containers take `gpus`: only
    /// agents with that many free are chosen for a new container.
    pub fn place_with(
        &self,
        user: &str,
        environment: &str,
        gpus: &GpuDemand,
        now: Instant,
    ) -> Result<Placed, PlaceError> {
        // A ring out of date (membership changed) is built with the lock released.
        let plan = self.lock().placer.ring_plan();
        if let Some(plan) = plan {
            let built = plan.build();
            self.lock().placer.install_ring(built);
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        let (agents, dead_after) = (&state.agents, self.dead_after);
        let is_live = |name: &str| agents.get(name).is_some_and(|a| a.is_live(now, dead_after));
        // Draining agents keep serving the containers they hold but take no new ones.
        let placement = state
            .placer
            .place_indexed(&is_live, user, environment, gpus, now)?;
        let endpoint = state.agents[&placement.agent].endpoint.clone();
        // A new container while the old one sits on a dead node: say so,
        // since the student's files there are out of reach until it returns.
        let notice = if placement.existing {
            String::new()
        } else {
            state
                .placer
                .holders(user, environment)
                .filter(|name| !is_live(name))
                .min()
                .map(|dead| {
                    format!(
                        "your previous container is on node '{dead}', which is down; you are on a fresh one on '{}'. Files in your home directory on '{dead}' are back when that node is.",
                        placement.agent
                    )
                })
                .unwrap_or_default()
        };
        Ok(Placed {
            agent: placement.agent,
            endpoint,
            existing: placement.existing,
            notice,
        })
    }

    /// Every known agent, live or dead, sorted by name.
    pub fn agents(&self, now: Instant) -> Vec<pb::AgentInfo> {
        let state = self.lock();
        state
            .agents
            .iter()
            .map(|(name, a)| pb::AgentInfo {
                name: name.clone(),
                endpoint: a.endpoint.clone(),
                live: a.is_live(now, self.dead_after),
                draining: a.draining(),
                status: Some(a.status.clone()),
                last_seen_ms: now
                    .saturating_duration_since(a.last_seen)
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
            })
            .collect()
    }
}

/// The registry entry of `registration`, unless a newer registration of the
/// same name replaced it.
fn current<'a>(
    state: &'a mut State,
    registration: &Registration,
) -> Result<&'a mut Agent, Superseded> {
    state
        .agents
        .get_mut(&registration.name)
        .filter(|a| a.generation == registration.generation)
        .ok_or_else(|| Superseded(registration.name.clone()))
}

fn touch(agent: &mut Agent, name: &str, now: Instant) {
    agent.last_seen = now;
    if agent.silent {
        agent.silent = false;
        info!(agent = name, endpoint = %agent.endpoint, "agent heard from again; live");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(capacity: u32, inventory: &[(&str, &str)]) -> pb::AgentStatus {
        pb::AgentStatus {
            capacity,
            containers: inventory.len() as u32,
            sessions: 0,
            draining: false,
            gpus: Vec::new(),
            prestarted: 0,
            inventory: inventory
                .iter()
                .map(|(user, env)| pb::ContainerInfo {
                    listening: Vec::new(),
                    user: user.to_string(),
                    environment: env.to_string(),
                    state: pb::ContainerState::Running.into(),
                    gpus: Vec::new(),
                    outdated: false,
                })
                .collect(),
        }
    }

    fn registry() -> Registry {
        // 1 s heartbeats, dead after 3 s.
        Registry::new(&Config::default())
    }

    #[test]
    fn inventory_from_register_makes_placement_sticky() {
        let registry = registry();
        let now = Instant::now();
        registry.register("a", "http://a:7001", status(10, &[]), now);
        registry.register(
            "b",
            "http://b:7001",
            status(10, &[("alice", "default")]),
            now,
        );
        let placed = registry.place("alice", "default", now).unwrap();
        assert_eq!(
            placed,
            Placed {
                agent: "b".to_string(),
                endpoint: "http://b:7001".to_string(),
                existing: true,
                notice: String::new(),
            }
        );
    }

    #[test]
    fn a_draining_agent_keeps_its_users_but_takes_no_new_ones() {
        let registry = registry();
        let now = Instant::now();
        registry.register(
            "a",
            "http://a:7001",
            status(100, &[("alice", "default")]),
            now,
        );
        registry.register("b", "http://b:7001", status(100, &[]), now);
        assert_eq!(registry.drain("a", true), Some(true));
        assert_eq!(registry.drain("nobody", true), None);
        assert_eq!(registry.place("alice", "default", now).unwrap().agent, "a");
        for i in 0..50 {
            assert_eq!(
                registry
                    .place(&format!("u{i}"), "default", now)
                    .unwrap()
                    .agent,
                "b"
            );
        }
        assert!(registry
            .agents(now)
            .iter()
            .any(|a| a.name == "a" && a.draining));
        // Resumed: new users may land on it again.
        registry.drain("a", false);
        let spread: std::collections::HashSet<String> = (50..150)
            .map(|i| {
                registry
                    .place(&format!("u{i}"), "default", now)
                    .unwrap()
                    .agent
            })
            .collect();
        assert!(spread.contains("a"), "{spread:?}");
    }

    #[test]
    fn a_drain_survives_a_controller_restart_through_the_agents_report() {
        let registry = registry();
        let now = Instant::now();
        let mut reported = status(100, &[]);
        reported.draining = true;
        registry.register("a", "http://a:7001", reported, now);
        registry.register("b", "http://b:7001", status(100, &[]), now);
        for i in 0..20 {
            assert_eq!(
                registry
                    .place(&format!("u{i}"), "default", now)
                    .unwrap()
                    .agent,
                "b"
            );
        }
    }

    #[test]
    fn a_user_whose_container_is_on_a_dead_node_is_told() {
        let registry = registry();
        let now = Instant::now();
        let a = registry.register(
            "a",
            "http://a:7001",
            status(100, &[("alice", "default")]),
            now,
        );
        registry.register("b", "http://b:7001", status(100, &[]), now);
        registry.disconnect(&a, "test");
        let placed = registry.place("alice", "default", now).unwrap();
        assert_eq!(placed.agent, "b");
        assert!(
            placed.notice.contains("node 'a', which is down"),
            "{}",
            placed.notice
        );
        assert!(registry
            .place("bob", "default", now)
            .unwrap()
            .notice
            .is_empty());
    }

    #[test]
    fn silent_agents_are_dead_until_heard_from() {
        let registry = registry();
        let t0 = Instant::now();
        let reg = registry.register("a", "http://a:7001", status(10, &[]), t0);
        let t1 = t0 + Duration::from_secs(2);
        assert!(registry.place("bob", "default", t1).is_ok());
        assert!(registry.sweep(t1).is_empty());

        let t2 = t0 + Duration::from_secs(3);
        assert_eq!(
            registry.place("bob", "default", t2),
            Err(PlaceError::NoLiveAgents)
        );
        assert_eq!(registry.sweep(t2), ["a"]);
        assert!(registry.sweep(t2).is_empty(), "logged once");
        let agents = registry.agents(t2);
        assert_eq!(agents.len(), 1);
        assert!(!agents[0].live);
        assert_eq!(agents[0].last_seen_ms, 3_000);

        registry.heartbeat(&reg, status(10, &[]), t2).unwrap();
        assert!(registry.agents(t2)[0].live);
        assert!(registry.place("bob", "default", t2).is_ok());
    }

    #[test]
    fn disconnected_agents_stay_listed_as_dead() {
        let registry = registry();
        let now = Instant::now();
        let reg = registry.register("a", "http://a:7001", status(10, &[]), now);
        registry.disconnect(&reg, "test");
        let agents = registry.agents(now);
        assert_eq!(agents.len(), 1);
        assert!(!agents[0].live);
        assert_eq!(
            registry.place("bob", "default", now),
            Err(PlaceError::NoLiveAgents)
        );
    }

    #[test]
    fn stale_registration_cannot_touch_the_new_one() {
        let registry = registry();
        let now = Instant::now();
        let old = registry.register("a", "http://old:7001", status(10, &[]), now);
        let new = registry.register("a", "http://new:7001", status(10, &[]), now);
        assert_eq!(
            registry.heartbeat(&old, status(0, &[]), now),
            Err(Superseded("a".to_string()))
        );
        registry.disconnect(&old, "old stream closed");
        let agents = registry.agents(now);
        assert_eq!(agents.len(), 1);
        assert!(agents[0].live);
        assert_eq!(agents[0].endpoint, "http://new:7001");
        assert_eq!(agents[0].status.as_ref().unwrap().capacity, 10);
        registry.heartbeat(&new, status(5, &[]), now).unwrap();
        assert_eq!(registry.agents(now)[0].status.as_ref().unwrap().capacity, 5);
    }

    #[test]
    fn heartbeat_inventory_is_used() {
        let registry = registry();
        let now = Instant::now();
        let a = registry.register("a", "http://a:7001", status(10, &[]), now);
        registry.register("b", "http://b:7001", status(10, &[]), now);
        registry.place("carol", "default", now).unwrap();
        // Wherever that put carol, a reported inventory wins over the pending
        // placement (say, her container was created before a restart).
        registry
            .heartbeat(&a, status(10, &[("carol", "default")]), now)
            .unwrap();
        let again = registry.place("carol", "default", now).unwrap();
        assert_eq!(again.agent, "a");
        assert!(again.existing);
    }

    #[test]
    fn the_registry_places_as_a_placer_given_the_agents_as_a_slice() {
        // The registry's placer keeps its indexes from reports; a placer given the
        // same agents as a slice re-indexes them on every call. Both must choose
        // the same agents for the same logins, heartbeats and deaths.
        use crate::placement::{AgentLoad, Inventory};
        let registry = registry();
        let config = Config::default();
        let mut sliced = Placer::new(config.load_epsilon).with_sigmas(config.load_sigmas);
        let mut now = Instant::now();
        let caps = [12u32, 20, 30, 8, 16, 250];
        let names: Vec<String> = (0..caps.len()).map(|i| format!("a{i}")).collect();
        let regs: Vec<Registration> = names
            .iter()
            .zip(caps)
            .map(|(n, c)| registry.register(n, "http://x:7001", status(c, &[]), now))
            .collect();
        let mut held: Vec<Vec<(String, String)>> = vec![Vec::new(); caps.len()];
        let mut given = held.clone();
        let mut live = vec![true; caps.len()];
        let mut checked = 0;
        for round in 0..8 {
            if round == 5 {
                registry.disconnect(&regs[2], "test");
                live[2] = false;
            }
            for u in 0..40 {
                // New users, re-logins of earlier ones and second environments.
                let user = format!("u{}", (round * 40 + u) % 250);
                let env = if u % 7 == 0 { "gpu" } else { "default" };
                let inventories: Vec<Inventory> = held
                    .iter()
                    .map(|h| {
                        let pairs: Vec<(&str, &str)> =
                            h.iter().map(|(u, e)| (u.as_str(), e.as_str())).collect();
                        Inventory::from_proto(&status(0, &pairs).inventory)
                    })
                    .collect();
                let slice: Vec<AgentLoad<'_>> = (0..caps.len())
                    .filter(|&i| live[i])
                    .map(|i| AgentLoad {
                        name: &names[i],
                        capacity: caps[i],
                        containers: held[i].len() as u32,
                        inventory: &inventories[i],
                        gpus: &[],
                    })
                    .collect();
                let expected = sliced.place(&slice, &user, env, now).unwrap();
                let placed = registry.place(&user, env, now).unwrap();
                assert_eq!(
                    (placed.agent.as_str(), placed.existing),
                    (expected.agent.as_str(), expected.existing),
                    "{user}/{env} in round {round}"
                );
                checked += 1;
                let i = names.iter().position(|n| *n == placed.agent).unwrap();
                let key = (user.clone(), env.to_string());
                if !placed.existing && !given[i].contains(&key) {
                    given[i].push(key);
                }
            }
            // Every other round the agents report what they were given.
            if round % 2 == 1 {
                now += Duration::from_secs(1);
                for i in (0..caps.len()).filter(|&i| live[i]) {
                    let new = std::mem::take(&mut given[i]);
                    held[i].extend(new);
                    let pairs: Vec<(&str, &str)> = held[i]
                        .iter()
                        .map(|(u, e)| (u.as_str(), e.as_str()))
                        .collect();
                    registry
                        .heartbeat(&regs[i], status(caps[i], &pairs), now)
                        .unwrap();
                }
            }
        }
        assert_eq!(checked, 320);
    }
}
