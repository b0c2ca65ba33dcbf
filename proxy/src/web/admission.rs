//! How many browser connections a front door holds: `web.max_connections` in all and
//! `web.max_connections_per_address` from one client address (after its PROXY
//! header; `rate_limit.exempt_addresses`, such as a campus NAT, and a trusted
//! balancer's own connections are not capped per address). A connection over
//! either is closed at once, before TLS, so one client's flood of connections
//! cannot take the front door from everyone else.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::address_counts::AddressCounts;

/// Why a connection was not taken: the `reason` of `labssh_web_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// `web.max_connections`.
    Total,
    /// `web.max_connections_per_address`.
    PerAddress,
}

impl Full {
    /// The metric's label and the key named in logs.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Full::Total => "max_connections",
            Full::PerAddress => "max_connections_per_address",
        }
    }
}

/// The front door's open connections, all together and per client address.
#[derive(Clone)]
pub(crate) struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    total: usize,
    per_address: usize,
    exempt: Vec<ipnet::IpNet>,
    counts: Mutex<AddressCounts>,
}

/// One admitted connection, counted until dropped.
#[must_use = "the connection stops counting when this is dropped"]
pub(crate) struct Admitted {
    inner: Arc<Inner>,
    capped: Option<IpAddr>,
}

impl Admission {
    /// At most `total` connections, `per_address` from one address not `exempt`.
    pub(crate) fn new(total: usize, per_address: usize, exempt: Vec<ipnet::IpNet>) -> Admission {
        Admission {
            inner: Arc::new(Inner {
                total,
                per_address,
                exempt,
                counts: Mutex::default(),
            }),
        }
    }

    /// Takes a connection from `ip`, or says which limit is full. `None` is a
    /// trusted balancer's own connection, not capped per address.
    pub(crate) fn admit(&self, ip: Option<IpAddr>) -> Result<Admitted, Full> {
        let inner = &self.inner;
        let ip = ip
            .map(|ip| ip.to_canonical())
            .filter(|ip| !inner.exempt.iter().any(|net| net.contains(ip)));
        let mut counts = inner.counts.lock().expect("admission lock");
        if counts.total() >= inner.total {
            return Err(Full::Total);
        }
        if ip.is_some_and(|ip| counts.from(ip) >= inner.per_address) {
            return Err(Full::PerAddress);
        }
        counts.add(ip);
        Ok(Admitted {
            inner: inner.clone(),
            capped: ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.inner.counts.lock().expect("admission lock");
        counts.remove(self.capped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn one_address_is_capped_and_the_others_still_come_in() {
        let nat = labssh_proto::net::parse_net("10.9.0.0/16").unwrap();
        let admission = Admission::new(5, 2, vec![nat]);
        let a1 = admission.admit(ip("192.0.2.1")).unwrap();
        let _a2 = admission.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            admission.admit(ip("192.0.2.1")).err(),
            Some(Full::PerAddress)
        );
        // The same address as IPv4-mapped IPv6 is the same address.
        assert_eq!(
            admission.admit(ip("::ffff:192.0.2.1")).err(),
            Some(Full::PerAddress)
        );
        let _b = admission.admit(ip("192.0.2.2")).unwrap();
        // Exempt addresses and a balancer's own connections count in the total only.
        let _n1 = admission.admit(ip("10.9.1.1")).unwrap();
        let _n2 = admission.admit(None).unwrap();
        assert_eq!(admission.admit(ip("10.9.1.1")).err(), Some(Full::Total));
        assert_eq!(admission.admit(ip("192.0.2.3")).err(), Some(Full::Total));
        // A closed connection gives its place back, to its address too.
        drop(a1);
        let _again = admission.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(admission.admit(ip("192.0.2.1")).err(), Some(Full::Total));
    }
}
