//! The block of rules of one containers' bridge: a pure function of the plan,
//! the bridge and its egress policy, in the order the rules must be in (the
//! first that matches decides).
//!
//! INPUT (this host, whatever address is dialled): the agent's and cluster's
//! ports and networks refused, then what the policy allows (the host's DNS
//! servers on port 53, allow-list entries), then every new connection refused.
//! Docker's embedded DNS lives in the container's own namespace and needs
//! nothing here.
//!
//! Forwarded (Docker's `DOCKER-USER`): the cluster's networks refused, then
//! other containers on the same bridge (Docker's `enable_icc=false` drops
//! them too, these make it hold whatever Docker's chains say), then the DNS
//! servers allowed, then either the private, shared, link-local and loopback
//! ranges refused (`internet`) or the allow-list accepted and everything else
//! refused.
//!
//! IPv6: containers' networks are IPv4 only, so nothing from the bridge passes,
//! link-local `fe80::` between containers on it included (bridged frames pass
//! ip6tables with `bridge-nf-call-ip6tables`, which Docker turns on).

use super::{tail, Family, Plan, Rule};
use crate::backend::BridgeEgress;

/// Where `internet` egress never goes: private (RFC 1918), shared (RFC 6598),
/// link-local, loopback and "this network".
pub const NOT_INTERNET_V4: [&str; 7] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "127.0.0.0/8",
    "0.0.0.0/8",
];

