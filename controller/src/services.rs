//! The registry of services: the TCP ports listening in students' running containers,
//! as the agents read them from each container's socket tables and report them in
//! their heartbeats, named `PORT-USER[-ENV]` (and `LABEL-USER[-ENV]` where the
//! environment names the port) for operators (`labssh services`), students'
//! self-service logins and the web front door.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use labssh_proto::pb;
use labssh_proto::services::name;

use crate::catalogue::Catalogue;
use crate::registry::Registry;

/// The services `request` asks for, sorted by user, environment and port. Only live
/// agents' containers count: a dead agent's last report says nothing of now.
pub fn list(
    registry: &Registry,
    catalogue: &Catalogue,
    request: &pb::ListServicesRequest,
    now: Instant,
) -> pb::ListServicesReply {
    let default = catalogue.default_environment();
    let mut services = Vec::new();
    for agent in registry.agents(now) {
        if !agent.live || !(request.agent.is_empty() || agent.name == request.agent) {
            continue;
        }
        let inventory = agent.status.map(|s| s.inventory).unwrap_or_default();
        for container in inventory {
            if container.state() != pb::ContainerState::Running
                || !(request.user.is_empty() || container.user == request.user)
            {
                continue;
            }
            let environment = catalogue.environment(&container.environment);
            let read_only = match viewing(request, &container.user, environment) {
                Some(read_only) => read_only,
                None => continue,
            };
            let labels = labels(environment);
            for port in &container.listening {
                let label = labels.get(&port.port).copied().unwrap_or_default();
                let service = pb::ServiceInfo {
                    name: name(
                        &port.port.to_string(),
                        &container.user,
                        &container.environment,
                        default,
                    ),
                    user: container.user.clone(),
                    environment: container.environment.clone(),
                    port: port.port,
                    label: label.to_owned(),
                    agent: agent.name.clone(),
                    agent_endpoint: agent.endpoint.clone(),
                    live: agent.live,
                    addresses: port.addresses.clone(),
                    local: port.addresses.iter().any(|a| reachable_as_localhost(a)),
                    read_only,
                };
                let labelled = (!label.is_empty())
                    .then(|| name(label, &container.user, &container.environment, default));
                if request.name.is_empty()
                    || request.name == service.name
                    || labelled.as_deref() == Some(request.name.as_str())
                {
                    services.push(service);
                }
            }
        }
    }
    services.sort_by(|a, b| {
        (&a.user, &a.environment, a.port, &a.agent).cmp(&(
            &b.user,
            &b.environment,
            b.port,
            &b.agent,
        ))
    });
    pb::ListServicesReply { services }
}

/// Whether the request's viewer may open `owner`'s services in `environment`:
/// `Some(false)` for their own (or when no viewer is named), `Some(true)` for a
/// reader's (one of their groups is among its `service_readers`), `None` otherwise.
fn viewing(
    request: &pb::ListServicesRequest,
    owner: &str,
    environment: Option<&pb::Environment>,
) -> Option<bool> {
    if request.viewer.is_empty() || request.viewer == owner {
        return Some(false);
    }
    let groups = request
        .viewer_identity
        .as_ref()
        .map(|i| i.groups.as_slice())
        .unwrap_or_default();
    let readers = environment
        .map(|e| e.service_readers.as_slice())
        .unwrap_or_default();
    readers.iter().any(|r| groups.contains(r)).then_some(true)
}

/// The environment's friendly names by port; of two names for one port, the first
/// in order.
fn labels(environment: Option<&pb::Environment>) -> HashMap<u32, &str> {
    let mut by_port: HashMap<u32, &str> = HashMap::new();
    for (label, port) in environment.into_iter().flat_map(|e| &e.service_names) {
        by_port
            .entry(*port)
            .and_modify(|l| *l = (*l).min(label.as_str()))
            .or_insert(label);
    }
    by_port
}

