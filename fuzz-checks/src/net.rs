//! What operators write about networks: forwarding allow-lists and address blocks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use labssh_proto::forwarding::{self, Rule};
use labssh_proto::net;

/// Addresses every parsed rule and block is asked about.
const PROBES: [IpAddr; 5] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
];

/// An allow-list entry is refused with a message, or becomes a rule that judges any
/// destination without panicking; a list of them parses entry by entry.
pub fn forwarding_rule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Rule::parse(text) {
        Ok(rule) => {
            for addr in PROBES {
                for port in [0, 22, 443, u16::MAX] {
                    let _ = rule.allows("host.example", addr, port);
                    let _ = rule.names("host.example", port);
                }
            }
            let _ = rule.is_wildcard_host();
        }
        Err(message) => assert!(!message.is_empty(), "{text:?} refused without a reason"),
    }
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let (rules, problems) = forwarding::parse_all(&lines);
    assert_eq!(rules.len() + problems.len(), lines.len());
}

/// An address block parses to a network that contains its own address (in canonical
/// form), or is refused with a message.
pub fn address_block(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match net::parse_net(text) {
        Ok(block) => {
            assert!(net::contains(&block, block.network()), "{text:?} → {block}");
            for addr in PROBES {
                let _ = net::contains(&block, addr);
            }
        }
        Err(message) => assert!(!message.is_empty(), "{text:?} refused without a reason"),
    }
}
