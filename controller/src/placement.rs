//! Where a user's container lives, or should be created.
//!
//! Synchronous and clock-free: the caller hands in the agents' reports, their
//! liveness and the current time, so every rule here is unit-tested without a
//! network or a clock.
//!
//! The order of preference is:
//! 1. an agent whose inventory already holds (user, environment) (a draining
//!    one first: it keeps serving what it holds);
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
//!
//! The placer keeps its own indexes, updated as agents report
//! ([`Placer::report`]) and as it places, so a placement costs no pass over all
//! agents or all pending placements (issue 23): user → containers' locations,
//! each agent's load (reported containers plus pending placements) and the
//! totals over the ring's members, pending placements by user with an expiry
//! heap. The ring weighs agents by capacity exactly, at any capacity (virtual
//! nodes scaled alike for all to keep the ring within a budget), changes only
//! when its membership does or an agent's capacity moves beyond a tolerance,
//! and can be built without holding the caller's lock ([`Placer::ring_plan`],
//! [`Placer::install_ring`]). A report's inventory can likewise be indexed and
//! compared with the last one outside the lock ([`Report`], [`Placer::apply`]).

mod gpus;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
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
/// Rings over large capacities are scaled down, every agent's virtual nodes
/// divided by the same power of two (so shares stay proportional to capacity
/// at any capacity; issue 23: a per-agent clamp did not), as far as leaves the
/// smallest agent this many: enough for its share of the ring to be within
/// about 3% of its capacity share.
const PRECISE_VNODES: u64 = 1_024;
/// And further, whatever the smallest keeps, until the ring has at most this
/// many in all (its memory and rebuild time).
const MAX_RING_VNODES: usize = 1 << 21;
/// A member's capacity may drift this fraction from the one its ring was built
/// with before the ring is rebuilt; the bounded-load check uses the exact one.
const CAPACITY_TOLERANCE: u32 = 8;

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

/// An agent's report indexed for the placer ([`Placer::apply`]), built without
/// holding it.
#[derive(Debug, Clone)]
pub struct Report {
    /// Most containers it will hold.
    capacity: u32,
    /// Containers it reported holding.
    containers: u32,
    /// Its GPUs (device ids), those held included.
    gpus: Vec<String>,
    /// Which containers those are.
    inventory: Arc<Inventory>,
}

impl Report {
    /// Indexes a report's inventory.
    pub fn new(status: &pb::AgentStatus) -> Self {
        Self {
            capacity: status.capacity,
            containers: status.containers,
            gpus: status.gpus.clone(),
            inventory: Arc::new(Inventory::from_proto(&status.inventory)),
        }
    }

    /// The users whose containers differ between `base` (the agent's last
    /// inventory, [`Placer::inventory`]) and this report. Costs both
    /// inventories' sizes in look-ups, without the placer.
    pub fn changes_from(&self, base: Option<&Arc<Inventory>>) -> Change {
        let new = &self.inventory.by_user;
        let mut users: Vec<String> = new
            .iter()
            .filter(|(user, envs)| base.is_none_or(|b| b.by_user.get(*user) != Some(*envs)))
            .map(|(user, _)| user.clone())
            .collect();
        if let Some(base) = base {
            users.extend(
                base.by_user
                    .keys()
                    .filter(|user| !new.contains_key(*user))
                    .cloned(),
            );
        }
        Change {
            base: base.cloned(),
            users,
        }
    }
}

/// The users whose containers on one agent changed between two of its
/// reports ([`Report::changes_from`]).
#[derive(Debug, Clone)]
pub struct Change {
    /// The inventory compared against.
    base: Option<Arc<Inventory>>,
    /// Users added, removed or with other containers or states.
    users: Vec<String>,
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

/// What the placer knows of one agent, from its reports and its own placements.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// Most containers it will hold.
    capacity: u32,
    /// Containers it reported holding.
    containers: u32,
    /// Which containers those are.
    inventory: Arc<Inventory>,
    /// Its GPUs (device ids), those held included.
    gpus: Vec<String>,
    /// Its stream is open (it may still be silent: liveness is the caller's).
    connected: bool,
    /// It takes no new containers.
    draining: bool,
    /// Pending placements to it.
    pending: u32,
    /// GPUs those pending placements will take.
    pending_gpus: u32,
    /// The capacity the ring weighs it by (see [`CAPACITY_TOLERANCE`]).
    ring_capacity: u32,
}

impl Slot {
    /// Whether it is on the ring (and counts in the totals).
    fn member(&self) -> bool {
        self.connected && !self.draining && self.capacity > 0
    }

    /// Whether it may take a new container, if live.
    fn open(&self) -> bool {
        self.connected && !self.draining
    }

    /// Reported containers plus pending placements.
    fn load(&self) -> u64 {
        u64::from(self.containers) + u64::from(self.pending)
    }

    /// The view [`gpus`] works on.
    fn view<'a>(&'a self, name: &'a str) -> AgentLoad<'a> {
        AgentLoad {
            name,
            capacity: self.capacity,
            containers: self.containers,
            inventory: &self.inventory,
            gpus: &self.gpus,
        }
    }
}