/// The rules of `bridge` for `egress`, in order; `forward_chain` says where
/// routed traffic's rules go for each family.
pub fn bridge_rules(
    plan: &Plan,
    bridge: &str,
    egress: &BridgeEgress,
    forward_chain: impl Fn(Family) -> String,
) -> Vec<Rule> {
    let comment = plan.comment();
    let rule = |family: Family, chain: &str, matches: &[&str], target: &[&str]| {
        let mut spec: Vec<String> = ["-i", bridge]
            .iter()
            .chain(matches)
            .map(|s| s.to_string())
            .collect();
        spec.extend(tail(&comment, target));
        Rule {
            family,
            chain: chain.to_owned(),
            spec,
        }
    };
    let reject = ["REJECT"];
    let accept = ["ACCEPT"];
    let v4 = Family::V4;
    let input = "INPUT";
    let forward = forward_chain(v4);
    let networks: Vec<String> = plan
        .networks
        .iter()
        .filter(|n| v4.holds(n))
        .map(ToString::to_string)
        .collect();
    let resolvers: Vec<String> = plan
        .resolvers
        .iter()
        .filter(|ip| ip.is_ipv4())
        .map(ToString::to_string)
        .collect();
    let mut allowed: Vec<(String, Option<String>)> = resolvers
        .iter()
        .map(|ip| (ip.clone(), Some("53".to_owned())))
        .collect();
    if let BridgeEgress::Only(list) = egress {
        allowed.extend(
            list.iter()
                .filter(|(net, _)| v4.holds(net))
                .map(|(net, port)| (net.to_string(), port.map(|p| p.to_string()))),
        );
    }
    let accepts = |chain: &str| -> Vec<Rule> {
        allowed
            .iter()
            .flat_map(|(dest, port)| match port {
                None => vec![rule(v4, chain, &["-d", dest], &accept)],
                Some(port) => ["tcp", "udp"]
                    .map(|proto| {
                        rule(
                            v4,
                            chain,
                            &["-d", dest, "-p", proto, "--dport", port],
                            &accept,
                        )
                    })
                    .to_vec(),
            })
            .collect()
    };

    let mut out = Vec::new();
    // This host.
    for port in &plan.ports {
        let port = port.to_string();
        out.push(rule(
            v4,
            input,
            &["-p", "tcp", "--dport", &port],
            &["REJECT", "--reject-with", "tcp-reset"],
        ));
    }
    for net in &networks {
        out.push(rule(v4, input, &["-d", net], &reject));
    }
    out.extend(accepts(input));
    out.push(rule(
        v4,
        input,
        &["-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED"],
        &reject,
    ));
    // Beyond it.
    for net in &networks {
        out.push(rule(v4, &forward, &["-d", net], &reject));
    }
    out.push(rule(v4, &forward, &["-o", bridge], &reject));
    match egress {
        BridgeEgress::Internet => {
            out.extend(resolvers.iter().flat_map(|ip| {
                ["tcp", "udp"].map(|proto| {
                    rule(
                        v4,
                        &forward,
                        &["-d", ip, "-p", proto, "--dport", "53"],
                        &accept,
                    )
                })
            }));
            for net in NOT_INTERNET_V4 {
                out.push(rule(v4, &forward, &["-d", net], &reject));
            }
        }
        BridgeEgress::Only(_) => {
            out.extend(accepts(&forward));
            out.push(rule(v4, &forward, &[], &reject));
        }
    }
    // No IPv6 at all.
    let v6 = Family::V6;
    out.push(rule(v6, input, &[], &reject));
    out.push(rule(v6, &forward_chain(v6), &[], &reject));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::DOCKER_USER;
    use labssh_proto::net::parse_net;

    fn plan() -> Plan {
        Plan::new(
            "node1",
            "0.0.0.0:7001".parse().unwrap(),
            "docker0",
            &[7001],
            &[
                parse_net("10.0.0.0/24").unwrap(),
                parse_net("fd00:1::/64").unwrap(),
            ],
        )
        .with_resolvers(&["10.255.255.53".parse().unwrap(), "::1".parse().unwrap()])
    }

    /// The block as `CHAIN SPEC` lines without the comment, per family.
    fn lines(rules: &[Rule], family: Family) -> Vec<String> {
        let comment = "-m comment --comment labssh-agent node1 0.0.0.0:7001 ";
        rules
            .iter()
            .filter(|r| r.family == family)
            .map(|r| format!("{} {}", r.chain, r.spec.join(" ")).replace(comment, ""))
            .collect()
    }

    fn chains(f: Family) -> String {
        match f {
            Family::V4 => DOCKER_USER.into(),
            Family::V6 => "FORWARD".into(),
        }
    }

    #[test]
    fn internet_egress_block_in_order() {
        let rules = bridge_rules(&plan(), "lshabc", &BridgeEgress::Internet, chains);
        let v4 = lines(&rules, Family::V4);
        let expected_start = [
            "INPUT -i lshabc -p tcp --dport 7001 -j REJECT --reject-with tcp-reset",
            "INPUT -i lshabc -d 10.0.0.0/24 -j REJECT",
            "INPUT -i lshabc -d 10.255.255.53 -p tcp --dport 53 -j ACCEPT",
            "INPUT -i lshabc -d 10.255.255.53 -p udp --dport 53 -j ACCEPT",
            "INPUT -i lshabc -m conntrack ! --ctstate ESTABLISHED,RELATED -j REJECT",
            "DOCKER-USER -i lshabc -d 10.0.0.0/24 -j REJECT",
            "DOCKER-USER -i lshabc -o lshabc -j REJECT",
            "DOCKER-USER -i lshabc -d 10.255.255.53 -p tcp --dport 53 -j ACCEPT",
            "DOCKER-USER -i lshabc -d 10.255.255.53 -p udp --dport 53 -j ACCEPT",
        ];
        assert_eq!(v4[..expected_start.len()], expected_start);
        let rest = &v4[expected_start.len()..];
        assert_eq!(rest.len(), NOT_INTERNET_V4.len());
        assert!(rest.contains(&"DOCKER-USER -i lshabc -d 169.254.0.0/16 -j REJECT".to_owned()));
        assert!(rest.iter().all(|r| r.ends_with("-j REJECT")), "{rest:?}");
        assert_eq!(
            lines(&rules, Family::V6),
            ["INPUT -i lshabc -j REJECT", "FORWARD -i lshabc -j REJECT"]
        );
    }

    #[test]
    fn allow_list_accepts_then_refuses_everything() {
        let egress = BridgeEgress::Only(vec![
            (parse_net("192.0.2.7").unwrap(), Some(443)),
            (parse_net("10.5.0.0/16").unwrap(), None),
        ]);
        let rules = bridge_rules(&plan(), "lshabc", &egress, chains);
        let v4 = lines(&rules, Family::V4);
        let forward: Vec<&String> = v4.iter().filter(|r| r.starts_with("DOCKER-USER")).collect();
        assert_eq!(
            forward,
            [
                "DOCKER-USER -i lshabc -d 10.0.0.0/24 -j REJECT",
                "DOCKER-USER -i lshabc -o lshabc -j REJECT",
                "DOCKER-USER -i lshabc -d 10.255.255.53 -p tcp --dport 53 -j ACCEPT",
                "DOCKER-USER -i lshabc -d 10.255.255.53 -p udp --dport 53 -j ACCEPT",
                "DOCKER-USER -i lshabc -d 192.0.2.7/32 -p tcp --dport 443 -j ACCEPT",
                "DOCKER-USER -i lshabc -d 192.0.2.7/32 -p udp --dport 443 -j ACCEPT",
                "DOCKER-USER -i lshabc -d 10.5.0.0/16 -j ACCEPT",
                "DOCKER-USER -i lshabc -j REJECT",
            ]
        );
        // The host's own addresses on the list are reachable too, after the
        // cluster's refusals and before the final one.
        let input: Vec<&String> = v4.iter().filter(|r| r.starts_with("INPUT")).collect();
        let at = |needle: &str| input.iter().position(|r| r.contains(needle)).unwrap();
        assert!(at("--dport 7001") < at("-d 192.0.2.7/32 -p tcp"));
        assert!(at("-d 10.0.0.0/24") < at("-d 10.5.0.0/16 -j ACCEPT"));
        assert!(input
            .last()
            .unwrap()
            .contains("! --ctstate ESTABLISHED,RELATED -j REJECT"));
    }
}
