//! Properties of placement over generated clusters (issue 23): bounded loads and
//! capacity hold for any capacities and class sizes, and sticky placement moves
//! only a dead agent's users.

use std::collections::BTreeMap;
use std::time::Instant;

use labssh_controller::placement::{AgentLoad, Inventory, Placer};
use labssh_proto::pb;
use proptest::prelude::*;

/// The bounded-load ε the controller uses by default.
const EPSILON: f64 = 0.25;

/// A container of `user` in environment "default".
fn container(user: &str) -> pb::ContainerInfo {
    pb::ContainerInfo {
        listening: Vec::new(),
        user: user.to_string(),
        environment: "default".to_string(),
        state: pb::ContainerState::Running.into(),
        gpus: Vec::new(),
        outdated: false,
    }
}

/// Agents `a0…` of these capacities holding these containers, as a placer sees them.
fn live<'a>(
    names: &'a [String],
    capacities: &[u32],
    inventories: &'a [Inventory],
    counts: &[usize],
) -> Vec<AgentLoad<'a>> {
    names
        .iter()
        .zip(capacities)
        .zip(inventories.iter().zip(counts))
        .map(|((name, capacity), (inventory, count))| AgentLoad {
            name,
            capacity: *capacity,
            containers: *count as u32,
            inventory,
            gpus: &[],
        })
        .collect()
}

/// Places `users` new users one after another on empty agents of `capacities`
/// (each placement counting as load for the next), with the strict bound;
/// returns each user's agent index.
fn fill(capacities: &[u32], users: usize) -> Vec<usize> {
    fill_with(capacities, users, 0.0)
}

/// [`fill`] with the bound letting agents go `sigmas` standard deviations over.
fn fill_with(capacities: &[u32], users: usize, sigmas: f64) -> Vec<usize> {
    let names: Vec<String> = (0..capacities.len()).map(|i| format!("a{i}")).collect();
    let inventories = vec![Inventory::default(); capacities.len()];
    let counts = vec![0; capacities.len()];
    let agents = live(&names, capacities, &inventories, &counts);
    let mut placer = Placer::new(EPSILON).with_sigmas(sigmas);
    let now = Instant::now();
    (0..users)
        .map(|u| {
            let placed = placer
                .place(&agents, &format!("u{u}"), "default", now)
                .expect("room for every user");
            names
                .iter()
                .position(|n| *n == placed.agent)
                .expect("a known agent")
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// No agent goes over its capacity or over its capacity-weighted share `m`
    /// of the class plus the larger of `ε·m` and `σ·√m` (rounded up), σ = 0
    /// being the strict `(1 + ε)` bound.
    #[test]
    fn loads_stay_within_capacity_and_the_bound(
        capacities in prop::collection::vec(1u32..200, 2..12),
        fill_percent in 1usize..50,
        sigmas in prop_oneof![Just(0.0), 0.0f64..3.0],
    ) {
        let total: u32 = capacities.iter().sum();
        let users = (total as usize * fill_percent / 100).max(1);
        let owners = fill_with(&capacities, users, sigmas);
        let mut counts = vec![0usize; capacities.len()];
        for i in owners {
            counts[i] += 1;
        }
        for (i, (&count, &capacity)) in counts.iter().zip(&capacities).enumerate() {
            let m = users as f64 * f64::from(capacity) / f64::from(total);
            let bound = (m + (EPSILON * m).max(sigmas * m.sqrt())).ceil() as usize;
            prop_assert!(count <= capacity as usize, "a{i}: {count} > capacity {capacity}");
            prop_assert!(count <= bound, "a{i}: {count} > bound {bound} ({counts:?}, {capacities:?})");
        }
    }

    /// Once the agents report their containers, everyone logs in again where they
    /// are; when one agent dies, only its users move.
    #[test]
    fn only_a_dead_agents_users_move(
        capacities in prop::collection::vec(5u32..100, 3..10),
        fill_percent in 5usize..50,
        dead in 0usize..10,
    ) {
        let dead = dead % capacities.len();
        // Room for everyone on the survivors too.
        let room: u32 = capacities.iter().sum::<u32>() - capacities[dead];
        let users = (room as usize * fill_percent / 100).max(1);
        let owners = fill(&capacities, users);

        let names: Vec<String> = (0..capacities.len()).map(|i| format!("a{i}")).collect();
        let mut held: Vec<Vec<pb::ContainerInfo>> = vec![Vec::new(); capacities.len()];
        for (u, &i) in owners.iter().enumerate() {
            held[i].push(container(&format!("u{u}")));
        }
        let inventories: Vec<Inventory> = held.iter().map(|h| Inventory::from_proto(h)).collect();
        let counts: Vec<usize> = held.iter().map(Vec::len).collect();
        let all = live(&names, &capacities, &inventories, &counts);
        let survivors: Vec<AgentLoad<'_>> =
            all.iter().copied().filter(|a| a.name != names[dead]).collect();

        let mut placer = Placer::new(EPSILON);
        let now = Instant::now();
        let mut after: BTreeMap<usize, String> = BTreeMap::new();
        for (u, &owner) in owners.iter().enumerate() {
            let user = format!("u{u}");
            let again = placer.place(&all, &user, "default", now).unwrap();
            prop_assert!(again.existing);
            prop_assert_eq!(&again.agent, &names[owner]);
            after.insert(u, placer.place(&survivors, &user, "default", now).unwrap().agent);
        }
        for (u, &owner) in owners.iter().enumerate() {
            if owner != dead {
                prop_assert_eq!(&after[&u], &names[owner], "u{} moved off a live agent", u);
            } else {
                prop_assert_ne!(&after[&u], &names[dead]);
            }
        }
    }
}