/// One container of a user somewhere: the user → location index's entries.
#[derive(Debug, Clone)]
struct Holding {
    /// The agent holding it.
    agent: String,
    /// Its environment.
    environment: String,
    /// Its state there.
    state: pb::ContainerState,
}

/// Consistent-hashing placement with bounded loads, plus the memory of recent
/// placements it needs to stay sticky between heartbeats.
#[derive(Debug)]
pub struct Placer {
    /// Bounded-load ε: how far above its fair share an agent may go.
    epsilon: f64,
    /// How many standard deviations of chance's spread above its fair share an
    /// agent may go, when that is more than ε allows ([`bounded_load`]).
    sigmas: f64,
    /// Every agent reported, by name.
    slots: HashMap<String, Slot>,
    /// user → every container of theirs any agent reported.
    holders: HashMap<String, Vec<Holding>>,
    /// Σ load over the ring's members.
    total_load: u64,
    /// Σ capacity over the ring's members.
    total_capacity: u64,
    /// Bumped whenever the ring's members or their virtual nodes change.
    membership: u64,
    /// The ring over the members, and the `membership` it was built for.
    ring: Option<Arc<Ring>>,
    /// The `membership` value `ring` is right for.
    ring_generation: u64,
    /// user → environment → recent placement not yet in the inventory.
    pending: HashMap<String, HashMap<String, Pending>>,
    /// Number of entries in `pending`.
    pending_count: usize,
    /// (placed at, user, environment) of pending placements, soonest to expire
    /// first; entries replaced or removed since are skipped when popped.
    expiry: BinaryHeap<Reverse<(Instant, String, String)>>,
}

/// The ring's members at one `membership`, to build the ring from without
/// holding the placer (and its caller's lock).
#[derive(Debug)]
pub struct RingPlan {
    /// (name, capacity) of every member, sorted by name.
    members: Vec<(String, u32)>,
    /// The `membership` these members are of.
    generation: u64,
}

/// A ring built from a [`RingPlan`], for [`Placer::install_ring`].
#[derive(Debug)]
pub struct BuiltRing {
    /// The ring.
    ring: Arc<Ring>,
    /// The `membership` it is right for.
    generation: u64,
}

impl RingPlan {
    /// Builds the ring (the costly part: sorting every virtual node).
    pub fn build(self) -> BuiltRing {
        BuiltRing {
            ring: Arc::new(Ring::new(self.members)),
            generation: self.generation,
        }
    }
}

impl Placer {
    /// A placer with the given bounded-load ε (> 0) and the strict bound:
    /// at most `(1 + ε)` times an agent's share.
    pub fn new(epsilon: f64) -> Self {
        Self {
            epsilon,
            sigmas: 0.0,
            slots: HashMap::new(),
            holders: HashMap::new(),
            total_load: 0,
            total_capacity: 0,
            membership: 0,
            ring: None,
            ring_generation: 0,
            pending: HashMap::new(),
            pending_count: 0,
            expiry: BinaryHeap::new(),
        }
    }

    /// The same placer letting an agent go `sigmas` (≥ 0) standard deviations
    /// above its share where that is more than ε allows ([`bounded_load`]).
    pub fn with_sigmas(mut self, sigmas: f64) -> Self {
        self.sigmas = sigmas;
        self
    }

    /// Number of placements still waiting to show up in an inventory.
    pub fn pending_len(&self) -> usize {
        self.pending_count
    }

    /// Records an agent's report (registration or heartbeat): its capacity, load,
    /// inventory and GPUs, whether its stream is open and whether it is draining.
    /// Pending placements its inventory now shows are done. All of it under the
    /// caller's lock; [`Placer::apply`] does only the index updates there.
    pub fn report(
        &mut self,
        name: &str,
        status: &pb::AgentStatus,
        connected: bool,
        draining: bool,
    ) {
        let report = Report::new(status);
        let change = report.changes_from(self.inventory(name).as_ref());
        self.apply(name, report, change, connected, draining);
    }

    /// The inventory last reported by `name`, to compute a [`Change`] from
    /// without holding the placer.
    pub fn inventory(&self, name: &str) -> Option<Arc<Inventory>> {
        self.slots.get(name).map(|s| s.inventory.clone())
    }

