//! Placement of environments taking GPUs, with made-up GPU counts.

use super::*;

/// An agent: name, capacity, its GPUs and its containers (user, environment, GPUs).
struct Agent {
    name: &'static str,
    capacity: u32,
    gpus: Vec<String>,
    inventory: Inventory,
    containers: u32,
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn agent(name: &'static str, gpus: &[&str], holding: &[(&str, &str, &[&str])]) -> Agent {
    let containers: Vec<pb::ContainerInfo> = holding
        .iter()
        .map(|(user, env, gpus)| pb::ContainerInfo {
            listening: Vec::new(),
            user: (*user).to_owned(),
            environment: (*env).to_owned(),
            state: pb::ContainerState::Running.into(),
            gpus: ids(gpus),
            outdated: false,
        })
        .collect();
    Agent {
        name,
        capacity: 100,
        gpus: ids(gpus),
        inventory: Inventory::from_proto(&containers),
        containers: containers.len() as u32,
    }
}

fn live(agents: &[Agent]) -> Vec<AgentLoad<'_>> {
    agents
        .iter()
        .map(|a| AgentLoad {
            name: a.name,
            capacity: a.capacity,
            containers: a.containers,
            inventory: &a.inventory,
            gpus: &a.gpus,
        })
        .collect()
}

fn one() -> GpuDemand {
    GpuDemand::Count(1)
}

#[test]
fn gpu_environments_go_where_gpus_are_free() {
    let agents = [
        agent("cpu-node", &[], &[]),
        agent("gpu-node", &["0", "1"], &[]),
    ];
    let mut placer = Placer::new(0.25);
    let now = Instant::now();
    for user in ["alice", "bob"] {
        let placed = placer
            .place_with(&live(&agents), user, "gpu", &one(), now)
            .unwrap();
        assert_eq!(placed.agent, "gpu-node", "{user}");
    }
    // Both GPUs are promised to placements the inventory does not show yet.
    let refused = placer
        .place_with(&live(&agents), "carol", "gpu", &one(), now)
        .unwrap_err();
    assert_eq!(
        refused,
        PlaceError::NoGpusFree {
            total: 2,
            free: 0,
            needed: 1,
            suggestion: String::new()
        }
    );
    // Environments without GPUs still go anywhere.
    placer
        .place(&live(&agents), "carol", "default", now)
        .unwrap();
}

#[test]
fn gpus_held_by_containers_are_not_free_and_sticky_containers_stay() {
    let agents = [
        agent("g1", &["0", "1"], &[("alice", "gpu", &["0", "1"])]),
        agent("g2", &["0"], &[("bob", "gpu", &["0"])]),
    ];
    let mut placer = Placer::new(0.25);
    let now = Instant::now();
    let err = placer
        .place_with(&live(&agents), "carol", "gpu", &one(), now)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "all 3 GPUs are in use; try again later",
        "{err:?}"
    );
    // alice's container holds the GPUs it needs: she goes back to it.
    let placed = placer
        .place_with(&live(&agents), "alice", "gpu", &one(), now)
        .unwrap();
    assert_eq!((placed.agent.as_str(), placed.existing), ("g1", true));
}

#[test]
fn a_stopped_container_gives_its_gpus_back() {
    let containers = [
        pb::ContainerInfo {
            listening: Vec::new(),
            user: "alice".to_owned(),
            environment: "gpu".to_owned(),
            state: pb::ContainerState::Stopped.into(),
            gpus: ids(&["0"]),
            outdated: false,
        },
        pb::ContainerInfo {
            listening: Vec::new(),
            user: "bob".to_owned(),
            environment: "gpu".to_owned(),
            state: pb::ContainerState::Paused.into(),
            gpus: ids(&["1"]),
            outdated: false,
        },
    ];
    let agents = [Agent {
        name: "g1",
        capacity: 100,
        gpus: ids(&["0", "1"]),
        inventory: Inventory::from_proto(&containers),
        containers: 2,
    }];
    let mut placer = Placer::new(0.25);
    let now = Instant::now();
    // alice's idle-stopped container holds no GPU: carol gets GPU 0 …
    let placed = placer
        .place_with(&live(&agents), "carol", "gpu", &one(), now)
        .unwrap();
    assert_eq!((placed.agent.as_str(), placed.existing), ("g1", false));
    // … and bob's paused one still holds GPU 1, so dave finds none.
    let err = placer
        .place_with(&live(&agents), "dave", "gpu", &one(), now)
        .unwrap_err();
    assert!(
        matches!(err, PlaceError::NoGpusFree { free: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn counts_beyond_any_node_are_refused_with_the_numbers() {
    let agents = [agent("g1", &["0", "1"], &[]), agent("g2", &["0", "1"], &[])];
    let mut placer = Placer::new(0.25);
    let err = placer
        .place_with(
            &live(&agents),
            "alice",
            "big",
            &GpuDemand::Count(3),
            Instant::now(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        PlaceError::NoGpusFree {
            total: 4,
            free: 4,
            needed: 3,
            suggestion: String::new()
        }
    );
}

#[test]
fn named_devices_and_whole_nodes() {
    let agents = [
        agent("g1", &["0", "1"], &[("bob", "gpu", &["1"])]),
        agent("g2", &["0", "1"], &[]),
    ];
    let mut placer = Placer::new(0.25);
    let now = Instant::now();
    let placed = placer
        .place_with(
            &live(&agents),
            "alice",
            "one",
            &GpuDemand::Ids(ids(&["1"])),
            now,
        )
        .unwrap();
    assert_eq!(placed.agent, "g2", "g1's GPU 1 is bob's");
    let placed = placer
        .place_with(&live(&agents), "carol", "all", &GpuDemand::All, now)
        .unwrap_err();
    assert!(
        matches!(placed, PlaceError::NoGpusFree { total: 4, .. }),
        "g2's GPU 1 is promised to alice and g1's is bob's: {placed:?}"
    );
    let fresh = [agent("g3", &["0", "1"], &[])];
    let placed = Placer::new(0.25)
        .place_with(&live(&fresh), "carol", "all", &GpuDemand::All, now)
        .unwrap();
    assert_eq!(placed.agent, "g3");
}

#[test]
fn no_gpus_anywhere() {
    let agents = [agent("cpu", &[], &[])];
    let err = Placer::new(0.25)
        .place_with(&live(&agents), "alice", "gpu", &one(), Instant::now())
        .unwrap_err();
    assert_eq!(err.to_string(), "no node has GPUs now");
}

#[test]
fn demand_of_the_wire_request() {
    let req = |count, all, ids: &[&str]| pb::GpuRequest {
        count,
        all,
        device_ids: super::gpu_tests::ids(ids),
    };
    assert_eq!(GpuDemand::of(None), GpuDemand::None);
    assert_eq!(
        GpuDemand::of(Some(&req(2, false, &[]))),
        GpuDemand::Count(2)
    );
    assert_eq!(GpuDemand::of(Some(&req(0, true, &[]))), GpuDemand::All);
    assert_eq!(
        GpuDemand::of(Some(&req(0, false, &["3"]))),
        GpuDemand::Ids(ids(&["3"]))
    );
}
