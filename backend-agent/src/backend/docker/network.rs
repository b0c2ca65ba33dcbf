//! The networks students' containers live on: one user-defined bridge per agent and
//! egress policy, made by the agent, never Docker's default bridge.
//!
//! Each has inter-container traffic off (`enable_icc=false`) and a bridge interface
//! named from a hash of the prefix, the agent and the policy (`lsh` and 10 hex
//! digits), so the firewall matches it with `-i` ([`crate::firewall::bridge`]) and
//! the same policy always lands on the same network. A policy is a network, not an
//! environment, so Docker's few address pools last, and a student's environments
//! never reach each other either. `egress = "none"` is no network at all: Docker's
//! `none` mode, loopback only, whether the firewall is on or not.
//!
//! A container on another network (Docker's default bridge, from before, or a
//! policy that changed) is moved at its next login: connected to its network and
//! disconnected from the rest while it runs; into or out of `none` it is recreated,
//! home kept.

use std::collections::HashMap;

use bollard::models::{ContainerInspectResponse, NetworkCreateRequest};
use bollard::models::{NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use labssh_proto::egress::{Destination, Egress, Host};
use labssh_proto::net::IpNet;
use labssh_proto::pb;

use super::container_spec::{LABEL_AGENT, LABEL_PREFIX};
use super::errors::{docker_message, status_of};
use super::timing::timed;
use super::DockerBackend;
use crate::backend::{BackendError, BridgeEgress};

/// Label of a network holding its egress policy ([`Egress::key`]).
pub const LABEL_EGRESS: &str = "labssh.egress";
/// Docker's option naming the bridge interface.
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// Docker's option for traffic between containers on one bridge.
const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
/// Start of every labssh bridge interface's name.
pub const BRIDGE_PREFIX: &str = "lsh";
/// Docker's network mode of a container with loopback only.
const NONE: &str = "none";

/// The network a container of some policy belongs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Loopback only (`egress = "none"`).
    Loopback,
    /// A bridge of this agent.
    Bridge {
        /// The Docker network's name, `{prefix}-net-{hash}`.
        name: String,
        /// Its interface, `lsh{hash}` (at most 15 bytes, as Linux wants).
        bridge: String,
        /// Its policy.
        egress: Egress,
    },
}

impl Target {
    /// Where the containers of `prefix` and `agent` with `egress` go.
    pub fn of(prefix: &str, agent: &str, egress: &Egress) -> Target {
        if *egress == Egress::None {
            return Target::Loopback;
        }
        let hash = fnv1a(&format!("{prefix}\0{agent}\0{}", egress.key())) & 0xff_ffff_ffff;
        Target::Bridge {
            name: format!("{prefix}-net-{hash:010x}"),
            bridge: format!("{BRIDGE_PREFIX}{hash:010x}"),
            egress: egress.clone(),
        }
    }

    /// Docker's `NetworkMode` for a container created on it.
    pub fn network_mode(&self) -> String {
        match self {
            Target::Loopback => NONE.to_owned(),
            Target::Bridge { name, .. } => name.clone(),
        }
    }

    /// How the student is told about the policy.
    fn describe(&self) -> &'static str {
        match self {
            Target::Loopback => "loopback only",
            Target::Bridge {
                egress: Egress::Internet,
                ..
            } => "internet access",
            Target::Bridge { .. } => "access to an allow-list only",
        }
    }

    /// Whether `container` is on this network and no other.
    pub fn holds(&self, container: &ContainerInspectResponse) -> bool {
        match self {
            Target::Loopback => mode(container) == NONE,
            Target::Bridge { name, .. } => {
                let networks = networks(container);
                networks.len() == 1 && networks[0] == *name
            }
        }
    }

    /// Whether moving `container` here means recreating it (into or out of loopback
    /// only, or off a namespace it shares); else it is reconnected where it runs.
    pub fn needs_recreate(&self, container: &ContainerInspectResponse) -> bool {
        let mode = mode(container);
        *self == Target::Loopback
            || mode == NONE
            || mode == "host"
            || mode.starts_with("container:")
    }

    /// The line the student reads after their container moved here.
    pub fn notice(&self, recreated: bool) -> String {
        if recreated {
            format!(
                "your container was recreated on its own network ({}); your home directory is kept",
                self.describe()
            )
        } else {
            format!(
                "your container was moved to its own network ({}); nothing in it changed",
                self.describe()
            )
        }
    }
}