    /// Records a report whose inventory was indexed ([`Report::new`]) and
    /// compared with the last one ([`Report::changes_from`]) without holding the
    /// placer. Costs the users whose containers there changed, nothing per
    /// unchanged user or per other agent; when another report of the agent came
    /// in between, the comparison is redone here. Returns the replaced
    /// inventory, for the caller to free after releasing its lock.
    pub fn apply(
        &mut self,
        name: &str,
        report: Report,
        change: Change,
        connected: bool,
        draining: bool,
    ) -> Option<Arc<Inventory>> {
        let current = self.slots.get(name).map(|s| &s.inventory);
        let same_base = match (current, &change.base) {
            (Some(now), Some(base)) => Arc::ptr_eq(now, base),
            (None, None) => true,
            _ => false,
        };
        let change = if same_base {
            change
        } else {
            report.changes_from(current)
        };
        if !self.slots.contains_key(name) {
            self.slots.insert(name.to_string(), Slot::default());
        }
        let Report {
            capacity,
            containers,
            gpus,
            inventory,
        } = report;
        let mut old = None;
        self.adjust(name, |slot| {
            old = Some(std::mem::replace(&mut slot.inventory, inventory));
            slot.capacity = capacity;
            slot.containers = containers;
            slot.gpus = gpus;
            slot.connected = connected;
            slot.draining = draining;
        });
        let slot = self.slots.get(name)?;
        let new = slot.inventory.clone();
        let mut done = Vec::new();
        for user in &change.users {
            if let Some(held) = self.holders.get_mut(user) {
                held.retain(|h| h.agent != name);
                if held.is_empty() {
                    self.holders.remove(user);
                }
            }
            let Some(envs) = new.by_user.get(user) else {
                continue;
            };
            let held = self.holders.entry(user.clone()).or_default();
            held.extend(envs.iter().map(|(env, state)| Holding {
                agent: name.to_string(),
                environment: env.clone(),
                state: *state,
            }));
            // A pending placement here is done once its container shows up,
            // which changes the user's entry: unchanged users need no look.
            if let Some(pending) = self.pending.get(user) {
                done.extend(
                    envs.keys()
                        .filter(|env| pending.get(*env).is_some_and(|p| p.agent == name))
                        .map(|env| (user.clone(), env.clone())),
                );
            }
        }
        for (user, env) in done {
            self.remove_pending(&user, &env);
        }
        old
    }

    /// Marks an agent's stream closed (or open again): a closed one takes nothing
    /// new, though its inventory still says where containers are.
    pub fn set_connected(&mut self, name: &str, connected: bool) {
        self.adjust(name, |slot| slot.connected = connected);
    }

    /// Marks an agent draining (or not): it keeps what it holds, takes nothing new.
    pub fn set_draining(&mut self, name: &str, draining: bool) {
        self.adjust(name, |slot| slot.draining = draining);
    }

