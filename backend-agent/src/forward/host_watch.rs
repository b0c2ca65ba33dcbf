//! This host's addresses for the forwarding guard, kept current.
//!
//! The guard refuses this host's own addresses and its container networks, so it
//! must know them: a snapshot taken at start misses an address added later (a new
//! Docker network's bridge, DHCP, an operator's `ip addr add`), and forwarding would
//! reach it. The agent subscribes to the kernel's address notifications (NETLINK_ROUTE,
//! the IPv4 and IPv6 address groups) before its first read of the interfaces, and
//! before judging a forward drains them without waiting: any notification, or a queue
//! that overflowed, means the interfaces are read again. The kernel queues the
//! notification before `ip addr add` returns, so an address added before a forward is
//! judged is known to that judgement, with no task or timer in between. Without the
//! subscription (it failed), the interfaces are read for every judgement.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use labssh_proto::net::IpNet;
use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};

use super::policy::Guard;

/// One read of the notification queue; a notification is about 100 bytes.
const RECV_BUFFER: usize = 8 * 1024;

/// The guard, re-read from the interfaces whenever the kernel says they changed.
pub struct HostGuard {
    /// The operator's `forward_deny`.
    deny: Vec<IpNet>,
    state: Mutex<State>,
}

struct State {
    /// The guard as of the last read.
    guard: Arc<Guard>,
    /// Address notifications; `None` when the subscription failed.
    events: Option<OwnedFd>,
}

impl HostGuard {
    /// Subscribes to address changes and reads this host's interfaces.
    pub fn watch(deny: &[IpNet]) -> HostGuard {
        let events = match subscribe() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow this host's address changes; its interfaces are read for every forward");
                None
            }
        };
        let guard = Arc::new(read(deny));
        HostGuard {
            deny: deny.to_vec(),
            state: Mutex::new(State { guard, events }),
        }
    }

    /// The guard with every address change the kernel reported so far.
    pub fn current(&self) -> Arc<Guard> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match &state.events {
            Some(fd) => match drain(fd) {
                Ok(changed) => changed,
                Err(e) => {
                    tracing::warn!(error = %e, "lost this host's address notifications; its interfaces are read for every forward");
                    state.events = None;
                    true
                }
            },
            None => true,
        };
        if changed {
            let fresh = read(&self.deny);
            if state.events.is_some() {
                tracing::info!("this host's addresses changed; the forwarding guard follows");
            }
            state.guard = Arc::new(fresh);
        }
        state.guard.clone()
    }
}

/// A NETLINK_ROUTE socket in the IPv4 and IPv6 address groups, non-blocking.
fn subscribe() -> std::io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None, // NETLINK_ROUTE
    )?;
    let groups = (libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;
    rustix::net::bind(&fd, &SocketAddrNetlink::new(0, groups))?;
    Ok(fd)
}

/// Reads every queued notification; whether there was any (an overflow counts).
fn drain(fd: &OwnedFd) -> std::io::Result<bool> {
    let mut buf = [0u8; RECV_BUFFER];
    let mut changed = false;
    loop {
        match rustix::net::recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
            Ok((_, 0)) => return Ok(changed),
            Ok(_) => changed = true,
            Err(Errno::AGAIN) => return Ok(changed),
            Err(Errno::NOBUFS) => changed = true, // notifications were dropped
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The guard for this host's interfaces as they are now.
fn read(deny: &[IpNet]) -> Guard {
    match host_interfaces() {
        Ok(list) => Guard::from_interfaces(deny, Some(&list)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list this host's addresses; forwarding to private networks is refused");
            Guard::from_interfaces(deny, None)
        }
    }
}

/// (interface name, address, prefix length) of every address on this host.
fn host_interfaces() -> std::io::Result<Vec<(String, IpAddr, u8)>> {
    let mut list = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed by freeifaddrs below; every
    // pointer read is checked for null and points into that list.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cur = head;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            let (addr, prefix) = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                    (
                        IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                        u32::from_be(m.sin_addr.s_addr).count_ones() as u8,
                    )
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in6);
                    let ones: u32 = m.sin6_addr.s6_addr.iter().map(|b| b.count_ones()).sum();
                    (IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)), ones as u8)
                }
                _ => continue,
            };
            list.push((name, addr, prefix));
        }
        libc::freeifaddrs(head);
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_addresses_are_known() {
        // This host has at least one non-loopback address in any test setup.
        let watched = HostGuard::watch(&[]);
        let list = host_interfaces().unwrap();
        let (_, addr, _) = list
            .iter()
            .find(|(_, a, _)| !a.is_loopback())
            .expect("a non-loopback address");
        assert!(watched.current().is_host_address(*addr));
        assert!(watched.state.lock().unwrap().events.is_some(), "subscribed");
    }
}
