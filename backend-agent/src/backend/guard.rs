//! What a runtime asks of the firewall for the networks it puts containers on:
//! one bridge interface and what may leave through it.

use labssh_proto::net::IpNet;

/// Where traffic from one containers' bridge may go, names already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeEgress {
    /// Anything outside the private, shared, link-local and loopback ranges.
    Internet,
    /// Only these blocks, each on one TCP/UDP port or on every port (`None`).
    Only(Vec<(IpNet, Option<u16>)>),
}

/// Installs and keeps the rules of containers' bridges; the firewall implements it.
pub trait NetworkGuard: Send + Sync {
    /// Puts in force the rules of `bridge` for `egress`, replacing what was there
    /// for it. Blocking (it runs iptables).
    fn guard(&self, bridge: &str, egress: &BridgeEgress);
}