    /// The agents reported holding (user, environment), in no particular order.
    pub fn holders<'a>(
        &'a self,
        user: &str,
        environment: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.holders
            .get(user)
            .into_iter()
            .flatten()
            .filter(move |h| h.environment == environment)
            .map(|h| h.agent.as_str())
    }

    /// The members to build a new ring from, when the current one is out of date.
    /// Costs one pass over the agents, and only after a membership change.
    pub fn ring_plan(&self) -> Option<RingPlan> {
        if self.ring.is_some() && self.ring_generation == self.membership {
            return None;
        }
        Some(RingPlan {
            members: self.members(),
            generation: self.membership,
        })
    }

    /// Installs a ring built from [`Placer::ring_plan`], unless membership
    /// changed again since (then the next placement plans once more).
    pub fn install_ring(&mut self, built: BuiltRing) {
        if built.generation == self.membership {
            self.ring = Some(built.ring);
            self.ring_generation = built.generation;
        }
    }

    /// Chooses the agent for (user, environment) among the `live` agents and
    /// remembers the choice. `environment` must already be resolved and take no GPUs.
    ///
    /// For a caller that has its agents as a slice (and for tests): it
    /// re-indexes them all, O(agents + pending), before placing; the registry
    /// keeps the indexes up to date instead and calls [`Placer::place_indexed`].
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
        self.sync(live);
        let names: HashSet<&str> = live.iter().map(|a| a.name).collect();
        self.place_indexed(&|name| names.contains(name), user, environment, gpus, now)
    }

    /// Chooses the agent for (user, environment) among the reported agents that
    /// `is_live` says are live, and remembers the choice. Costs a few hash
    /// look-ups plus the ring's candidates walked; a pass over all agents only
    /// when no agent is found (to tell "none live" from "all full") or for a
    /// GPU demand.
    pub fn place_indexed(
        &mut self,
        is_live: &dyn Fn(&str) -> bool,
        user: &str,
        environment: &str,
        gpus: &GpuDemand,
        now: Instant,
    ) -> Result<Placement, PlaceError> {
        self.expire(now);

        // Rule 1: the container exists. A draining agent keeps serving what it
        // holds; otherwise a running copy beats a stopped one (there can be two
        // after an agent came back from the dead).
        if let Some(agent) = self.existing(is_live, user, environment) {
            // Whatever was pending for it is there now.
            self.remove_pending(user, environment);
            return Ok(Placement {
                agent,
                existing: true,
            });
        }

        // Rule 2: it is being created since a recent placement.
        if let Some(p) = self.pending.get(user).and_then(|p| p.get(environment)) {
            if self.usable(&p.agent, is_live) {
                return Ok(Placement {
                    agent: p.agent.clone(),
                    existing: false,
                });
            }
            // Its agent is gone or draining: place again.
            self.remove_pending(user, environment);
        }

        let fitting = self.fitting(is_live, gpus)?;
        let fits = |name: &str| fitting.as_ref().is_none_or(|f| f.contains(name));
        let chosen = match self.home_agent(is_live, &fits, user) {
            Some(home) => home,
            None => self.hashed(is_live, &fits, user)?,
        };
        let taken = self
            .slots
            .get(&chosen)
            .map_or(0, |s| gpus.count_on(&s.view(&chosen)));
        self.add_pending(user, environment, &chosen, taken, now);
        Ok(Placement {
            agent: chosen,
            existing: false,
        })
    }

    /// Rule 1's agent, if any live one holds (user, environment).
    fn existing(&self, is_live: &dyn Fn(&str) -> bool, user: &str, env: &str) -> Option<String> {
        let held = self.holders.get(user)?;
        let live = || {
            held.iter()
                .filter(|h| h.environment == env && is_live(&h.agent))
                .filter_map(|h| Some((h, self.slots.get(&h.agent)?)))
        };
        let draining = live()
            .filter(|(_, s)| s.draining && s.connected)
            .map(|(h, _)| h.agent.as_str())
            .min();
        draining
            .or_else(|| {
                live()
                    .filter(|(_, s)| s.open())
                    .min_by_key(|(h, _)| (h.state != pb::ContainerState::Running, &h.agent))
                    .map(|(h, _)| h.agent.as_str())
            })
            .map(str::to_string)
    }

    /// Whether the agent may take (or keep being chosen for) a new container.
    fn usable(&self, name: &str, is_live: &dyn Fn(&str) -> bool) -> bool {
        self.slots.get(name).is_some_and(Slot::open) && is_live(name)
    }

    /// For a GPU demand, the live agents with GPUs enough free, counting those
    /// promised to pending placements (see [`gpus::fitting`]); `None` (any agent
    /// fits) for no demand.
    fn fitting(
        &self,
        is_live: &dyn Fn(&str) -> bool,
        demand: &GpuDemand,
    ) -> Result<Option<HashSet<String>>, PlaceError> {
        if demand.is_none() {
            return Ok(None);
        }
        let mut names: Vec<&String> = self
            .slots
            .iter()
            .filter(|(name, s)| s.open() && is_live(name))
            .map(|(name, _)| name)
            .collect();
        if names.is_empty() {
            return Err(PlaceError::NoLiveAgents);
        }
        names.sort();
        let live: Vec<AgentLoad<'_>> = names.iter().map(|n| self.slots[*n].view(n)).collect();
        let promised: HashMap<&str, u32> = names
            .iter()
            .map(|n| (n.as_str(), self.slots[*n].pending_gpus))
            .collect();
        let fitting = gpus::fitting(&live, demand, &promised)?;
        Ok(Some(fitting.into_iter().map(str::to_string).collect()))
    }

    /// Rule 3: an agent with spare capacity that already holds (or is about
    /// to hold) another of the user's containers. The user's home volume is
    /// there, which matters more than balance. Ties go to the smaller name.
    fn home_agent(
        &self,
        is_live: &dyn Fn(&str) -> bool,
        fits: &dyn Fn(&str) -> bool,
        user: &str,
    ) -> Option<String> {
        let held = self.holders.get(user).into_iter().flatten();
        let pending = self.pending.get(user).into_iter().flat_map(|p| p.values());
        held.map(|h| h.agent.as_str())
            .chain(pending.map(|p| p.agent.as_str()))
            .filter(|name| self.usable(name, is_live) && fits(name))
            .filter(|name| {
                self.slots
                    .get(*name)
                    .is_some_and(|s| s.load() < u64::from(s.capacity))
            })
            .min()
            .map(str::to_string)
    }

    /// Rule 4: consistent hashing with bounded loads.
    fn hashed(
        &mut self,
        is_live: &dyn Fn(&str) -> bool,
        fits: &dyn Fn(&str) -> bool,
        user: &str,
    ) -> Result<String, PlaceError> {
        if let Some(plan) = self.ring_plan() {
            let built = plan.build();
            self.install_ring(built);
        }
        let ring = self.ring.clone().ok_or(PlaceError::AllFull)?;
        let walk = (!ring.members.is_empty()).then(|| ring.candidates(user));
        for name in walk.into_iter().flatten() {
            let Some(slot) = self.slots.get(name) else {
                continue;
            };
            let (load, capacity) = (slot.load(), u64::from(slot.capacity));
            if load >= capacity || !is_live(name) || !fits(name) {
                continue;
            }
            let bound = bounded_load(
                self.epsilon,
                self.sigmas,
                self.total_load,
                capacity,
                self.total_capacity,
            );
            // Room for one more within the bound.
            if load < bound {
                return Ok(name.to_string());
            }
        }
        // Only reachable when loads exceed capacities or through rounding;
        // still better to spill to the emptiest agent than to refuse.
        let open: Vec<(&str, &Slot)> = self
            .slots
            .iter()
            .filter(|(name, s)| s.open() && is_live(name))
            .map(|(name, s)| (name.as_str(), s))
            .collect();
        if open.is_empty() {
            return Err(PlaceError::NoLiveAgents);
        }
        least_loaded(
            open.into_iter()
                .filter(|(name, s)| s.member() && fits(name))
                .map(|(name, s)| (name, s.load(), u64::from(s.capacity))),
        )
        .map(str::to_string)
        .ok_or(PlaceError::AllFull)
    }

    /// The ring's members now: (name, capacity), sorted by name.
    fn members(&self) -> Vec<(String, u32)> {
        let mut members: Vec<(String, u32)> = self
            .slots
            .iter()
            .filter(|(_, s)| s.member())
            .map(|(name, s)| (name.clone(), s.ring_capacity))
            .collect();
        members.sort();
        members
    }

    /// Changes one agent's slot through `change`, keeping the totals over the
    /// ring's members right and noting a change of membership or virtual nodes.
    fn adjust(&mut self, name: &str, change: impl FnOnce(&mut Slot)) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let was_member = slot.member();
        if was_member {
            self.total_load -= slot.load();
            self.total_capacity -= u64::from(slot.capacity);
        }
        change(slot);
        let member = slot.member();
        if member {
            self.total_load += slot.load();
            self.total_capacity += u64::from(slot.capacity);
        }
        let reweigh = member && (!was_member || drifted(slot.ring_capacity, slot.capacity));
        if reweigh {
            slot.ring_capacity = slot.capacity;
        }
        if reweigh || was_member != member {
            self.membership += 1;
        }
    }

    /// Remembers a placement until its agent reports it or it expires.
    fn add_pending(&mut self, user: &str, env: &str, agent: &str, gpus: u32, now: Instant) {
        self.remove_pending(user, env);
        self.pending.entry(user.to_string()).or_default().insert(
            env.to_string(),
            Pending {
                agent: agent.to_string(),
                at: now,
                gpus,
            },
        );
        self.pending_count += 1;
        self.adjust(agent, |slot| {
            slot.pending += 1;
            slot.pending_gpus += gpus;
        });
        self.expiry
            .push(Reverse((now, user.to_string(), env.to_string())));
        // Entries removed early stay in the heap until popped; keep it in
        // proportion to what is pending.
        if self.expiry.len() > 2 * self.pending_count + 1_024 {
            self.expiry = self
                .pending
                .iter()
                .flat_map(|(u, envs)| {
                    envs.iter()
                        .map(move |(e, p)| Reverse((p.at, u.clone(), e.clone())))
                })
                .collect();
        }
    }

    /// Forgets the pending placement of (user, environment), if any.
    fn remove_pending(&mut self, user: &str, env: &str) {
        let Some(envs) = self.pending.get_mut(user) else {
            return;
        };
        let Some(p) = envs.remove(env) else {
            return;
        };
        if envs.is_empty() {
            self.pending.remove(user);
        }
        self.pending_count -= 1;
        self.adjust(&p.agent, |slot| {
            slot.pending = slot.pending.saturating_sub(1);
            slot.pending_gpus = slot.pending_gpus.saturating_sub(p.gpus);
        });
    }

    /// Drops the pending placements [`PENDING_TTL`] old at `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _))) = self.expiry.peek() {
            if now.saturating_duration_since(*at) < PENDING_TTL {
                break;
            }
            let Some(Reverse((at, user, env))) = self.expiry.pop() else {
                break;
            };
            // Only if it is still that placement, not a later one of the same key.
            let current = self
                .pending
                .get(&user)
                .and_then(|p| p.get(&env))
                .is_some_and(|p| p.at == at);
            if current {
                self.remove_pending(&user, &env);
            }
        }
    }

    /// Re-indexes the placer from a slice of live agents, for [`Placer::place`]:
    /// pending placements whose agent is not in it, or which its inventory
    /// shows, are dropped; the ring is kept when its members are unchanged.
    fn sync(&mut self, live: &[AgentLoad<'_>]) {
        let by_name: HashMap<&str, &AgentLoad<'_>> = live.iter().map(|a| (a.name, a)).collect();
        let mut gone = Vec::new();
        for (user, envs) in &self.pending {
            for (env, p) in envs {
                let coming = by_name
                    .get(p.agent.as_str())
                    .is_some_and(|a| a.inventory.state(user, env).is_none());
                if !coming {
                    gone.push((user.clone(), env.clone()));
                }
            }
        }
        for (user, env) in gone {
            self.remove_pending(&user, &env);
        }
        // The capacities the ring was weighed by, kept within the tolerance as
        // the indexed path keeps them.
        let weighed: HashMap<String, u32> = self
            .slots
            .drain()
            .filter(|(_, s)| s.member())
            .map(|(name, s)| (name, s.ring_capacity))
            .collect();
        self.holders.clear();
        for a in live {
            let ring_capacity = weighed
                .get(a.name)
                .copied()
                .filter(|was| !drifted(*was, a.capacity))
                .unwrap_or(a.capacity);
            let slot = Slot {
                capacity: a.capacity,
                containers: a.containers,
                inventory: Arc::new(a.inventory.clone()),
                gpus: a.gpus.to_vec(),
                connected: true,
                draining: false,
                pending: 0,
                pending_gpus: 0,
                ring_capacity,
            };
            for (user, envs) in &slot.inventory.by_user {
                let held = self.holders.entry(user.clone()).or_default();
                held.extend(envs.iter().map(|(env, state)| Holding {
                    agent: a.name.to_string(),
                    environment: env.clone(),
                    state: *state,
                }));
            }
            self.slots.insert(a.name.to_string(), slot);
        }
        for p in self.pending.values().flat_map(|envs| envs.values()) {
            if let Some(slot) = self.slots.get_mut(&p.agent) {
                slot.pending += 1;
                slot.pending_gpus += p.gpus;
            }
        }
        let members = self.slots.values().filter(|s| s.member());
        self.total_load = members.clone().map(Slot::load).sum();
        self.total_capacity = members.map(|s| u64::from(s.capacity)).sum();
        let same = self
            .ring
            .as_ref()
            .is_some_and(|ring| self.members() == ring.members);
        self.membership += 1;
        if same {
            self.ring_generation = self.membership;
        }
    }
}

