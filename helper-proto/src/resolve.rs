//! Name lookup inside the container, without NSS (a static binary cannot load it):
//! address literals, the container's /etc/hosts, then a plain DNS query to the first
//! nameservers of its /etc/resolv.conf (Docker's embedded DNS on user networks).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

const HOSTS: &str = "/etc/hosts";
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// How long one nameserver gets per query.
const DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Nameservers tried, as glibc does.
const MAX_NAMESERVERS: usize = 3;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// The addresses of `host`, paired with `port`.
pub fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let hosts = std::fs::read_to_string(HOSTS).unwrap_or_default();
    let conf = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
    lookup_with(&hosts, &conf, host, port)
}

/// [`lookup`] with the contents of /etc/hosts and /etc/resolv.conf given (the agent
/// reads them from the container and queries DNS from inside its network).
pub fn lookup_with(
    hosts: &str,
    resolv_conf: &str,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let mut ips = from_hosts(hosts, host);
    if ips.is_empty() && host.eq_ignore_ascii_case("localhost") {
        ips = vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    }
    if ips.is_empty() {
        ips = from_dns(&nameservers(resolv_conf), host);
    }
    if ips.is_empty() {
        return Err(format!("cannot resolve {host:?} in the container"));
    }
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// Addresses /etc/hosts gives `host`, in file order.
fn from_hosts(text: &str, host: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?;
            let mut fields = line.split_whitespace();
            let ip = fields.next()?.parse().ok()?;
            fields.any(|n| n.eq_ignore_ascii_case(host)).then_some(ip)
        })
        .collect()
}

fn nameservers(conf: &str) -> Vec<IpAddr> {
    conf.lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse().ok())
        .take(MAX_NAMESERVERS)
        .collect()
}

fn from_dns(servers: &[IpAddr], host: &str) -> Vec<IpAddr> {
    let name = host.trim_end_matches('.');
    if name.is_empty() || name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Vec::new();
    }
    for &server in servers {
        let mut ips = Vec::new();
        for qtype in [TYPE_A, TYPE_AAAA] {
            if let Some(found) = query(server, name, qtype) {
                ips.extend(found);
            }
        }
        if !ips.is_empty() {
            return ips;
        }
    }
    Vec::new()
}

fn query(server: IpAddr, name: &str, qtype: u16) -> Option<Vec<IpAddr>> {
    let bind: SocketAddr = match server {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.set_read_timeout(Some(DNS_TIMEOUT)).ok()?;
    socket.connect((server, 53)).ok()?;
    // Unpredictable enough for a query on the container's own network.
    let id = (std::process::id() as u16) ^ (qtype << 3) ^ 0x5a5a;
    socket.send(&question(id, name, qtype)).ok()?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).ok()?;
    answers(&buf[..n], id, qtype)
}

/// A recursive query for one name and type.
fn question(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // class IN
    q
}

/// The addresses of type `qtype` in a response to query `id`.
fn answers(msg: &[u8], id: u16, qtype: u16) -> Option<Vec<IpAddr>> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]));
    if u16_at(0)? != id || msg.get(3)? & 0x0f != 0 {
        return None; // someone else's answer, or an error rcode
    }
    let (questions, count) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..count {
        at = skip_name(msg, at)?;
        let (rtype, len) = (u16_at(at)?, u16_at(at + 8)? as usize);
        let data = msg.get(at + 10..at + 10 + len)?;
        match (rtype, len) {
            (t, 4) if t == qtype => ips.push(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
            (t, 16) if t == qtype => ips.push(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
            _ => {} // CNAMEs and the like: their targets follow as further answers
        }
        at += 10 + len;
    }
    Some(ips)
}

/// The offset just past a (possibly compressed) name.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + l as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_hosts_file() {
        assert_eq!(
            lookup("127.0.0.1", 80).unwrap(),
            vec!["127.0.0.1:80".parse().unwrap()]
        );
        assert_eq!(
            lookup("[::1]", 22).unwrap(),
            vec!["[::1]:22".parse().unwrap()]
        );
        let hosts = "127.0.0.1 localhost\n# 10.0.0.9 db\n172.17.0.2\talice-default  alias # me\n";
        assert_eq!(
            from_hosts(hosts, "ALIAS"),
            vec!["172.17.0.2".parse::<IpAddr>().unwrap()]
        );
        assert!(from_hosts(hosts, "db").is_empty());
    }

    #[test]
    fn files_are_given() {
        // No nameservers: nothing leaves the test.
        let hosts = "10.1.2.3 web web.lab\n::1 localhost\n";
        assert_eq!(
            lookup_with(hosts, "", "web.lab", 8080).unwrap(),
            vec!["10.1.2.3:8080".parse().unwrap()]
        );
        // The file's localhost wins over the built-in pair.
        assert_eq!(
            lookup_with(hosts, "", "localhost", 1).unwrap(),
            vec!["[::1]:1".parse().unwrap()]
        );
        assert_eq!(
            lookup_with("", "", "localhost", 1).unwrap(),
            vec!["127.0.0.1:1".parse().unwrap(), "[::1]:1".parse().unwrap()]
        );
        let err = lookup_with(hosts, "", "db", 1).unwrap_err();
        assert_eq!(err, "cannot resolve \"db\" in the container");
    }

    #[test]
    fn dns_messages() {
        let q = question(7, "db.lab", TYPE_A);
        assert_eq!(&q[12..], b"\x02db\x03lab\x00\x00\x01\x00\x01");
        // A response: the question, a CNAME, then an A record with a compressed name.
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 2;
        r.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 9]);
        assert_eq!(
            answers(&r, 7, TYPE_A).unwrap(),
            vec!["10.0.0.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(answers(&r, 8, TYPE_A), None);
        assert_eq!(
            nameservers("search x\nnameserver 127.0.0.11\nnameserver bad\n"),
            vec!["127.0.0.11".parse::<IpAddr>().unwrap()]
        );
    }
}
