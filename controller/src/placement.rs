//! Where a user's container lives, or should be created.
//!
//! Pure and synchronous: the caller hands in the live agents and the current
//! time, so every rule here is unit-tested without a network or a clock.
//!
//! The order of preference is:
//! 1. an agent whose inventory already holds (user, environment);
//! 2. an agent this placer recently chose for (user, environment) whose
//!    inventory does not show the container yet (it is being created);
//! 3. an agent holding another of the user's containers, so one user's
//!    environments share a node and its home volume;
//! 4. consistent hashing of the *user* over the live agents, weighted by
//!    capacity, with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018):
//!    walk the ring's candidates and take the first agent that is under both
//!    its capacity and `(1 + ε)` times its capacity-weighted fair share.
//!
//! An environment taking GPUs goes by rules 3 and 4 only to agents with enough GPUs
//! free ([`gpus`]); an existing or pending container stays where it is.

mod gpus;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use consistent_hash::{DefaultHash, Node, StaticHashRing};
use labssh_proto::pb;

/// How long a placement counts as load and keeps a user sticky before the
/// agent reports the container: long enough for an image pull and a few
/// heartbeats, short enough that abandoned logins stop counting as load.
pub const PENDING_TTL: Duration = Duration::from_secs(120);
/// Virtual nodes per unit of capacity, so an agent's share of the ring
/// follows its capacity.
const VNODES_PER_CAPACITY: usize = 4;
/// Even a tiny agent gets enough virtual nodes for an even spread of its
/// share over the ring.
const MIN_VNODES: usize = 64;
/// Caps the ring's size (and rebuild time) for very large agents; the
/// bounded-load check keeps placement proportional to capacity beyond it.
const MAX_VNODES: usize = 2_048;

pub use gpus::GpuDemand;
/// Why no agent could be chosen: the `Place` RPC's error, shared with the proxies.
pub use labssh_proto::place::PlaceError;

/// The containers one agent reported, indexed for placement.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// user → environment → container state.
    by_user: HashMap<String, HashMap<String, pb::ContainerState>>,
    /// GPUs (device ids) its containers hold.
    gpus_held: HashSet<String>,
}

impl Inventory {
    /// Indexes an agent's reported inventory.
    pub fn from_proto(containers: &[pb::ContainerInfo]) -> Self {
        let mut by_user: HashMap<String, HashMap<String, pb::ContainerState>> = HashMap::new();
        for c in containers {
            by_user
                .entry(c.user.clone())
                .or_default()
                .insert(c.environment.clone(), c.state());
        }
        // A stopped container gives its GPUs back; it gets free ones when it starts.
        let gpus_held = containers
            .iter()
            .filter(|c| c.state() != pb::ContainerState::Stopped)
            .flat_map(|c| c.gpus.iter().cloned())
            .collect();
        Self { by_user, gpus_held }
    }

    /// The state of the user's container for `environment`, if held here.
    pub fn state(&self, user: &str, environment: &str) -> Option<pb::ContainerState> {
        self.by_user.get(user)?.get(environment).copied()
    }

    /// Whether any of the user's containers is held here.
    pub fn has_user(&self, user: &str) -> bool {
        self.by_user.contains_key(user)
    }
}

/// What placement needs to know about one live agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentLoad<'a> {
    /// The agent's unique name.
    pub name: &'a str,
    /// Most containers it will hold.
    pub capacity: u32,
    /// Containers it reported holding.
    pub containers: u32,
    /// Which containers those are.
    pub inventory: &'a Inventory,
    /// Its GPUs (device ids), those held included.
    pub gpus: &'a [String],
}

/// The outcome of a successful placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Name of the chosen agent.
    pub agent: String,
    /// True when the agent already reported the container.
    pub existing: bool,
}

/// A placement not yet visible in the agent's inventory.
#[derive(Debug, Clone)]
struct Pending {
    /// The agent chosen.
    agent: String,
    /// When it was chosen; the entry expires [`PENDING_TTL`] later.
    at: Instant,
    /// GPUs the container will take there.
    gpus: u32,
}