/// The most containers an agent of `capacity` may hold once one more
/// container is placed: its capacity-weighted share of the load then,
/// `m = (total_load + 1) · capacity / total_capacity`, plus the larger of
/// `ε · m` and `σ · √m`, rounded up.
///
/// The `√m` term is chance's own spread (a share of `m` users hashed at random
/// varies by about `√m`): a bound tighter than that turns away a large part of
/// the users whose agent it is, and which ones depends on the order they log in
/// in, so the same class lands elsewhere on another day or after an agent joins
/// or leaves (issue 23). With σ = 2.5 it binds below a share of `(σ/ε)²`
/// (100 at ε = 0.25); above, `ε · m` does, as in Mirrokni et al.
fn bounded_load(
    epsilon: f64,
    sigmas: f64,
    total_load: u64,
    capacity: u64,
    total_capacity: u64,
) -> u64 {
    let share = capacity as f64 / total_capacity as f64;
    let m = (total_load + 1) as f64 * share;
    (m + (epsilon * m).max(sigmas * m.sqrt())).ceil() as u64
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

/// Whether a member's capacity moved from the one its ring weight was set by
/// by more than [`CAPACITY_TOLERANCE`] allows.
fn drifted(weighed: u32, capacity: u32) -> bool {
    u64::from(weighed.abs_diff(capacity)) * u64::from(CAPACITY_TOLERANCE) > u64::from(weighed)
}

/// Virtual nodes for each of `capacities`: [`VNODES_PER_CAPACITY`] per unit
/// of capacity, all divided by the same power of two, as far as leaves the
/// smallest [`PRECISE_VNODES`] and then until the ring fits in
/// [`MAX_RING_VNODES`]; never fewer than [`MIN_VNODES`]. Proportional to
/// capacity for every agent above the floor (to within one virtual node); one
/// below it gets more ring than its share, and the bounded-load check, which
/// uses exact capacities, holds it to its share. For agents of equal capacity
/// the scale does not depend on how many there are, so one joining or leaving
/// does not rescale the others.
fn vnodes(capacities: &[u32]) -> Vec<usize> {
    let units = |c: u32| u64::from(c).saturating_mul(VNODES_PER_CAPACITY as u64);
    let at = |shift: u32| -> Vec<usize> {
        capacities
            .iter()
            .map(|&c| {
                let scaled = units(c).div_ceil(1u64 << shift);
                usize::try_from(scaled)
                    .unwrap_or(usize::MAX)
                    .max(MIN_VNODES)
            })
            .collect()
    };
    let smallest = capacities.iter().map(|&c| units(c)).min().unwrap_or(0);
    let mut shift = 0;
    while shift < 40 && smallest >> (shift + 1) >= PRECISE_VNODES {
        shift += 1;
    }
    loop {
        let counts = at(shift);
        let total = counts.iter().fold(0usize, |t, c| t.saturating_add(*c));
        let floor_only = counts.iter().all(|c| *c == MIN_VNODES);
        if total <= MAX_RING_VNODES || floor_only || shift >= 40 {
            return counts;
        }
        shift += 1;
    }
}

/// A consistent-hash ring over agents with capacity, built once per
/// membership.
struct Ring {
    /// (name, capacity) of every member, sorted by name, as built.
    members: Vec<(String, u32)>,
    /// The ring itself. `StaticHashRing` points into its own heap-allocated
    /// node list, so `'static` here just means "as long as the ring".
    ring: StaticHashRing<'static, String, (), DefaultHash>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("members", &self.members.len())
            .field("vnodes", &self.ring.len())
            .finish()
    }
}

