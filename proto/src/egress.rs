//! Egress policies: where an environment's containers may open connections,
//! shared by the controller (which validates the catalogue) and the agents
//! (which put containers on a network with these rules).
//!
//! `internet` (the default) is anything outside the private ranges; `none` is
//! loopback only; an allow-list is `HOST:PORT`, `IP:PORT` or a CIDR block (all
//! ports). Containers' networks are IPv4 only, so destinations are IPv4; a host
//! name is resolved by the agent when it installs the rules.

use std::fmt;
use std::net::IpAddr;

use crate::forwarding::is_host_name;
use crate::net::{parse_net, IpNet};
use crate::pb;

/// The `egress` value of the default policy.
pub const INTERNET: &str = "internet";
/// The `egress` value of exam mode.
pub const NONE: &str = "none";
/// The `egress` value of an allow-list (the entries in `allow`).
pub const ALLOW: &str = "allow";

/// Where a container's traffic may go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Egress {
    /// Anything outside the private, shared, link-local and loopback ranges.
    Internet,
    /// Nothing: the container has loopback only.
    None,
    /// Only these destinations.
    Allow(Vec<Destination>),
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Where to.
    pub host: Host,
    /// One TCP or UDP port; `None` is every port and protocol.
    pub port: Option<u16>,
}

/// The host part of a [`Destination`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 address or block.
    Net(IpNet),
    /// A name, lower case, resolved by the agent.
    Name(String),
}

impl Destination {
    /// Parses `HOST:PORT`, `IP:PORT`, `CIDR[:PORT]` or a bare address; the error
    /// says what is wrong in an operator's terms.
    pub fn parse(text: &str) -> Result<Destination, String> {
        let text = text.trim();
        let example = "e.g. \"licence.example.edu:27000\", \"192.0.2.7:443\" or \"10.5.0.0/16\"";
        if text.is_empty() {
            return Err(format!("an entry is empty ({example})"));
        }
        if let Ok(net) = parse_net(text) {
            return Destination::net(text, net, None);
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!(
                "{text:?} needs a port (HOST:PORT) or must be an address or CIDR block ({example})"
            ));
        };
        if host.contains(':') || host.starts_with('[') {
            return Err(format!(
                "{text:?}: IPv6 destinations are not supported (containers' networks are IPv4 only)"
            ));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(format!(
                    "{text:?}: port {port:?} must be a number from 1 to 65535"
                ))
            }
        };
        if host.contains('/') || host.parse::<IpAddr>().is_ok() {
            let net = parse_net(host).map_err(|e| format!("{text:?}: {e}"))?;
            return Destination::net(text, net, Some(port));
        }
        if !is_host_name(host) {
            return Err(format!(
                "{text:?}: {host:?} is not a host name, IPv4 address or CIDR block"
            ));
        }
        Ok(Destination {
            host: Host::Name(host.to_ascii_lowercase()),
            port: Some(port),
        })
    }

    fn net(text: &str, net: IpNet, port: Option<u16>) -> Result<Destination, String> {
        match net {
            IpNet::V4(_) => Ok(Destination {
                host: Host::Net(net.trunc()),
                port,
            }),
            IpNet::V6(_) => Err(format!(
                "{text:?}: IPv6 destinations are not supported (containers' networks are IPv4 only)"
            )),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.port) {
            (Host::Net(net), None) => write!(f, "{net}"),
            (Host::Net(net), Some(port)) if net.prefix_len() == 32 => {
                write!(f, "{}:{port}", net.addr())
            }
            (Host::Net(net), Some(port)) => write!(f, "{net}:{port}"),
            (Host::Name(name), Some(port)) => write!(f, "{name}:{port}"),
            (Host::Name(name), None) => write!(f, "{name}"),
        }
    }
}

impl Egress {
    /// Parses the wire form; `None` (an older controller) is the default.
    pub fn from_pb(policy: Option<&pb::NetworkPolicy>) -> Result<Egress, String> {
        let Some(policy) = policy else {
            return Ok(Egress::Internet);
        };
        match policy.egress.as_str() {
            "" | INTERNET => Ok(Egress::Internet),
            NONE => Ok(Egress::None),
            ALLOW => Ok(Egress::Allow(
                parse_allow(&policy.allow).map_err(|problems| problems.join("; "))?,
            )),
            other => Err(format!(
                "egress {other:?} must be \"internet\", \"none\" or a list of destinations"
            )),
        }
    }