/// Consistent-hashing placement with bounded loads, plus the memory of recent
/// placements it needs to stay sticky between heartbeats.
#[derive(Debug)]
pub struct Placer {
    /// Bounded-load ε: how far above its fair share an agent may go.
    epsilon: f64,
    /// The ring over the agents live at the last placement; rebuilt only
    /// when their set or capacities change.
    ring: Option<Ring>,
    /// (user, environment) → recent placement not yet in the inventory.
    pending: HashMap<(String, String), Pending>,
}

impl Placer {
    /// A placer with the given bounded-load ε (> 0).
    pub fn new(epsilon: f64) -> Self {
        Self {
            epsilon,
            ring: None,
            pending: HashMap::new(),
        }
    }

    /// Number of placements still waiting to show up in an inventory.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Chooses the agent for (user, environment) among the `live` agents and
    /// remembers the choice. `environment` must already be resolved and take no GPUs.
    pub fn place(
        &mut self,
        live: &[AgentLoad<'_>],
        user: &str,
        environment: &str,
        now: Instant,
    ) -> Result<Placement, PlaceError> {
        self.place_with(live, user, environment, &GpuDemand::None, now)
    }

    /// [`Placer::place`] for an environment whose containers take `gpus`.
    pub fn place_with(
        &mut self,
        live: &[AgentLoad<'_>],
        user: &str,
        environment: &str,
        gpus: &GpuDemand,
        now: Instant,
    ) -> Result<Placement, PlaceError> {
        if live.is_empty() {
            return Err(PlaceError::NoLiveAgents);
        }
        let by_name: HashMap<&str, &AgentLoad<'_>> = live.iter().map(|a| (a.name, a)).collect();
        self.prune_pending(&by_name, now);

        // Rule 1: the container exists: a running copy beats a stopped one (there
        // can be two after an agent came back from the dead).
        if let Some(agent) = live
            .iter()
            .filter_map(|a| Some((a, a.inventory.state(user, environment)?)))
            .min_by_key(|(a, state)| (*state != pb::ContainerState::Running, a.name))
            .map(|(a, _)| a)
        {
            return Ok(Placement {
                agent: agent.name.to_string(),
                existing: true,
            });
        }

        // Rule 2: it is being created since a recent placement.
        let key = (user.to_string(), environment.to_string());
        if let Some(pending) = self.pending.get(&key) {
            return Ok(Placement {
                agent: pending.agent.clone(),
                existing: false,
            });
        }

        let fitting = self.fitting(live, gpus)?;
        let loads = self.loads(live);
        let chosen = self
            .home_agent(live, &loads, &fitting, user)
            .map(str::to_string)
            .map_or_else(|| self.hashed(live, &loads, &fitting, user), Ok)?;
        let taken = live
            .iter()
            .find(|a| a.name == chosen)
            .map_or(0, |a| gpus.count_on(a));
        self.pending.insert(
            key,
            Pending {
                agent: chosen.clone(),
                at: now,
                gpus: taken,
            },
        );
        Ok(Placement {
            agent: chosen,
            existing: false,
        })
    }

    /// Drops pending placements that are now in an inventory, whose agent is
    /// no longer live, or that are too old to still be coming.
    fn prune_pending(&mut self, live: &HashMap<&str, &AgentLoad<'_>>, now: Instant) {
        self.pending.retain(|(user, env), p| {
            live.get(p.agent.as_str())
                .is_some_and(|a| a.inventory.state(user, env).is_none())
                && now.saturating_duration_since(p.at) < PENDING_TTL
        });
    }

    /// The agents with GPUs enough free for `demand`, counting those promised to
    /// pending placements; see [`gpus::fitting`].
    fn fitting<'a>(
        &self,
        live: &[AgentLoad<'a>],
        demand: &GpuDemand,
    ) -> Result<HashSet<&'a str>, PlaceError> {
        let mut promised: HashMap<&str, u32> = HashMap::new();
        for p in self.pending.values() {
            *promised.entry(p.agent.as_str()).or_default() += p.gpus;
        }
        gpus::fitting(live, demand, &promised)
    }

    /// Each live agent's load: reported containers plus pending placements
    /// (pruned, so none of them is in the inventory yet).
    fn loads<'a>(&self, live: &[AgentLoad<'a>]) -> HashMap<&'a str, u64> {
        let mut loads: HashMap<&str, u64> = live
            .iter()
            .map(|a| (a.name, u64::from(a.containers)))
            .collect();
        for p in self.pending.values() {
            if let Some(load) = loads.get_mut(p.agent.as_str()) {
                *load += 1;
            }
        }
        loads
    }

    /// Rule 3: an agent with spare capacity that already holds (or is about
    /// to hold) another of the user's containers. The user's home volume is
    /// there, which matters more than balance.
    fn home_agent<'a>(
        &self,
        live: &[AgentLoad<'a>],
        loads: &HashMap<&str, u64>,
        fitting: &HashSet<&str>,
        user: &str,
    ) -> Option<&'a str> {
        let pending_home = self
            .pending
            .iter()
            .find(|((u, _), _)| u == user)
            .map(|(_, p)| p.agent.as_str());
        live.iter()
            .filter(|a| a.inventory.has_user(user) || pending_home == Some(a.name))
            .filter(|a| fitting.contains(a.name))
            .find(|a| loads[a.name] < u64::from(a.capacity))
            .map(|a| a.name)
    }

    /// Rule 4: consistent hashing with bounded loads.
    fn hashed(
        &mut self,
        live: &[AgentLoad<'_>],
        loads: &HashMap<&str, u64>,
        fitting: &HashSet<&str>,
        user: &str,
    ) -> Result<String, PlaceError> {
        let members = Ring::members(live);
        if members.is_empty() {
            return Err(PlaceError::AllFull);
        }
        let ring = match &mut self.ring {
            Some(ring) if ring.members == members => ring,
            slot => slot.insert(Ring::new(members)),
        };
        let capacities: HashMap<&str, u64> = ring
            .members
            .iter()
            .map(|(name, cap)| (name.as_str(), u64::from(*cap)))
            .collect();
        let total_capacity: u64 = capacities.values().sum();
        let total_load: u64 = capacities.keys().map(|name| loads[name]).sum();

        for name in ring.candidates(user) {
            let (load, capacity) = (loads[name], capacities[name]);
            if load >= capacity || !fitting.contains(name) {
                continue;
            }
            let bound = bounded_load(self.epsilon, total_load, capacity, total_capacity);
            // Room for one more within the bound.
            if load < bound {
                return Ok(name.to_string());
            }
        }
        // Only reachable when loads exceed capacities or through rounding;
        // still better to spill to the emptiest agent than to refuse.
        least_loaded(
            capacities
                .iter()
                .filter(|(name, _)| fitting.contains(*name))
                .map(|(name, cap)| (*name, loads[name], *cap)),
        )
        .map(str::to_string)
        .ok_or(PlaceError::AllFull)
    }
}

