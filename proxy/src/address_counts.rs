//! Open connections counted all together and per client address, for the limits
//! before an SSH login (`preauth`) and on the web front door's connections.

use std::collections::HashMap;
use std::net::IpAddr;

/// The counts; an address goes from the map when its count is 0.
#[derive(Debug, Default)]
pub(crate) struct AddressCounts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl AddressCounts {
    /// All of them.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Those from `ip`.
    pub(crate) fn from(&self, ip: IpAddr) -> usize {
        self.by_address.get(&ip).copied().unwrap_or(0)
    }

    /// One more, from `ip` if it is capped (`None`: counted in the total only).
    pub(crate) fn add(&mut self, ip: Option<IpAddr>) {
        self.total += 1;
        if let Some(ip) = ip {
            *self.by_address.entry(ip).or_default() += 1;
        }
    }

    /// One fewer, as it was added.
    pub(crate) fn remove(&mut self, ip: Option<IpAddr>) {
        self.total = self.total.saturating_sub(1);
        if let Some(ip) = ip {
            if let Some(n) = self.by_address.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.by_address.remove(&ip);
                }
            }
        }
    }

    /// Whether no address is counted.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }
}