    /// The wire form.
    pub fn to_pb(&self) -> pb::NetworkPolicy {
        let (egress, allow) = match self {
            Egress::Internet => (INTERNET, Vec::new()),
            Egress::None => (NONE, Vec::new()),
            Egress::Allow(list) => (ALLOW, list.iter().map(ToString::to_string).collect()),
        };
        pb::NetworkPolicy {
            egress: egress.to_owned(),
            allow,
        }
    }

    /// One line naming the policy exactly (`internet`, `none`, `allow:A,B`): the
    /// same policy always gives the same key, so it can name a network.
    pub fn key(&self) -> String {
        match self {
            Egress::Internet => INTERNET.to_owned(),
            Egress::None => NONE.to_owned(),
            Egress::Allow(list) => {
                let mut entries: Vec<String> = list.iter().map(ToString::to_string).collect();
                entries.sort();
                entries.dedup();
                format!("{ALLOW}:{}", entries.join(","))
            }
        }
    }

    /// The policy [`Egress::key`] names, if it is one.
    pub fn from_key(key: &str) -> Option<Egress> {
        match key {
            INTERNET => Some(Egress::Internet),
            NONE => Some(Egress::None),
            _ => {
                let list = key.strip_prefix(ALLOW)?.strip_prefix(':')?;
                let entries: Vec<String> = list
                    .split(',')
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect();
                parse_allow(&entries).ok().map(Egress::Allow)
            }
        }
    }
}

/// Every entry parsed, or every entry's problem.
pub fn parse_allow(entries: &[String]) -> Result<Vec<Destination>, Vec<String>> {
    let (good, bad): (Vec<_>, Vec<_>) = entries
        .iter()
        .map(|e| Destination::parse(e))
        .partition(Result::is_ok);
    if bad.is_empty() {
        Ok(good.into_iter().map(Result::unwrap).collect())
    } else {
        Err(bad.into_iter().filter_map(Result::err).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(s: &str) -> Destination {
        Destination::parse(s).unwrap()
    }

    #[test]
    fn destinations() {
        assert_eq!(
            dest("licence.example.edu:27000").to_string(),
            "licence.example.edu:27000"
        );
        assert_eq!(
            dest("Licence.Example.EDU:27000").to_string(),
            "licence.example.edu:27000"
        );
        assert_eq!(dest("10.5.0.0/16").to_string(), "10.5.0.0/16");
        assert_eq!(dest("10.5.1.2/16").to_string(), "10.5.0.0/16");
        assert_eq!(dest("192.0.2.7:443").to_string(), "192.0.2.7:443");
        assert_eq!(dest("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(dest("10.0.0.0/8:53").to_string(), "10.0.0.0/8:53");
        for (bad, why) in [
            ("", "empty"),
            ("licence.example.edu", "needs a port"),
            ("host:0", "from 1 to 65535"),
            ("host:99999", "from 1 to 65535"),
            ("host:*", "from 1 to 65535"),
            ("[2001:db8::1]:443", "IPv6"),
            ("2001:db8::/32", "IPv6"),
            ("bad host:22", "not a host name"),
            ("10.0.0.0/40:22", "prefix length"),
        ] {
            let e = Destination::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn keys_name_policies() {
        let a = Egress::Allow(vec![dest("192.0.2.7:443"), dest("10.5.0.0/16")]);
        let b = Egress::Allow(vec![dest("10.5.0.0/16"), dest("192.0.2.7:443")]);
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key(), "allow:10.5.0.0/16,192.0.2.7:443");
        assert_eq!(Egress::from_key(&a.key()).unwrap().key(), a.key());
        assert_eq!(Egress::from_key("internet"), Some(Egress::Internet));
        assert_eq!(Egress::from_key("none"), Some(Egress::None));
        assert_eq!(Egress::from_key("allow:"), Some(Egress::Allow(vec![])));
        assert_eq!(Egress::from_key("bogus"), None);
        for egress in [Egress::Internet, Egress::None, a] {
            assert_eq!(Egress::from_pb(Some(&egress.to_pb())).unwrap(), egress);
        }
        assert_eq!(Egress::from_pb(None).unwrap(), Egress::Internet);
        let bad = pb::NetworkPolicy {
            egress: "open".into(),
            allow: vec![],
        };
        assert!(Egress::from_pb(Some(&bad))
            .unwrap_err()
            .contains("\"open\""));
    }
}
