//! Address blocks as every role's configuration writes them: `10.0.0.0/8`,
//! `2001:db8::/32`, or a single address (`192.0.2.7`, meaning /32 or /128).

use std::net::IpAddr;

pub use ipnet::IpNet;

/// Parses an address or CIDR block; the error says what is wrong in an operator's terms.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let Some((addr, prefix)) = text.split_once('/') else {
        return text
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{text:?} is not an address or CIDR block"));
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} in a CIDR block is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    prefix
        .parse::<u8>()
        .ok()
        .and_then(|p| IpNet::new(addr, p).ok())
        .ok_or_else(|| format!("{text:?}: prefix length {prefix:?} must be 0 to {max}"))
}

/// Whether `addr` lies in `net`; IPv4-mapped IPv6 addresses count as the IPv4
/// address they are, on both sides.
pub fn contains(net: &IpNet, addr: IpAddr) -> bool {
    match (net, canonical(addr)) {
        (IpNet::V6(v6), IpAddr::V4(v4)) => match v6.addr().to_ipv4_mapped() {
            Some(mapped) if v6.prefix_len() >= 96 => {
                ipnet::Ipv4Net::new(mapped, v6.prefix_len() - 96).is_ok_and(|n| n.contains(&v4))
            }
            _ => false,
        },
        (net, addr) => net.contains(&addr),
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) as the IPv4 address they are.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_and_addresses() {
        assert_eq!(parse_net("10.0.0.0/8").unwrap().prefix_len(), 8);
        assert_eq!(parse_net("192.0.2.7").unwrap().prefix_len(), 32);
        assert_eq!(parse_net("2001:db8::/32").unwrap().prefix_len(), 32);
        assert!(parse_net("10.0.0.0/40")
            .unwrap_err()
            .contains("prefix length"));
        assert!(parse_net("nonsense")
            .unwrap_err()
            .contains("not an address"));
        assert!(parse_net("x/8").unwrap_err().contains("not an IP address"));
    }

    #[test]
    fn containment() {
        let n = parse_net("172.17.0.0/16").unwrap();
        assert!(contains(&n, ip("172.17.0.5")));
        assert!(contains(&n, ip("::ffff:172.17.0.5")), "mapped address");
        assert!(!contains(&n, ip("172.18.0.5")));
        assert!(contains(&parse_net("0.0.0.0/0").unwrap(), ip("1.2.3.4")));
        assert!(!contains(&parse_net("127.0.0.0/8").unwrap(), ip("::1")));
        let mapped = parse_net("::ffff:10.0.0.0/104").unwrap();
        assert!(contains(&mapped, ip("10.1.2.3")));
    }
}
