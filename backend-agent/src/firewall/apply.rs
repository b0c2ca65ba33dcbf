//! Rules put in force with iptables and ip6tables: installed, repaired after a
//! flush, removed at shutdown, and what a killed run left removed at start.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;

use super::bridge::bridge_rules;
use super::{rules, Family, Plan, Rule, CHAINS, COMMENT_PREFIX, DOCKER_USER, LOCK_WAIT_SECS};
use crate::backend::{BridgeEgress, NetworkGuard};

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

/// Rules in force.
#[derive(Default)]
struct Installed {
    /// The plan's own rules, each on its own.
    base: Vec<Rule>,
    /// Each containers' bridge's block, in order.
    bridges: BTreeMap<String, Vec<Rule>>,
}

/// Installed rules; removed by [`Firewall::remove`] or on drop.
pub struct Firewall {
    /// What was asked for.
    plan: Plan,
    /// Rules in force, None once removed (so repair adds nothing back).
    installed: Mutex<Option<Installed>>,
}

impl Firewall {
    /// Installs the rules of `plan`, first removing what an earlier run of
    /// this agent instance left. Failure is logged, not fatal: mTLS still
    /// guards the agent's and controller's ports.
    pub fn protect(plan: Plan) -> Firewall {
        remove_stale(&plan);
        let rules = rules(&plan, forward_chain);
        let mut base = Vec::new();
        for rule in rules {
            match iptables(rule.family, &rule.args("-I")) {
                Ok(_) => base.push(rule),
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
            rules = base.len(),
            "containers cannot reach these ports of this host nor these cluster networks"
        );
        Firewall {
            plan,
            installed: Mutex::new(Some(Installed {
                base,
                bridges: BTreeMap::new(),
            })),
        }
    }

    /// Re-adds rules that are gone (a firewall reload, an operator's flush);
    /// returns how many. A bridge's block missing any rule is put back whole,
    /// so its order holds.
    pub fn repair(&self) -> usize {
        let installed = self.installed.lock().expect("firewall lock");
        let Some(installed) = installed.as_ref() else {
            return 0;
        };
        let mut repaired = 0;
        for rule in &installed.base {
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
        for (bridge, block) in &installed.bridges {
            let missing = block
                .iter()
                .filter(|r| iptables(r.family, &r.args("-C")).is_err())
                .count();
            if missing > 0 {
                tracing::warn!(bridge = %bridge, missing, "container network rules were gone; put the block back");
                delete(block);
                insert_block(block);
                repaired += missing;
            }
        }
        repaired
    }

    /// Removes every rule; later repairs add none back.
    pub fn remove(&self) {
        let Some(installed) = self.installed.lock().expect("firewall lock").take() else {
            return;
        };
        delete(&installed.base);
        for block in installed.bridges.values() {
            delete(block);
        }
        tracing::info!(agent = %self.plan.instance, "container firewall rules removed");
    }
}

impl NetworkGuard for Firewall {
    fn guard(&self, bridge: &str, egress: &BridgeEgress) {
        let block = bridge_rules(&self.plan, bridge, egress, forward_chain);
        let mut installed = self.installed.lock().expect("firewall lock");
        let Some(installed) = installed.as_mut() else {
            return;
        };
        if installed.bridges.get(bridge) == Some(&block) {
            return;
        }
        if let Some(old) = installed.bridges.remove(bridge) {
            delete(&old);
        }
        let count = insert_block(&block);
        tracing::info!(
            bridge,
            ?egress,
            rules = count,
            "container network rules installed"
        );
        installed.bridges.insert(bridge.to_owned(), block);
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Inserts `block` at the top of its chains, keeping its order; returns how
/// many rules went in.
fn insert_block(block: &[Rule]) -> usize {
    let mut count = 0;
    for rule in block.iter().rev() {
        match iptables(rule.family, &rule.insert_first()) {
            Ok(_) => count += 1,
            Err(e) => tracing::warn!(
                tool = rule.family.program(),
                chain = %rule.chain,
                rule = %rule.spec.join(" "),
                "could not install a container network rule: {e}"
            ),
        }
    }
    count
}

/// Deletes each of `rules`; one that is gone already is no error.
fn delete(rules: &[Rule]) {
    for rule in rules {
        if let Err(e) = iptables(rule.family, &rule.args("-D")) {
            tracing::debug!("could not remove firewall rule (gone already?): {e}");
        }
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
