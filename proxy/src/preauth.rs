//! Limits before a login, after OpenSSH's `LoginGraceTime`, `MaxStartups`,
//! `PerSourceMaxStartups` and `MaxAuthTries`, so connections that never log in
//! cannot lock the class out.
//!
//! A connection counts as *unauthenticated* from the moment its client address is
//! known (at accept; behind a trusted balancer, once its PROXY header names the
//! client) until it logs in or closes. A new one is refused — closed at once,
//! before the SSH banner, as OpenSSH does — when its address already has
//! `max_unauthenticated_per_address` of them (addresses are counted one by one,
//! IPv6 too, as OpenSSH's default `PerSourceNetBlockSize 32:128`; an
//! `exempt_addresses` entry such as the campus NAT is not capped, nor a trusted
//! balancer's own connections, which stand for clients unknown), or by the
//! random early drop of `max_startups` ([`MaxStartups`]) over all of them.
//! Each connection also has `login_grace_secs` from accept to log in and
//! `max_auth_tries` failed attempts; both are enforced by the server and the
//! connection. Every refusal is counted and logged sparingly ([`Refusals`]).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use labssh_telemetry::metrics as telemetry;

use crate::address_counts::AddressCounts;
use crate::config::Config;

mod refusal;
mod startups;
mod throttle;

pub(crate) use refusal::{Reason, Refusals, LOG_WINDOW};
pub use startups::MaxStartups;

/// The unauthenticated connections of a replica, counted all together and per
/// client address.
#[derive(Clone)]
pub(crate) struct Gate {
    inner: Arc<GateInner>,
}

/// What the gate's guards share.
struct GateInner {
    /// Most unauthenticated connections per (non-exempt) address.
    per_address: usize,
    /// Random early drop over all of them.
    startups: MaxStartups,
    /// Addresses not capped per address.
    exempt: Vec<ipnet::IpNet>,
    /// Unauthenticated connections now.
    counts: Mutex<AddressCounts>,
}

impl Gate {
    /// The gate for `config` (validated).
    pub(crate) fn new(config: &Config) -> Gate {
        let exempt = config.rate_limit.exempt_nets();
        Gate {
            inner: Arc::new(GateInner {
                per_address: config.max_unauthenticated_per_address,
                startups: config.max_startups(),
                exempt,
                counts: Mutex::default(),
            }),
        }
    }

    /// Admits a new unauthenticated connection from `ip`, or says why not;
    /// `roll` is drawn uniformly from 0..100 for `max_startups`. `None` is a
    /// trusted balancer's own connection (its health check, or one without a
    /// header when none is required): it stands for clients unknown, so it is
    /// not capped per address.
    pub(crate) fn admit(&self, ip: Option<IpAddr>, roll: u32) -> Result<Unauthenticated, Reason> {
        let inner = &self.inner;
        let ip = ip
            .map(|ip| ip.to_canonical())
            .filter(|ip| !inner.exempt.iter().any(|net| net.contains(ip)));
        let mut counts = inner.counts.lock().expect("preauth lock");
        if ip.is_some_and(|ip| counts.from(ip) >= inner.per_address) {
            return Err(Reason::PerAddress);
        }
        if inner.startups.refuses(counts.total(), roll) {
            return Err(Reason::MaxStartups);
        }
        counts.add(ip);
        let counted = Counted {
            gate: self.inner.clone(),
            capped: ip,
            _gauge: telemetry::unauthenticated(),
        };
        Ok(Unauthenticated(Arc::new(Mutex::new(Some(counted)))))
    }

    /// Unauthenticated connections now: all, and from `ip`.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> (usize, usize) {
        let counts = self.inner.counts.lock().expect("preauth lock");
        (counts.total(), counts.from(ip.to_canonical()))
    }

    /// The value of the limit `reason` names, for logs.
    pub(crate) fn limit(&self, reason: Reason) -> String {
        match reason {
            Reason::PerAddress => self.inner.per_address.to_string(),
            Reason::MaxStartups => self.inner.startups.to_string(),
            _ => String::new(),
        }
    }
}

/// One connection counted as unauthenticated until [`Unauthenticated::end`]
/// (at its login, or when its login grace is over) or until every copy is
/// dropped (it closed).
#[must_use = "the connection stops counting as unauthenticated when this is dropped"]
#[derive(Clone)]
pub(crate) struct Unauthenticated(Arc<Mutex<Option<Counted>>>);