/// The most containers an agent of `capacity` may hold once one more
/// container is placed: `ceil((1 + ε) · (total_load + 1) · capacity / total_capacity)`.
fn bounded_load(epsilon: f64, total_load: u64, capacity: u64, total_capacity: u64) -> u64 {
    let share = capacity as f64 / total_capacity as f64;
    ((1.0 + epsilon) * (total_load + 1) as f64 * share).ceil() as u64
}

/// The agent with spare capacity and the lowest load/capacity ratio; ties go
/// to the smaller name so the choice is deterministic.
fn least_loaded<'a>(agents: impl Iterator<Item = (&'a str, u64, u64)>) -> Option<&'a str> {
    agents
        .filter(|(_, load, capacity)| load < capacity)
        .min_by(|(an, al, ac), (bn, bl, bc)| {
            // al/ac < bl/bc without floating point.
            (al * bc).cmp(&(bl * ac)).then_with(|| an.cmp(bn))
        })
        .map(|(name, _, _)| name)
}

/// A consistent-hash ring over agents with capacity, built once per
/// membership.
struct Ring {
    /// (name, capacity) of every member, sorted by name; compared against
    /// the live agents to decide whether to rebuild.
    members: Vec<(String, u32)>,
    /// The ring itself. `StaticHashRing` points into its own heap-allocated
    /// node list, so `'static` here just means "as long as the ring".
    ring: StaticHashRing<'static, String, (), DefaultHash>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("members", &self.members)
            .field("vnodes", &self.ring.len())
            .finish()
    }
}