/// The environment's policy; one that does not parse (the controller checks them)
/// fails the login rather than leaving the container unguarded.
pub fn egress_of(env: &pb::Environment) -> Result<Egress, BackendError> {
    Egress::from_pb(env.network.as_ref())
        .map_err(|e| BackendError::CreateFailed(format!("environment {}: network: {e}", env.name)))
}

/// The container's network mode (`none`, `default`, a network's name...).
fn mode(container: &ContainerInspectResponse) -> String {
    container
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default()
}

/// The networks the container is connected to.
fn networks(container: &ContainerInspectResponse) -> Vec<String> {
    container
        .network_settings
        .as_ref()
        .and_then(|s| s.networks.as_ref())
        .map(|n| n.keys().cloned().collect())
        .unwrap_or_default()
}

/// 64-bit FNV-1a: stable across releases and machines, which names must be.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl DockerBackend {
    /// Makes sure the network of `target` exists and its rules are in force: at once
    /// when this run made sure of it before (a container created on a network gone
    /// meanwhile makes the caller [`DockerBackend::forget_network`] and come back).
    pub(super) async fn ensure_network(&self, target: &Target) -> Result<(), BackendError> {
        let Target::Bridge {
            name,
            bridge,
            egress,
        } = target
        else {
            return Ok(());
        };
        if self.known_networks().contains(name) {
            return Ok(());
        }
        let failed = |e: &bollard::errors::Error| BackendError::Runtime {
            action: "setting up the container's network",
            message: docker_message(e),
        };
        // One login at a time per network: Docker would make a second network of the
        // same name (and then refuse it its bridge), and no container may join before
        // the rules are in.
        let _network = timed(name, "network_lock", self.locks.lock(name)).await;
        timed(
            name,
            "network_make",
            self.make_network(name, bridge, egress),
        )
        .await
        .map_err(|e| failed(&e))?;
        timed(name, "network_guard", self.guard_bridge(bridge, egress)).await;
        self.known_networks().insert(name.clone());
        Ok(())
    }

    /// Forgets that `target`'s network exists (Docker did not find it); true if it was
    /// taken for existing, so making sure of it again may help.
    pub(super) fn forget_network(&self, target: &Target) -> bool {
        match target {
            Target::Loopback => false,
            Target::Bridge { name, .. } => self.known_networks().remove(name),
        }
    }

    fn known_networks(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.networks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the network `name` unless it exists.
    async fn make_network(
        &self,
        name: &str,
        bridge: &str,
        egress: &Egress,
    ) -> Result<(), bollard::errors::Error> {
        match self.docker.inspect_network(name, None).await {
            Err(e) if status_of(&e) == Some(404) => {}
            other => return other.map(|_| ()),
        }
        let request = self.network_request(name, bridge, egress);
        match self.docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = %name, bridge = %bridge, egress = %egress.key(), "created a containers' network");
                Ok(())
            }
            // Another agent process made it meanwhile.
            Err(e) => match self.docker.inspect_network(name, None).await {
                Ok(_) => Ok(()),
                Err(_) => Err(e),
            },
        }
    }

    /// The create request of a network: a bridge named `bridge`, no traffic between
    /// its containers, IPv4 only, labelled with this agent and the policy.
    fn network_request(&self, name: &str, bridge: &str, egress: &Egress) -> NetworkCreateRequest {
        let labels = [
            (LABEL_AGENT, self.agent.clone()),
            (LABEL_PREFIX, self.prefix.clone()),
            (LABEL_EGRESS, egress.key()),
        ];
        NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            enable_ipv6: Some(false),
            options: Some(HashMap::from([
                (BRIDGE_NAME.to_owned(), bridge.to_owned()),
                (ENABLE_ICC.to_owned(), "false".to_owned()),
            ])),
            labels: Some(labels.map(|(k, v)| (k.to_owned(), v)).into()),
            ..Default::default()
        }
    }

    /// Puts in force the rules of `bridge`, once per run of the agent; without a
    /// firewall (it is off, or none was handed over) there are none.
    async fn guard_bridge(&self, bridge: &str, egress: &Egress) {
        let Some(guard) = self.guard.get().cloned() else {
            return;
        };
        if !self
            .guarded
            .lock()
            .expect("guarded lock")
            .insert(bridge.to_owned())
        {
            return;
        }
        let resolved = resolve(egress).await;
        let bridge = bridge.to_owned();
        let _ = tokio::task::spawn_blocking(move || guard.guard(&bridge, &resolved)).await;
    }

    /// Puts in force the rules of every network this agent made before (its
    /// containers may run on them already).
    pub(super) async fn guard_existing(&self) {
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_AGENT}={}", self.agent),
                format!("{LABEL_PREFIX}={}", self.prefix),
            ],
        )]);
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = match self.docker.list_networks(Some(options)).await {
            Ok(networks) => networks,
            Err(e) => {
                tracing::warn!(
                    "cannot list containers' networks to guard them: {}",
                    docker_message(&e)
                );
                return;
            }
        };
        for network in networks {
            let egress = network
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_EGRESS))
                .and_then(|key| Egress::from_key(key));
            let bridge = network.options.as_ref().and_then(|o| o.get(BRIDGE_NAME));
            match (egress, bridge) {
                (Some(egress), Some(bridge)) => self.guard_bridge(bridge, &egress).await,
                _ => {
                    tracing::warn!(network = ?network.name, "a containers' network without its policy or bridge label; not guarded")
                }
            }
        }
    }

    /// Moves `container` onto the bridge `target` where it is (running or not):
    /// connected there, then disconnected from every other network.
    pub(super) async fn reconnect(
        &self,
        id: &str,
        container: &ContainerInspectResponse,
        target: &Target,
    ) -> Result<(), BackendError> {
        let failed = |e: bollard::errors::Error| BackendError::Runtime {
            action: "moving the container to its network",
            message: docker_message(&e),
        };
        let Target::Bridge { name, .. } = target else {
            return Ok(());
        };
        self.known.forget(id);
        let current = networks(container);
        if !current.contains(name) {
            let connect = NetworkConnectRequest {
                container: id.to_owned(),
                endpoint_config: None,
            };
            self.docker
                .connect_network(name, connect)
                .await
                .map_err(failed)?;
        }
        for other in current.iter().filter(|n| *n != name) {
            let disconnect = NetworkDisconnectRequest {
                container: id.to_owned(),
                force: Some(true),
            };
            self.docker
                .disconnect_network(other, disconnect)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }
}

