//! The pod's own NetworkPolicy: nothing in, and out only what its environment's
//! egress policy allows (`proto/src/egress.rs`), as Docker's bridge rules
//! (`firewall/bridge.rs`) do.
//!
//! Ingress: none. The agent reaches labssh-init through its socket in the pod's
//! filesystem (by `/proc/PID/root`), and `ssh -R` listeners hand their connections
//! over that socket too, so no network path into a student's pod is needed by anyone.
//!
//! Egress, IPv4 only (Docker's networks are IPv4 only; a policy with `Egress` in its
//! types refuses what it does not allow, IPv6 included):
//! - `internet`: `0.0.0.0/0` except the private, shared, link-local, loopback and
//!   "this network" ranges and the cluster's own networks (`cluster_cidrs`);
//! - an allow-list: its blocks and (resolved) names, on their port over TCP and UDP
//!   or on every port, never reaching into the cluster's networks or link-local;
//! - `none`: nothing at all.
//!
//! Whenever egress is allowed, DNS (port 53, UDP and TCP) to the cluster's DNS pods
//! (`k8s-app: kube-dns` in `kube-system`) is too: a pod resolves through the
//! cluster's resolver, which the `cluster_cidrs` exception would refuse otherwise.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use labssh_proto::egress::{Destination, Egress, Host};
use labssh_proto::net::{parse_net, IpNet};

use super::names::pod_name;
use super::{annotations, labels, PodPlan, LABEL_MANAGED_BY};
use crate::backend::docker::{LABEL_AGENT, LABEL_ENV, LABEL_PREFIX, LABEL_USER};
use crate::firewall::bridge::NOT_INTERNET_V4;

/// Link-local: cloud metadata services (169.254.169.254) and neighbours.
pub const LINK_LOCAL: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];
/// The cluster's DNS pods, by the label every distribution gives them.
const DNS_NAMESPACE: &str = "kube-system";
/// The label naming a namespace (set by the API server on every namespace).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// CoreDNS's and kube-dns's pod label.
const DNS_POD_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
/// DNS.
const DNS_PORT: i32 = 53;

/// The pod's NetworkPolicy, allow-list names unresolved (closed, as on Docker when a
/// name does not resolve): [`network_policy_resolved`] with nothing resolved.
pub fn network_policy(plan: &PodPlan) -> NetworkPolicy {
    network_policy_resolved(plan, &HashMap::new())
}

/// The host names of `env`'s allow-list, for the caller to resolve before
/// [`network_policy_resolved`].
pub fn allow_names(env: &labssh_proto::pb::Environment) -> Vec<String> {
    match Egress::from_pb(env.network.as_ref()) {
        Ok(Egress::Allow(list)) => list
            .into_iter()
            .filter_map(|d| match d.host {
                Host::Name(name) => Some(name),
                Host::Net(_) => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The pod's NetworkPolicy, with `resolved` giving the addresses of the allow-list's
/// names (only IPv4 ones are used). An egress policy that does not parse (the
/// controller checks them; `objects::pod` refuses it) allows nothing.
pub fn network_policy_resolved(
    plan: &PodPlan,
    resolved: &HashMap<String, Vec<IpAddr>>,
) -> NetworkPolicy {
    let egress = Egress::from_pb(plan.env.network.as_ref()).unwrap_or(Egress::None);
    let mut never: Vec<IpNet> = LINK_LOCAL
        .iter()
        .filter_map(|n| parse_net(n).ok())
        .collect();
    never.extend(
        plan.config
            .cluster_cidrs
            .iter()
            .filter_map(|c| parse_net(c).ok())
            .map(|n| n.trunc()),
    );
    let rules = match &egress {
        Egress::None => Vec::new(),
        Egress::Internet => {
            let mut not_internet = never.clone();
            not_internet.extend(NOT_INTERNET_V4.iter().filter_map(|n| parse_net(n).ok()));
            let any = IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0).ok();
            let mut rules = vec![dns_rule()];
            rules.extend(
                any.and_then(|any| block(any, &not_internet))
                    .map(|b| rule(b, None)),
            );
            rules
        }
        Egress::Allow(list) => {
            let mut rules = vec![dns_rule()];
            for Destination { host, port } in list {
                let nets: Vec<IpNet> = match host {
                    Host::Net(net) => vec![*net],
                    Host::Name(name) => resolved
                        .get(name)
                        .into_iter()
                        .flatten()
                        .map(|ip| labssh_proto::net::canonical(*ip))
                        .filter(IpAddr::is_ipv4)
                        .map(IpNet::from)
                        .collect(),
                };
                rules.extend(
                    nets.into_iter()
                        .filter_map(|net| block(net, &never))
                        .map(|b| rule(b, *port)),
                );
            }
            rules
        }
    };
    let mut selector = BTreeMap::new();
    let own = labels(plan);
    for key in [
        LABEL_MANAGED_BY,
        LABEL_AGENT,
        LABEL_PREFIX,
        LABEL_USER,
        LABEL_ENV,
    ] {
        if let Some(value) = own.get(key) {
            selector.insert(key.to_owned(), value.clone());
        }
    }
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(pod_name(plan.prefix, plan.user, &plan.env.name)),
            namespace: Some(plan.config.namespace.clone()),
            labels: Some(own),
            annotations: Some(annotations(
                plan.agent,
                plan.prefix,
                plan.user,
                Some(&plan.env.name),
            )),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: None,
            egress: Some(rules),
        }),
    }
}

/// `net` as an ipBlock with every `never` block inside it excepted; `None` when `net`
/// lies inside one of them (nothing of it may be reached).
fn block(net: IpNet, never: &[IpNet]) -> Option<IPBlock> {
    let same_family = |n: &&IpNet| n.addr().is_ipv4() == net.addr().is_ipv4();
    if never.iter().filter(same_family).any(|n| n.contains(&net)) {
        return None;
    }
    let mut except: Vec<String> = never
        .iter()
        .filter(same_family)
        .filter(|n| net.contains(*n))
        .map(ToString::to_string)
        .collect();
    except.sort();
    except.dedup();
    Some(IPBlock {
        cidr: net.to_string(),
        except: (!except.is_empty()).then_some(except),
    })
}

/// Egress to `block`, on `port` over TCP and UDP or on every port.
fn rule(block: IPBlock, port: Option<u16>) -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(block),
            ..Default::default()
        }]),
        ports: port.map(|p| ports(i32::from(p))),
    }
}

/// `port` over TCP and UDP.
fn ports(port: i32) -> Vec<NetworkPolicyPort> {
    ["UDP", "TCP"]
        .map(|protocol| NetworkPolicyPort {
            port: Some(IntOrString::Int(port)),
            protocol: Some(protocol.to_owned()),
            end_port: None,
        })
        .to_vec()
}

/// DNS to the cluster's DNS pods.
fn dns_rule() -> NetworkPolicyEgressRule {
    let labels = |k: &str, v: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_owned(), v.to_owned())])),
        match_expressions: None,
    };
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(labels(NAMESPACE_NAME_LABEL, DNS_NAMESPACE)),
            pod_selector: Some(labels(DNS_POD_LABEL.0, DNS_POD_LABEL.1)),
            ip_block: None,
        }]),
        ports: Some(ports(DNS_PORT)),
    }
}
