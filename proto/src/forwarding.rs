//! Port-forwarding allow-list rules, shared by the controller (which validates the
//! catalogue) and the agents (which enforce it).
//!
//! A rule is `HOST:PORT`: HOST is a name (`db.example.org`, matched case-insensitively
//! against what the student asked for), an address, a CIDR block (`10.1.0.0/16`,
//! `[2001:db8::/32]`) or `*`; PORT is a number, a range `A-B` or `*`.

use std::net::IpAddr;

use crate::net::{contains, parse_net, IpNet};

/// One parsed allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    host: HostPattern,
    ports: (u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Name(String),
    Net(IpNet),
}

impl Rule {
    /// Parses `HOST:PORT`; the error says what is wrong in the operator's terms.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let text = text.trim();
        let (host, port) = text.rsplit_once(':').ok_or_else(|| {
            format!("{text:?} must be HOST:PORT, e.g. \"localhost:*\" or \"10.0.0.0/8:443\"")
        })?;
        // "[v6]:port" and "[v6/len]:port"; a bare v6 address has colons of its own.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let ports = parse_ports(port).map_err(|e| format!("{text:?}: {e}"))?;
        let host = parse_host(host).map_err(|e| format!("{text:?}: {e}"))?;
        Ok(Rule { host, ports })
    }

    /// Whether this rule allows `port` on `addr`, which the student reached by asking
    /// for `name` (a name or an address literal).
    pub fn allows(&self, name: &str, addr: IpAddr, port: u16) -> bool {
        if port < self.ports.0 || port > self.ports.1 {
            return false;
        }
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Name(n) => n.eq_ignore_ascii_case(name.trim_end_matches('.')),
            HostPattern::Net(net) => contains(net, addr),
        }
    }

    /// Whether the rule's host is `*` (it then never opens networks that need naming).
    pub fn is_wildcard_host(&self) -> bool {
        self.host == HostPattern::Any
    }

    /// Whether this rule names the host `name` (not by `*` or an address block) and
    /// covers `port`: the name is then the operator's, and resolved by the agent.
    pub fn names(&self, name: &str, port: u16) -> bool {
        matches!(&self.host, HostPattern::Name(_)) && self.allows(name, IpAddr::from([0; 4]), port)
    }
}

fn parse_ports(text: &str) -> Result<(u16, u16), String> {
    let number = |t: &str| {
        t.trim()
            .parse::<u16>()
            .map_err(|_| format!("port {t:?} is not a number from 0 to 65535"))
    };
    if text.trim() == "*" {
        return Ok((0, u16::MAX));
    }
    let (low, high) = match text.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let p = number(text)?;
            (p, p)
        }
    };
    if low > high {
        return Err(format!("port range {text:?} is backwards"));
    }
    Ok((low, high))
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`.
pub(crate) fn is_host_name(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn parse_host(text: &str) -> Result<HostPattern, String> {
    if text == "*" {
        return Ok(HostPattern::Any);
    }
    if text.is_empty() {
        return Err("the host is empty (use * for any)".to_owned());
    }
    if text.contains('/') || text.parse::<IpAddr>().is_ok() {
        return parse_net(text).map(HostPattern::Net);
    }
    if !is_host_name(text) {
        return Err(format!(
            "{text:?} is not a host name, address or CIDR block"
        ));
    }
    Ok(HostPattern::Name(text.to_ascii_lowercase()))
}

/// Parses every rule, returning the problems (one per bad rule).
pub fn parse_all(rules: &[String]) -> (Vec<Rule>, Vec<String>) {
    let mut parsed = Vec::new();
    let mut problems = Vec::new();
    for r in rules {
        match Rule::parse(r) {
            Ok(rule) => parsed.push(rule),
            Err(e) => problems.push(e),
        }
    }
    (parsed, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rules_parse_and_match() {
        let r = Rule::parse("10.1.0.0/16:443").unwrap();
        assert!(r.allows("x", ip("10.1.2.3"), 443));
        assert!(!r.allows("x", ip("10.2.0.1"), 443));
        assert!(!r.allows("x", ip("10.1.2.3"), 80));
        assert!(r.allows("x", ip("::ffff:10.1.2.3"), 443), "mapped v4");

        let r = Rule::parse("DB.example.org:5432-5433").unwrap();
        assert!(r.allows("db.example.org.", ip("192.0.2.1"), 5433));
        assert!(!r.allows("other.example.org", ip("192.0.2.1"), 5432));

        assert!(r.names("db.example.org", 5432));
        assert!(!r.names("db.example.org", 22));
        assert!(!r.names("other.example.org", 5432));

        let r = Rule::parse("*:*").unwrap();
        assert!(r.allows("anything", ip("2001:db8::1"), 1));
        assert!(!r.names("anything", 1));
        assert!(!Rule::parse("0.0.0.0/0:*").unwrap().names("x", 1));

        let r = Rule::parse("[2001:db8::/32]:22").unwrap();
        assert!(r.allows("x", ip("2001:db8:1::5"), 22));
        assert!(!r.allows("x", ip("2001:db9::5"), 22));
        let r = Rule::parse("2001:db8::1:22").unwrap();
        assert!(r.allows("x", ip("2001:db8::1"), 22));
        assert!(!r.allows("x", ip("2001:db8::1"), 23));
    }

    #[test]
    fn bad_rules_say_why() {
        for (rule, why) in [
            ("localhost", "HOST:PORT"),
            ("host:http", "not a number"),
            ("host:90-80", "backwards"),
            ("10.0.0.0/33:1", "prefix length"),
            ("bad host!:1", "not a host name"),
            (":22", "empty"),
        ] {
            let e = Rule::parse(rule).unwrap_err();
            assert!(e.contains(why), "{rule}: {e}");
        }
    }
}