/// The policy with names resolved (IPv4 only: the networks are).
async fn resolve(egress: &Egress) -> BridgeEgress {
    let Egress::Allow(list) = egress else {
        return BridgeEgress::Internet;
    };
    let mut out = Vec::new();
    for Destination { host, port } in list {
        match host {
            Host::Net(net) => out.push((*net, *port)),
            Host::Name(name) => {
                match tokio::net::lookup_host((name.as_str(), port.unwrap_or(0))).await {
                    Ok(addrs) => out.extend(
                        addrs
                            .map(|a| a.ip().to_canonical())
                            .filter(|ip| ip.is_ipv4())
                            .map(|ip| (IpNet::from(ip), *port)),
                    ),
                    Err(e) => {
                        tracing::warn!(host = %name, "cannot resolve an egress allow-list name; it stays closed: {e}")
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    BridgeEgress::Only(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_named_by_policy() {
        let internet = Target::of("lab", "a1", &Egress::Internet);
        let Target::Bridge { name, bridge, .. } = &internet else {
            panic!("{internet:?}");
        };
        assert!(name.starts_with("lab-net-"), "{name}");
        assert!(
            bridge.len() <= 15 && bridge.starts_with(BRIDGE_PREFIX),
            "{bridge}"
        );
        assert_eq!(internet, Target::of("lab", "a1", &Egress::Internet));
        assert_ne!(internet, Target::of("lab", "a2", &Egress::Internet));
        assert_ne!(internet, Target::of("lab2", "a1", &Egress::Internet));
        let list = Egress::Allow(vec![Destination::parse("10.0.0.1:22").unwrap()]);
        assert_ne!(
            internet.network_mode(),
            Target::of("lab", "a1", &list).network_mode()
        );
        assert_eq!(Target::of("lab", "a1", &Egress::None), Target::Loopback);
        assert_eq!(Target::Loopback.network_mode(), "none");
        // The name never changes between releases: containers would all move.
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
