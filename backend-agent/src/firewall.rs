//! Keeps students' containers away from the cluster: this host's agent and
//! controller ports, and every cluster address (other nodes' agents, the
//! controller, Redis, the proxies), over IPv4 and IPv6.
//!
//! mTLS already makes the gRPC ports useless without a cluster certificate;
//! this makes them, and everything else the cluster runs, unreachable too.
//! Traffic from a container arrives on its bridge interface. Traffic to this
//! host, whatever address it dials, passes INPUT: there one rule per port
//! rejects the agent's and controller's ports, and one rule per cluster
//! network rejects everything to this host's cluster addresses. Traffic to
//! another machine is routed and passes FORWARD, where Docker's `DOCKER-USER`
//! chain is the supported place for such rules (Docker jumps to it before its
//! own accepts); without that chain (no Docker iptables for that family) the
//! rules go at the top of FORWARD.
//!
//! Every rule carries a comment naming this agent instance: its name and its
//! listen address. The next start of the same agent (same name, same port)
//! removes what a crashed run left, while agents that share a name on one
//! host (test labs all call theirs `agent0`) never touch each other's rules.
//! Rules are installed at start, checked and re-added if something flushed
//! them ([`Firewall::repair`]), and removed at shutdown.
//!
//! Containers live on bridges the agent creates, one per egress policy
//! ([`bridge::bridge_rules`]): each bridge gets a block of rules, in order,
//! keeping its containers off each other, off every address of this host but
//! what their policy allows, off link-local and the cluster's networks, and
//! inside their egress policy; over IPv6 nothing leaves them (their networks
//! are IPv4 only). A bridge's block is put in when the runtime first uses the
//! bridge ([`crate::backend::NetworkGuard`]) and repaired as a whole.
//!
//! The rule set is a pure function of the [`Plan`] ([`rules`], and per bridge
//! [`bridge::bridge_rules`]), so further policy is more entries there.

mod apply;
pub mod bridge;
pub mod setup;

use std::net::{IpAddr, SocketAddr};

use labssh_proto::net::IpNet;

pub use apply::Firewall;

/// Start of every rule's comment, so operators (and cleanup) can find them.
const COMMENT_PREFIX: &str = "labssh-agent";
/// Docker's chain for user rules on routed container traffic.
const DOCKER_USER: &str = "DOCKER-USER";
/// Chains rules may be in, searched for stale ones.
const CHAINS: [&str; 3] = ["INPUT", "FORWARD", DOCKER_USER];
/// Seconds iptables waits for the xtables lock others (Docker) hold.
const LOCK_WAIT_SECS: &str = "5";

/// IPv4 or IPv6, each with its own tool and tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    const ALL: [Family; 2] = [Family::V4, Family::V6];

    fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn holds(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
}

/// What to keep containers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Identifies this agent instance in rule comments: `NAME LISTEN`.
    pub instance: String,
    /// The interface containers' traffic arrives on.
    pub bridge: String,
    /// This host's ports to refuse (agent, controller, `firewall_ports`).
    pub ports: Vec<u16>,
    /// Cluster addresses and networks to refuse entirely, on this host and
    /// beyond it.
    pub networks: Vec<IpNet>,
    /// The host's DNS servers, which Docker's resolver inside each container
    /// forwards to: port 53 on them stays open to containers that have egress.
    pub resolvers: Vec<IpAddr>,
}

impl Plan {
    /// The plan of the agent `name` listening on `listen`.
    pub fn new(
        name: &str,
        listen: SocketAddr,
        bridge: &str,
        ports: &[u16],
        networks: &[IpNet],
    ) -> Plan {
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        let mut networks: Vec<IpNet> = networks.iter().map(IpNet::trunc).collect();
        networks.sort();
        networks.dedup();
        Plan {
            instance: format!("{name} {listen}"),
            bridge: bridge.to_string(),
            ports,
            networks,
            resolvers: Vec::new(),
        }
    }

    /// The plan with `resolvers` as the host's DNS servers.
    pub fn with_resolvers(mut self, resolvers: &[IpAddr]) -> Plan {
        self.resolvers = resolvers.to_vec();
        self.resolvers.sort();
        self.resolvers.dedup();
        self
    }

    pub(crate) fn comment(&self) -> String {
        format!("{COMMENT_PREFIX} {}", self.instance)
    }
}