/// A socket on a wildcard or loopback address answers a connection to the
/// container's `localhost`.
fn reachable_as_localhost(address: &str) -> bool {
    address
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified() || ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EnvironmentConfig};
    use std::time::Duration;

    fn container(
        user: &str,
        env: &str,
        state: pb::ContainerState,
        ports: &[(u32, &str)],
    ) -> pb::ContainerInfo {
        pb::ContainerInfo {
            user: user.into(),
            environment: env.into(),
            state: state.into(),
            listening: ports
                .iter()
                .map(|(port, address)| pb::ListeningPort {
                    port: *port,
                    addresses: vec![address.to_string()],
                })
                .collect(),
            ..Default::default()
        }
    }

    fn lab() -> (Registry, Catalogue, Instant) {
        let mut config = Config::default();
        let mut web = EnvironmentConfig {
            image: "labssh/web".into(),
            ..EnvironmentConfig::default()
        };
        web.services.insert("app".into(), 3000);
        web.service_readers = vec!["tas".into()];
        config.environments.insert("web".into(), web);
        let registry = Registry::new(&config);
        let now = Instant::now();
        let status = |inventory| pb::AgentStatus {
            capacity: 10,
            inventory,
            ..Default::default()
        };
        use pb::ContainerState::{Running, Stopped};
        registry.register(
            "node1",
            "http://node1",
            status(vec![
                container(
                    "alice",
                    "default",
                    Running,
                    &[(8888, "0.0.0.0"), (22, "127.0.0.1")],
                ),
                container("alice", "web", Running, &[(3000, "172.17.0.5")]),
                // A stopped container's last reading is not a service.
                container("carol", "default", Stopped, &[(80, "0.0.0.0")]),
            ]),
            now,
        );
        registry.register(
            "node2",
            "http://node2",
            status(vec![container("bob", "default", Running, &[(8888, "::")])]),
            now,
        );
        (registry, Catalogue::new(&config), now)
    }

    fn names(reply: &pb::ListServicesReply) -> Vec<&str> {
        reply.services.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn services_are_named_by_port_user_and_environment() {
        let (registry, catalogue, now) = lab();
        let all = list(&registry, &catalogue, &Default::default(), now);
        assert_eq!(
            names(&all),
            ["22-alice", "8888-alice", "3000-alice-web", "8888-bob"]
        );
        let web = &all.services[2];
        assert_eq!(
            (web.label.as_str(), web.agent.as_str(), web.local),
            ("app", "node1", false)
        );
        assert!(all.services[1].local && all.services[3].local);
        let request = |user: &str, agent: &str, name: &str| pb::ListServicesRequest {
            user: user.into(),
            agent: agent.into(),
            name: name.into(),
            ..Default::default()
        };
        let alice = list(&registry, &catalogue, &request("alice", "", ""), now);
        assert_eq!(names(&alice), ["22-alice", "8888-alice", "3000-alice-web"]);
        let node2 = list(&registry, &catalogue, &request("", "node2", ""), now);
        assert_eq!(names(&node2), ["8888-bob"]);
        // By either of its names; a name nobody's service has finds nothing.
        for name in ["3000-alice-web", "app-alice-web"] {
            let one = list(&registry, &catalogue, &request("", "", name), now);
            assert_eq!(names(&one), ["3000-alice-web"], "{name}");
        }
        for name in ["8888-alice-web", "app-alice", "80-carol", "8888-bob-web"] {
            let none = list(&registry, &catalogue, &request("", "", name), now);
            assert!(none.services.is_empty(), "{name}: {none:?}");
        }
    }

    #[test]
    fn a_viewer_sees_their_own_and_what_their_groups_may_read() {
        let (registry, catalogue, now) = lab();
        let viewer = |name: &str, groups: &[&str]| pb::ListServicesRequest {
            viewer: name.into(),
            viewer_identity: Some(pb::Identity {
                groups: groups.iter().map(|g| g.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let bob = list(&registry, &catalogue, &viewer("bob", &[]), now);
        assert_eq!(names(&bob), ["8888-bob"]);
        assert!(!bob.services[0].read_only);
        // Bob a TA of the web environment: alice's web service too, read only.
        let ta = list(&registry, &catalogue, &viewer("bob", &["tas"]), now);
        assert_eq!(names(&ta), ["3000-alice-web", "8888-bob"]);
        assert_eq!(
            (ta.services[0].read_only, ta.services[1].read_only),
            (true, false)
        );
        let other = list(&registry, &catalogue, &viewer("carol", &["cs101"]), now);
        assert!(other.services.is_empty(), "{other:?}");
    }

    #[test]
    fn a_dead_agents_services_are_not_listed() {
        let (registry, catalogue, now) = lab();
        let later = now + Duration::from_secs(3600);
        let reply = list(&registry, &catalogue, &Default::default(), later);
        assert!(reply.services.is_empty(), "{reply:?}");
    }
}