impl Unauthenticated {
    /// The connection no longer counts as unauthenticated.
    pub(crate) fn end(&self) {
        let counted = self.0.lock().expect("preauth lock").take();
        drop(counted);
    }
}

/// The count of one unauthenticated connection, given back when dropped.
struct Counted {
    /// The counts to give back to.
    gate: Arc<GateInner>,
    /// The address counted, unless exempt or a balancer's.
    capped: Option<IpAddr>,
    /// `labssh_proxy_unauthenticated_connections`.
    _gauge: telemetry::Active,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.gate.counts.lock().expect("preauth lock");
        counts.remove(self.capped);
    }
}

/// The problems of the keys of this module, each with its key.
pub(crate) fn problems(config: &Config) -> Vec<String> {
    let mut p = Vec::new();
    if config.max_unauthenticated_per_address == 0 {
        p.push("max_unauthenticated_per_address: must be greater than 0".into());
    }
    if config.max_auth_tries == 0 {
        p.push("max_auth_tries: must be greater than 0".into());
    }
    if let Err(e) = config.max_startups.parse::<MaxStartups>() {
        p.push(format!("max_startups: {e}"));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(per_address: usize, startups: &str, exempt: &[&str]) -> Gate {
        let mut config = Config {
            max_unauthenticated_per_address: per_address,
            max_startups: startups.into(),
            ..Config::default()
        };
        config.rate_limit.exempt_addresses = exempt.iter().map(|s| s.to_string()).collect();
        assert!(problems(&config).is_empty(), "{:?}", problems(&config));
        Gate::new(&config)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn from(s: &str) -> Option<IpAddr> {
        Some(ip(s))
    }

    #[test]
    fn an_address_is_capped_others_and_exempt_ones_are_not() {
        let g = gate(3, "1000", &["198.51.100.0/24"]);
        let held: Vec<_> = (0..3)
            .map(|_| g.admit(from("203.0.113.9"), 0).unwrap())
            .collect();
        assert_eq!(
            g.admit(from("203.0.113.9"), 0).err(),
            Some(Reason::PerAddress)
        );
        // The same address written as IPv4-mapped IPv6 is the same address.
        assert_eq!(
            g.admit(from("::ffff:203.0.113.9"), 0).err(),
            Some(Reason::PerAddress)
        );
        let other = g.admit(from("192.0.2.1"), 0).unwrap();
        // A balancer's own connections are not capped either.
        let balancer: Vec<_> = (0..5).map(|_| g.admit(None, 0).unwrap()).collect();
        let nat: Vec<_> = (0..10)
            .map(|_| g.admit(from("198.51.100.7"), 0).unwrap())
            .collect();
        assert_eq!(g.count(ip("203.0.113.9")), (19, 3));
        assert_eq!(
            g.count(ip("198.51.100.7")),
            (19, 0),
            "exempt: not counted per address"
        );
        drop((held, balancer));
        assert_eq!(g.count(ip("203.0.113.9")), (11, 0));
        let again = g.admit(from("203.0.113.9"), 0).unwrap();
        // Ended by one copy (at the login), it counts no more for any.
        let copy = again.clone();
        copy.end();
        assert_eq!(g.count(ip("203.0.113.9")), (11, 0));
        drop((other, nat, again, copy));
        assert_eq!(g.count(ip("203.0.113.9")), (0, 0));
        assert!(g.inner.counts.lock().unwrap().is_empty());
    }

    #[test]
    fn max_startups_counts_every_unauthenticated_connection() {
        let g = gate(100, "2:50:4", &["198.51.100.0/24"]);
        // Exempt or not, every connection counts towards max_startups.
        let a = g.admit(from("198.51.100.7"), 0).unwrap();
        let b = g.admit(from("192.0.2.1"), 0).unwrap();
        // At start (2 open): a roll under 50 refuses, one at 50 passes.
        assert_eq!(
            g.admit(from("192.0.2.2"), 49).err(),
            Some(Reason::MaxStartups)
        );
        let c = g.admit(from("192.0.2.2"), 50).unwrap();
        // 3 open: 75%.
        assert_eq!(
            g.admit(from("192.0.2.3"), 74).err(),
            Some(Reason::MaxStartups)
        );
        let d = g.admit(from("192.0.2.3"), 75).unwrap();
        // Full: even the luckiest roll is refused.
        assert_eq!(
            g.admit(from("192.0.2.4"), 99).err(),
            Some(Reason::MaxStartups)
        );
        drop((a, b, c, d));
        assert!(g.admit(from("192.0.2.4"), 0).is_ok());
    }
}