/// One rule: where it goes and its match and target, comment included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Which tool and tables.
    pub family: Family,
    /// The chain, e.g. `INPUT`.
    pub chain: String,
    /// Everything after the chain name.
    pub spec: Vec<String>,
}

impl Rule {
    fn args(&self, action: &str) -> Vec<String> {
        let mut args = vec![action.to_string(), self.chain.clone()];
        args.extend(self.spec.iter().cloned());
        args
    }

    /// The arguments inserting the rule first in its chain.
    fn insert_first(&self) -> Vec<String> {
        let mut args = vec!["-I".to_string(), self.chain.clone(), "1".to_string()];
        args.extend(self.spec.iter().cloned());
        args
    }
}

/// A rule's end: the comment naming the agent instance and the target.
fn tail(comment: &str, target: &[&str]) -> Vec<String> {
    let mut spec = vec!["-m", "comment", "--comment", comment, "-j"];
    spec.extend(target);
    spec.into_iter().map(str::to_string).collect()
}

/// The rules for `plan`; `forward_chain` says where routed traffic's rules go
/// for each family.
pub fn rules(plan: &Plan, forward_chain: impl Fn(Family) -> String) -> Vec<Rule> {
    let comment = plan.comment();
    let tail = |target: &[&str]| tail(&comment, target);
    let from_bridge = |extra: &[String]| -> Vec<String> {
        let mut spec = vec!["-i".to_string(), plan.bridge.clone()];
        spec.extend(extra.iter().cloned());
        spec
    };
    let mut out = Vec::new();
    for family in Family::ALL {
        for port in &plan.ports {
            let mut spec = from_bridge(&[
                "-p".into(),
                "tcp".into(),
                "--dport".into(),
                port.to_string(),
            ]);
            spec.extend(tail(&["REJECT", "--reject-with", "tcp-reset"]));
            out.push(Rule {
                family,
                chain: "INPUT".into(),
                spec,
            });
        }
        let forward = forward_chain(family);
        for net in plan.networks.iter().filter(|n| family.holds(n)) {
            // REJECT's default (ICMP port unreachable) fails a TCP connect at
            // once and covers UDP and the rest too.
            let mut spec = from_bridge(&["-d".into(), net.to_string()]);
            spec.extend(tail(&["REJECT"]));
            for chain in ["INPUT".to_string(), forward.clone()] {
                out.push(Rule {
                    family,
                    chain,
                    spec: spec.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        labssh_proto::net::parse_net(s).unwrap()
    }

    #[test]
    fn rules_per_family_and_hook() {
        let plan = Plan::new(
            "node1",
            "0.0.0.0:7001".parse().unwrap(),
            "docker0",
            &[7001, 7000, 7001],
            &[net("10.0.0.0/24"), net("fd00:1::/64"), net("10.0.0.7/24")],
        );
        assert_eq!(plan.ports, [7000, 7001]);
        assert_eq!(plan.networks, [net("10.0.0.0/24"), net("fd00:1::/64")]);
        let rules = rules(&plan, |f| match f {
            Family::V4 => DOCKER_USER.into(),
            Family::V6 => "FORWARD".into(),
        });
        let find = |family: Family, chain: &str| {
            rules
                .iter()
                .filter(|r| r.family == family && r.chain == chain)
                .map(|r| r.spec.join(" "))
                .collect::<Vec<_>>()
        };
        let comment = "-m comment --comment labssh-agent node1 0.0.0.0:7001";
        for family in Family::ALL {
            let input = find(family, "INPUT");
            assert!(input.contains(&format!(
                "-i docker0 -p tcp --dport 7001 {comment} -j REJECT --reject-with tcp-reset"
            )));
        }
        assert!(find(Family::V4, "INPUT")
            .contains(&format!("-i docker0 -d 10.0.0.0/24 {comment} -j REJECT")));
        assert_eq!(
            find(Family::V4, DOCKER_USER),
            [format!("-i docker0 -d 10.0.0.0/24 {comment} -j REJECT")]
        );
        assert_eq!(
            find(Family::V6, "FORWARD"),
            [format!("-i docker0 -d fd00:1::/64 {comment} -j REJECT")]
        );
        // 2 port rules and 1 network in INPUT and forward, per family.
        assert_eq!(rules.len(), 2 * (2 + 2));
    }
}
