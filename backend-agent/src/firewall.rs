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
//! The rule set is a pure function of the [`Plan`] ([`rules`]), so further
//! policy (container-to-container isolation, egress) is more entries there.

pub mod setup;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;

use labssh_proto::net::IpNet;

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
        }
    }

    fn comment(&self) -> String {
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
}

/// The rules for `plan`; `forward_chain` says where routed traffic's rules go
/// for each family.
pub fn rules(plan: &Plan, forward_chain: impl Fn(Family) -> String) -> Vec<Rule> {
    let comment = plan.comment();
    let tail = |target: &[&str]| -> Vec<String> {
        let mut spec = vec!["-m", "comment", "--comment", comment.as_str(), "-j"];
        spec.extend(target);
        spec.into_iter().map(str::to_string).collect()
    };
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

fn iptables(family: Family, args: &[String]) -> Result<String, String> {
    let out = Command::new(family.program())
        .args(["-w", LOCK_WAIT_SECS])
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", family.program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Where routed traffic's rules go: Docker's `DOCKER-USER` when it exists.
fn forward_chain(family: Family) -> String {
    match iptables(family, &["-S".into(), DOCKER_USER.into()]) {
        Ok(_) => DOCKER_USER.into(),
        Err(_) => "FORWARD".into(),
    }
}

/// Installed rules; removed by [`Firewall::remove`] or on drop.
pub struct Firewall {
    /// What was asked for.
    plan: Plan,
    /// Rules in force, None once removed (so repair adds nothing back).
    installed: Mutex<Option<Vec<Rule>>>,
}

impl Firewall {
    /// Installs the rules of `plan`, first removing what an earlier run of
    /// this agent instance left. Failure is logged, not fatal: mTLS still
    /// guards the agent's and controller's ports.
    pub fn protect(plan: Plan) -> Firewall {
        remove_stale(&plan);
        let rules = rules(&plan, forward_chain);
        let mut installed = Vec::new();
        for rule in rules {
            match iptables(rule.family, &rule.args("-I")) {
                Ok(_) => installed.push(rule),
                Err(e) => tracing::warn!(
                    tool = rule.family.program(),
                    chain = %rule.chain,
                    rule = %rule.spec.join(" "),
                    "could not install a container firewall rule (mTLS still guards the agent and controller): {e}"
                ),
            }
        }
        tracing::info!(
            bridge = %plan.bridge,
            ports = ?plan.ports,
            networks = ?plan.networks.iter().map(ToString::to_string).collect::<Vec<_>>(),
            rules = installed.len(),
            "containers cannot reach these ports of this host nor these cluster networks"
        );
        Firewall {
            plan,
            installed: Mutex::new(Some(installed)),
        }
    }

    /// Re-adds rules that are gone (a firewall reload, an operator's flush);
    /// returns how many.
    pub fn repair(&self) -> usize {
        let installed = self.installed.lock().expect("firewall lock");
        let Some(rules) = installed.as_ref() else {
            return 0;
        };
        let mut repaired = 0;
        for rule in rules {
            if iptables(rule.family, &rule.args("-C")).is_ok() {
                continue;
            }
            match iptables(rule.family, &rule.args("-I")) {
                Ok(_) => {
                    repaired += 1;
                    tracing::warn!(tool = rule.family.program(), chain = %rule.chain, rule = %rule.spec.join(" "), "a container firewall rule was gone; put it back");
                }
                Err(e) => tracing::warn!("could not put back a container firewall rule: {e}"),
            }
        }
        repaired
    }

    /// Removes every rule; later repairs add none back.
    pub fn remove(&self) {
        let Some(rules) = self.installed.lock().expect("firewall lock").take() else {
            return;
        };
        for rule in rules {
            if let Err(e) = iptables(rule.family, &rule.args("-D")) {
                tracing::warn!("could not remove firewall rule: {e}");
            }
        }
        tracing::info!(agent = %self.plan.instance, "container firewall rules removed");
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes rules an earlier run of this agent instance left behind (it was
/// killed before it could clean up), so they never pile up; also those of
/// the releases whose comment named only the agent (`labssh-agent NAME`).
fn remove_stale(plan: &Plan) {
    let ours = plan.comment();
    let legacy = format!(
        "{COMMENT_PREFIX} {}",
        plan.instance.split(' ').next().unwrap_or("")
    );
    for family in Family::ALL {
        for chain in CHAINS {
            let Ok(listing) = iptables(family, &["-S".into(), chain.into()]) else {
                continue;
            };
            for line in listing.lines() {
                let Some(args) = stale_rule(line, &ours).or_else(|| {
                    (family == Family::V4 && chain == "INPUT")
                        .then(|| stale_rule(line, &legacy))
                        .flatten()
                }) else {
                    continue;
                };
                match iptables(family, &args) {
                    Ok(_) => {
                        tracing::info!("removed a firewall rule left by an earlier run: {line}")
                    }
                    Err(e) => tracing::warn!("could not remove stale firewall rule {line:?}: {e}"),
                }
            }
        }
    }
}

/// The `-D` arguments deleting the rule `line` of `iptables -S`, if its
/// comment is exactly `comment`.
fn stale_rule(line: &str, comment: &str) -> Option<Vec<String>> {
    let rule = line.strip_prefix("-A ")?;
    // `iptables -S` quotes a comment with spaces; split it back into one argument.
    let marker = format!("--comment \"{comment}\"");
    let (before, after) = rule.split_once(&marker)?;
    if !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    let mut args = vec!["-D".to_string()];
    args.extend(before.split_whitespace().map(str::to_string));
    args.push("--comment".into());
    args.push(comment.to_string());
    args.extend(after.split_whitespace().map(str::to_string));
    Some(args)
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

    #[test]
    fn stale_rules_are_this_instances_only() {
        let line = "-A INPUT -i docker0 -p tcp -m tcp --dport 9 -m comment --comment \"labssh-agent a 0.0.0.0:7001\" -j REJECT --reject-with tcp-reset";
        let args = stale_rule(line, "labssh-agent a 0.0.0.0:7001").unwrap();
        assert_eq!(args[0], "-D");
        assert!(args.contains(&"labssh-agent a 0.0.0.0:7001".to_string()));
        assert_eq!(args.last().unwrap(), "tcp-reset");
        assert!(stale_rule(line, "labssh-agent a 0.0.0.0:700").is_none());
        assert!(stale_rule(line, "labssh-agent a").is_none());
        assert!(stale_rule(line, "labssh-agent b 0.0.0.0:7001").is_none());
        let legacy = "-A INPUT -i docker0 -p tcp -m tcp --dport 9 -m comment --comment \"labssh-agent a\" -j REJECT";
        assert!(stale_rule(legacy, "labssh-agent a").is_some());
    }
}