impl Ring {
    /// The ring's members for these live agents: those able to take
    /// containers at all.
    #[cfg(test)]
    fn members(live: &[AgentLoad<'_>]) -> Vec<(String, u32)> {
        let mut members: Vec<(String, u32)> = live
            .iter()
            .filter(|a| a.capacity > 0)
            .map(|a| (a.name.to_string(), a.capacity))
            .collect();
        members.sort();
        members
    }

    /// The ring over `members` ((name, capacity), sorted by name).
    fn new(members: Vec<(String, u32)>) -> Self {
        let capacities: Vec<u32> = members.iter().map(|(_, c)| *c).collect();
        let nodes = members
            .iter()
            .zip(vnodes(&capacities))
            .map(|((name, _), count)| Node::new(name.clone()).quantity(count));
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
                listening: Vec::new(),
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
    fn chances_spread_keeps_a_class_where_it_lands_whatever_the_login_order() {
        // 300 students on 30 agents: a share of 10 each, spread ±3 by chance.
        // The strict bound (13) turns away many of each agent's users, which
        // ones depending on who logs in first; 2.5σ (18) only the outliers.
        let agents: Vec<(String, u32)> = (0..30).map(|i| (format!("n{i:02}"), 100)).collect();
        let agents: Vec<(&str, u32)> = agents.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        let cluster = Cluster::new(&agents);
        let class = 300;
        let owners = |sigmas: f64, reversed: bool| -> Vec<String> {
            let mut placer = Placer::new(0.25).with_sigmas(sigmas);
            let mut owners = vec![String::new(); class];
            for k in 0..class {
                let i = if reversed { class - 1 - k } else { k };
                owners[i] = place(&mut placer, &cluster, &user(i)).unwrap().agent;
            }
            owners
        };
        let moved = |sigmas: f64| {
            let (a, b) = (owners(sigmas, false), owners(sigmas, true));
            a.iter().zip(&b).filter(|(x, y)| x != y).count()
        };
        let (strict, spread) = (moved(0.0), moved(2.5));
        assert!(
            spread * 4 <= strict && spread <= class / 20,
            "users placed elsewhere when the class logs in last first: {strict} strict, {spread} with 2.5σ"
        );
        // And the bound holds: at most 10 + 2.5·√10 → 18 an agent.
        let mut counts = BTreeMap::<String, usize>::new();
        for owner in owners(2.5, false) {
            *counts.entry(owner).or_default() += 1;
        }
        assert!(counts.values().all(|n| *n <= 18), "{counts:?}");
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

    #[test]
    fn ring_shares_follow_capacity_beyond_the_old_clamp() {
        // Capacities of 600, 2,400 and 10,000 once all got 2,048 virtual nodes;
        // now 4 per unit, halved alike while the smallest keeps 1,024.
        let caps = [600u32, 2_400, 10_000];
        assert_eq!(vnodes(&caps), [1_200, 4_800, 20_000]);
        let members: Vec<(String, u32)> = caps
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("a{i}"), *c))
            .collect();
        let ring = Ring::new(members);
        let mut counts = BTreeMap::<&str, usize>::new();
        let users = 130_000;
        for i in 0..users {
            *counts
                .entry(ring.candidates(&user(i)).next().unwrap())
                .or_default() += 1;
        }
        let total: u32 = caps.iter().sum();
        for (i, cap) in caps.iter().enumerate() {
            let share = f64::from(*cap) / f64::from(total);
            let got = counts[format!("a{i}").as_str()] as f64 / users as f64;
            assert!(
                (got / share - 1.0).abs() < 0.05,
                "a{i}: {got:.4} of the users, capacity share {share:.4}: {counts:?}"
            );
        }
    }

    #[test]
    fn a_ring_over_its_budget_scales_every_agent_alike() {
        let caps = [1u32 << 20, 1 << 19, 3 * (1 << 18), 3];
        let counts = vnodes(&caps);
        assert!(
            counts.iter().sum::<usize>() <= MAX_RING_VNODES,
            "{counts:?}"
        );
        assert_eq!(counts[0], 2 * counts[1], "{counts:?}");
        assert_eq!(2 * counts[2], 3 * counts[1], "{counts:?}");
        assert_eq!(counts[3], MIN_VNODES);
        // Agents so many that only the floor fits get the floor, not less.
        let many = vec![1u32; MAX_RING_VNODES / MIN_VNODES + 1];
        assert!(vnodes(&many).iter().all(|c| *c == MIN_VNODES));
    }

    proptest::proptest! {
        /// Every agent above the floor gets the same virtual nodes per unit of
        /// capacity (to within one node's rounding), and the ring keeps within
        /// its budget unless the floor alone is over it.
        #[test]
        fn virtual_nodes_are_proportional_to_capacity(
            caps in proptest::collection::vec(1u32..5_000_000, 1..40),
        ) {
            let counts = vnodes(&caps);
            let per_unit: Vec<f64> = caps
                .iter()
                .zip(&counts)
                .filter(|(_, c)| **c > MIN_VNODES)
                .map(|(cap, c)| *c as f64 / f64::from(*cap))
                .collect();
            let (lo, hi) = per_unit
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            if !per_unit.is_empty() {
                proptest::prop_assert!(hi / lo <= 1.0 + 1.0 / MIN_VNODES as f64, "{caps:?} → {counts:?}");
            }
            let total: usize = counts.iter().sum();
            proptest::prop_assert!(
                total <= MAX_RING_VNODES || counts.iter().all(|c| *c == MIN_VNODES),
                "{total} virtual nodes for {caps:?}"
            );
        }
    }

    #[test]
    fn large_agents_get_their_capacity_share() {
        // Capacities 1,000 and 9,000: once both were clamped to the same ring
        // share and the small one was held at 1.25× its share by the bound.
        let mut placer = Placer::new(0.25);
        placer.report("small", &report_of(1_000, &[]), true, false);
        placer.report("big", &report_of(9_000, &[]), true, false);
        let now = Instant::now();
        let mut small = 0usize;
        let users = 5_000;
        for i in 0..users {
            let p = placer
                .place_indexed(&|_| true, &user(i), "default", &GpuDemand::None, now)
                .unwrap();
            small += usize::from(p.agent == "small");
        }
        let share = users as f64 * 0.1;
        assert!(
            (small as f64) < 1.12 * share && (small as f64) > 0.88 * share,
            "small took {small} of {users}, its capacity share {share}"
        );
    }

    /// An agent's report with `held` containers (user, "default") of these users.
    fn report_of(capacity: u32, held: &[&str]) -> pb::AgentStatus {
        let inventory: Vec<pb::ContainerInfo> = held
            .iter()
            .map(|user| pb::ContainerInfo {
                listening: Vec::new(),
                user: user.to_string(),
                environment: "default".to_string(),
                state: pb::ContainerState::Running.into(),
                gpus: Vec::new(),
                outdated: false,
            })
            .collect();
        pb::AgentStatus {
            capacity,
            containers: inventory.len() as u32,
            inventory,
            ..Default::default()
        }
    }

    #[test]
    fn a_report_compared_off_the_lock_against_an_older_inventory_is_compared_again() {
        // Two reports of one agent compared with the same inventory (as when a
        // registration and a heartbeat race): the later one applied must still
        // leave the user index as its inventory says, not as its stale change does.
        let mut placer = Placer::new(0.25);
        placer.report("a", &report_of(10, &["alice", "bob"]), true, false);
        let base = placer.inventory("a");
        let first = Report::new(&report_of(10, &["alice", "carol"]));
        let second = Report::new(&report_of(10, &["dave"]));
        let (c1, c2) = (
            first.changes_from(base.as_ref()),
            second.changes_from(base.as_ref()),
        );
        placer.apply("a", first, c1, true, false);
        placer.apply("a", second, c2, true, false);
        for (user, held) in [
            ("alice", false),
            ("bob", false),
            ("carol", false),
            ("dave", true),
        ] {
            assert_eq!(
                placer.holders(user, "default").count(),
                usize::from(held),
                "{user}"
            );
        }
        // A change computed against the current inventory is taken as it is.
        let third = Report::new(&report_of(10, &["dave", "erin"]));
        let c3 = third.changes_from(placer.inventory("a").as_ref());
        placer.apply("a", third, c3, true, false);
        assert_eq!(placer.holders("erin", "default").collect::<Vec<_>>(), ["a"]);
        assert_eq!(placer.holders("dave", "default").collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn reports_keep_the_indexes_and_the_ring_only_changes_with_membership() {
        let mut placer = Placer::new(0.25);
        let all = |_: &str| true;
        let now = Instant::now();
        placer.report("a", &report_of(600, &[]), true, false);
        placer.report("b", &report_of(600, &["bob"]), true, false);
        let first = placer
            .place_indexed(&all, "alice", "default", &GpuDemand::None, now)
            .unwrap();
        assert!(!first.existing);
        assert_eq!(placer.pending_len(), 1);
        assert!(placer.ring_plan().is_none(), "built for these members");
        // Bob's container is found through the user index.
        let bob = placer
            .place_indexed(&all, "bob", "default", &GpuDemand::None, now)
            .unwrap();
        assert_eq!((bob.agent.as_str(), bob.existing), ("b", true));

        // A capacity change that keeps every agent's virtual nodes keeps the ring;
        // the chosen agent's report with alice's container ends her pending entry.
        let held: &[&str] = if first.agent == "b" {
            &["bob", "alice"]
        } else {
            &["alice"]
        };
        placer.report(&first.agent, &report_of(650, held), true, false);
        assert!(
            placer.ring_plan().is_none(),
            "600 → 650 is within the tolerance"
        );
        assert_eq!(placer.pending_len(), 0);
        assert_eq!(
            placer.holders("alice", "default").collect::<Vec<_>>(),
            [first.agent.as_str()]
        );

        // A new member, a smaller capacity, a drain or a closed stream do change it.
        placer.report("c", &report_of(10, &[]), true, false);
        let plan = placer.ring_plan().expect("c joined");
        placer.install_ring(plan.build());
        assert!(placer.ring_plan().is_none());
        placer.report("c", &report_of(20, &[]), true, false);
        assert!(placer.ring_plan().is_some(), "c's capacity doubled");
        placer.install_ring(placer.ring_plan().unwrap().build());
        placer.set_draining("c", true);
        assert!(placer.ring_plan().is_some(), "c drains");
        // A ring built for an older membership is not installed.
        let stale = placer.ring_plan().unwrap();
        placer.set_connected("a", false);
        placer.install_ring(stale.build());
        assert!(placer.ring_plan().is_some(), "a left after the plan");
    }

    #[test]
    fn pending_placements_expire_by_their_time_and_leave_the_load() {
        let mut placer = Placer::new(0.25);
        let all = |_: &str| true;
        let t0 = Instant::now();
        placer.report("a", &report_of(2, &[]), true, false);
        for user in ["u1", "u2"] {
            placer
                .place_indexed(&all, user, "default", &GpuDemand::None, t0)
                .unwrap();
        }
        // Both pending placements count as load: "a" is full.
        assert_eq!(
            placer.place_indexed(&all, "u3", "default", &GpuDemand::None, t0),
            Err(PlaceError::AllFull)
        );
        let later = t0 + PENDING_TTL;
        let p = placer
            .place_indexed(&all, "u3", "default", &GpuDemand::None, later)
            .unwrap();
        assert_eq!(p.agent, "a");
        assert_eq!(placer.pending_len(), 1, "u1 and u2 expired, u3 is new");
        // An agent nobody says is live takes nothing.
        assert_eq!(
            placer.place_indexed(&|_| false, "u4", "default", &GpuDemand::None, later),
            Err(PlaceError::NoLiveAgents)
        );
    }
}