impl Ring {
    /// The ring's members for these live agents: those able to take
    /// containers at all.
    fn members(live: &[AgentLoad<'_>]) -> Vec<(String, u32)> {
        let mut members: Vec<(String, u32)> = live
            .iter()
            .filter(|a| a.capacity > 0)
            .map(|a| (a.name.to_string(), a.capacity))
            .collect();
        members.sort();
        members
    }

    fn new(members: Vec<(String, u32)>) -> Self {
        let nodes = members.iter().map(|(name, capacity)| {
            let vnodes = (*capacity as usize)
                .saturating_mul(VNODES_PER_CAPACITY)
                .clamp(MIN_VNODES, MAX_VNODES);
            Node::new(name.clone()).quantity(vnodes)
        });
        let ring = StaticHashRing::new(DefaultHash, nodes);
        Self { members, ring }
    }

    /// Every member, in the user's order of preference.
    fn candidates<'a>(&'a self, user: &str) -> impl Iterator<Item = &'a str> + 'a {
        self.ring
            .calc_candidates(&user)
            .map(|node| node.key.as_str())
    }
}

#[cfg(test)]
mod gpu_tests;
#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A test cluster: agents with capacities and inventories.
    #[derive(Default)]
    struct Cluster {
        /// name → (capacity, extra reported containers, inventory).
        agents: BTreeMap<String, (u32, u32, Vec<pb::ContainerInfo>, Inventory)>,
    }

    impl Cluster {
        fn new(agents: &[(&str, u32)]) -> Self {
            let mut c = Self::default();
            for (name, capacity) in agents {
                c.add(name, *capacity);
            }
            c
        }

        fn add(&mut self, name: &str, capacity: u32) {
            self.agents.insert(
                name.to_string(),
                (capacity, 0, Vec::new(), Inventory::default()),
            );
        }

        fn hold(&mut self, agent: &str, user: &str, env: &str) {
            let a = self.agents.get_mut(agent).unwrap();
            a.2.push(pb::ContainerInfo {
                user: user.to_string(),
                environment: env.to_string(),
                state: pb::ContainerState::Running.into(),
                gpus: Vec::new(),
                outdated: false,
            });
            a.3 = Inventory::from_proto(&a.2);
        }

        fn set_containers(&mut self, agent: &str, containers: u32) {
            self.agents.get_mut(agent).unwrap().1 = containers;
        }

        fn live(&self) -> Vec<AgentLoad<'_>> {
            self.agents
                .iter()
                .map(|(name, (capacity, extra, inv, inventory))| AgentLoad {
                    name,
                    capacity: *capacity,
                    containers: extra + inv.len() as u32,
                    inventory,
                    gpus: &[],
                })
                .collect()
        }
    }

    fn place(placer: &mut Placer, cluster: &Cluster, user: &str) -> Result<Placement, PlaceError> {
        placer.place(&cluster.live(), user, "default", Instant::now())
    }

    fn user(i: usize) -> String {
        format!("student{i:04}")
    }

    /// Places users 0..n one after another (each counting as load for the
    /// next, as at the start of a lab) and counts containers per agent.
    fn fill(cluster: &Cluster, n: usize) -> BTreeMap<String, usize> {
        let mut placer = Placer::new(0.25);
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let p = place(&mut placer, cluster, &user(i)).unwrap();
            *counts.entry(p.agent).or_default() += 1;
        }
        counts
    }

    /// Where the ring alone puts each user on an empty cluster.
    fn owners(agents: &[(&str, u32)], users: usize) -> Vec<String> {
        let cluster = Cluster::new(agents);
        let ring = Ring::new(Ring::members(&cluster.live()));
        (0..users)
            .map(|i| ring.candidates(&user(i)).next().unwrap().to_string())
            .collect()
    }

    const FIVE: [(&str, u32); 5] = [("a", 300), ("b", 300), ("c", 300), ("d", 300), ("e", 300)];

    #[test]
    fn existing_container_wins_over_hashing() {
        let mut cluster = Cluster::new(&[("a", 10), ("b", 10), ("c", 10)]);
        let hashed = place(&mut Placer::new(0.25), &cluster, "alice")
            .unwrap()
            .agent;
        let other = ["a", "b", "c"].into_iter().find(|n| *n != hashed).unwrap();
        cluster.hold(other, "alice", "default");

        let mut placer = Placer::new(0.25);
        for _ in 0..3 {
            let p = place(&mut placer, &cluster, "alice").unwrap();
            assert_eq!(
                p,
                Placement {
                    agent: other.to_string(),
                    existing: true
                }
            );
        }
        assert_eq!(placer.pending_len(), 0);
    }

    #[test]
    fn existing_container_wins_even_when_agent_is_full() {
        let mut cluster = Cluster::new(&[("a", 1), ("b", 10)]);
        cluster.hold("a", "alice", "default");
        let p = place(&mut Placer::new(0.25), &cluster, "alice").unwrap();
        assert_eq!(
            p,
            Placement {
                agent: "a".to_string(),
                existing: true
            }
        );
    }

    #[test]
    fn running_copy_preferred_over_stopped() {
        let mut cluster = Cluster::new(&[("a", 10), ("b", 10)]);
        cluster.hold("a", "alice", "default");
        cluster.hold("b", "alice", "default");
        let a = cluster.agents.get_mut("a").unwrap();
        a.2[0].state = pb::ContainerState::Stopped.into();
        a.3 = Inventory::from_proto(&a.2);
        assert_eq!(
            place(&mut Placer::new(0.25), &cluster, "alice")
                .unwrap()
                .agent,
            "b"
        );
    }

    #[test]
    fn repeated_place_is_sticky_before_the_inventory_shows_it() {
        let mut cluster = Cluster::new(&[("a", 10), ("b", 10), ("c", 10)]);
        let mut placer = Placer::new(0.25);
        let first = place(&mut placer, &cluster, "alice").unwrap();
        assert!(!first.existing);
        // Make hashing prefer another agent now: fill up the chosen one.
        cluster.set_containers(&first.agent, 9);
        let again = place(&mut placer, &cluster, "alice").unwrap();
        assert_eq!(again, first);
        assert_eq!(placer.pending_len(), 1);

        // Once the agent reports it, it is "existing" and no longer pending.
        cluster.hold(&first.agent, "alice", "default");
        let seen = place(&mut placer, &cluster, "alice").unwrap();
        assert_eq!(
            seen,
            Placement {
                agent: first.agent,
                existing: true
            }
        );
        assert_eq!(placer.pending_len(), 0);
    }

    #[test]
    fn pending_placement_to_a_dead_agent_is_dropped() {
        let mut cluster = Cluster::new(&[("a", 10), ("b", 10), ("c", 10)]);
        let mut placer = Placer::new(0.25);
        let first = place(&mut placer, &cluster, "alice").unwrap().agent;
        cluster.agents.remove(&first);
        let second = place(&mut placer, &cluster, "alice").unwrap().agent;
        assert_ne!(first, second);
        assert_eq!(placer.pending_len(), 1);
    }

    #[test]
    fn pending_placement_expires() {
        let cluster = Cluster::new(&[("a", 10), ("b", 10)]);
        let mut placer = Placer::new(0.25);
        let t0 = Instant::now();
        placer
            .place(&cluster.live(), "alice", "default", t0)
            .unwrap();
        placer
            .place(&cluster.live(), "bob", "default", t0 + PENDING_TTL)
            .unwrap();
        assert_eq!(
            placer.pending_len(),
            1,
            "alice's placement expired, bob's is new"
        );
    }

    #[test]
    fn users_environments_share_an_agent() {
        // Whatever the hash says for alice's second environment, her first
        // one's agent (with her home volume) is preferred while it has room.
        for holder in ["a", "b", "c"] {
            let mut cluster = Cluster::new(&[("a", 10), ("b", 10), ("c", 10)]);
            cluster.hold(holder, "alice", "default");
            let p = placer_place_env(&cluster, "alice", "gpu");
            assert_eq!(
                p,
                Placement {
                    agent: holder.to_string(),
                    existing: false
                }
            );
        }
        // Also before the first container shows up in an inventory.
        let cluster = Cluster::new(&[("a", 10), ("b", 10), ("c", 10)]);
        let mut placer = Placer::new(0.25);
        let now = Instant::now();
        let first = placer
            .place(&cluster.live(), "alice", "default", now)
            .unwrap();
        let second = placer.place(&cluster.live(), "alice", "gpu", now).unwrap();
        assert_eq!(first.agent, second.agent);
    }

    fn placer_place_env(cluster: &Cluster, user: &str, env: &str) -> Placement {
        Placer::new(0.25)
            .place(&cluster.live(), user, env, Instant::now())
            .unwrap()
    }

    #[test]
    fn bounded_load_with_equal_capacities() {
        let cluster = Cluster::new(&[("a", 1000), ("b", 1000), ("c", 1000)]);
        let counts = fill(&cluster, 300);
        let bound = (1.25_f64 * 300.0 / 3.0).ceil() as usize;
        assert_eq!(counts.values().sum::<usize>(), 300);
        for (agent, n) in &counts {
            assert!(*n <= bound, "{agent} holds {n} > {bound}: {counts:?}");
        }
    }

    #[test]
    fn distribution_follows_capacity() {
        let caps = [("small", 100), ("medium", 200), ("large", 300)];
        let cluster = Cluster::new(&caps);
        let counts = fill(&cluster, 300);
        for (name, cap) in caps {
            let fair = 300.0 * f64::from(cap) / 600.0;
            let n = counts.get(name).copied().unwrap_or(0) as f64;
            assert!(
                n <= (1.25 * fair).ceil(),
                "{name}: {n} vs fair {fair}: {counts:?}"
            );
            assert!(n >= 0.5 * fair, "{name}: {n} vs fair {fair}: {counts:?}");
        }
    }

    #[test]
    fn full_agents_are_skipped() {
        let mut cluster = Cluster::new(&[("a", 5), ("b", 5)]);
        cluster.set_containers("a", 5);
        for i in 0..5 {
            assert_eq!(
                place(&mut Placer::new(0.25), &cluster, &user(i))
                    .unwrap()
                    .agent,
                "b"
            );
        }
        cluster.set_containers("b", 5);
        assert_eq!(
            place(&mut Placer::new(0.25), &cluster, "alice"),
            Err(PlaceError::AllFull)
        );
        // Pending placements count as load too.
        let cluster = Cluster::new(&[("a", 2), ("b", 2)]);
        let mut placer = Placer::new(0.25);
        for i in 0..4 {
            place(&mut placer, &cluster, &user(i)).unwrap();
        }
        assert_eq!(
            place(&mut placer, &cluster, "late"),
            Err(PlaceError::AllFull)
        );
    }

    #[test]
    fn zero_capacity_agents_take_nothing() {
        let cluster = Cluster::new(&[("draining", 0)]);
        assert_eq!(
            place(&mut Placer::new(0.25), &cluster, "alice"),
            Err(PlaceError::AllFull)
        );
        let cluster = Cluster::new(&[("draining", 0), ("b", 3)]);
        assert_eq!(fill(&cluster, 3).keys().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn no_live_agents() {
        let err = place(&mut Placer::new(0.25), &Cluster::default(), "alice").unwrap_err();
        assert_eq!(err, PlaceError::NoLiveAgents);
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "no backend agent is available; try again shortly"
        );
    }

    #[test]
    fn error_statuses() {
        let status = tonic::Status::from(PlaceError::UnknownEnvironment {
            requested: "x".to_string(),
            available: vec!["default".to_string(), "gpu".to_string()],
        });
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(
            status.message(),
            "unknown environment 'x'; available: default, gpu"
        );
        let status = tonic::Status::from(PlaceError::AllFull);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "all backend agents are full");
    }

    #[test]
    fn least_loaded_compares_ratios() {
        let agents = [("a", 5, 10), ("b", 9, 20), ("c", 10, 10), ("d", 1, 2)];
        assert_eq!(least_loaded(agents.into_iter()), Some("b"));
        assert_eq!(least_loaded([("c", 10, 10)].into_iter()), None);
    }

    #[test]
    fn adding_an_agent_moves_about_one_in_n_plus_one() {
        let before = owners(&FIVE[..4], 1000);
        let after = owners(&FIVE, 1000);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        // Every user that moved, moved to the new agent.
        assert!(before.iter().zip(&after).all(|(b, a)| b == a || a == "e"));
        let fraction = moved as f64 / 1000.0;
        assert!(
            (0.5 / 5.0..=1.6 / 5.0).contains(&fraction),
            "moved {fraction}"
        );
    }

    #[test]
    fn removing_an_agent_moves_only_its_users() {
        let before = owners(&FIVE, 1000);
        let after = owners(&FIVE[..4], 1000);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(b, "e", "a user of {b} moved to {a}");
                moved += 1;
            }
        }
        let fraction = moved as f64 / 1000.0;
        assert!(
            (0.5 / 5.0..=1.6 / 5.0).contains(&fraction),
            "moved {fraction}"
        );
    }

    #[test]
    fn bounded_placement_is_stable_when_an_agent_joins() {
        // The whole pipeline (with load bounds), not only the ring: placing
        // a class of 1000 on 4 agents and again on 5 moves ~1/5 of them.
        let before = Cluster::new(&FIVE[..4]);
        let after = Cluster::new(&FIVE);
        let (mut pb, mut pa) = (Placer::new(0.25), Placer::new(0.25));
        let mut moved = 0;
        for i in 0..1000 {
            let b = place(&mut pb, &before, &user(i)).unwrap().agent;
            let a = place(&mut pa, &after, &user(i)).unwrap().agent;
            moved += usize::from(a != b);
        }
        let fraction = moved as f64 / 1000.0;
        assert!(
            (0.5 / 5.0..=1.6 / 5.0).contains(&fraction),
            "moved {fraction}"
        );
    }

    #[test]
    fn ring_is_cached_until_membership_changes() {
        let mut cluster = Cluster::new(&[("a", 10), ("b", 10)]);
        let mut placer = Placer::new(0.25);
        place(&mut placer, &cluster, "alice").unwrap();
        let vnodes = |p: &Placer| p.ring.as_ref().map(|r| r.ring.len());
        assert_eq!(vnodes(&placer), Some(2 * MIN_VNODES));
        cluster.set_containers("a", 3); // load changes do not rebuild
        place(&mut placer, &cluster, "bob").unwrap();
        assert_eq!(vnodes(&placer), Some(2 * MIN_VNODES));
        cluster.add("c", 100);
        place(&mut placer, &cluster, "carol").unwrap();
        assert_eq!(vnodes(&placer), Some(2 * MIN_VNODES + 400));
    }
}
