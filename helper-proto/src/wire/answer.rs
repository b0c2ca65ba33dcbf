//! What the helper answers besides process output: exit statuses and resolved
//! addresses.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::{Reader, MAX_ADDRESSES};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal {
        /// Signal number.
        signo: i32,
        /// It dumped core.
        core_dumped: bool,
    },
}

impl Exit {
    /// The payload of an EXIT frame.
    pub fn encode(self) -> [u8; 6] {
        let (tag, value, core) = match self {
            Exit::Code(code) => (0u8, code, 0u8),
            Exit::Signal { signo, core_dumped } => (1, signo, core_dumped as u8),
        };
        let v = value.to_be_bytes();
        [tag, v[0], v[1], v[2], v[3], core]
    }

    /// Decodes an EXIT frame's payload.
    pub fn decode(payload: &[u8]) -> Result<Exit, String> {
        let mut r = Reader(payload);
        let tag = r.u8()?;
        let value = r.u32()? as i32;
        let core = r.u8()?;
        match tag {
            0 => Ok(Exit::Code(value)),
            1 => Ok(Exit::Signal {
                signo: value,
                core_dumped: core != 0,
            }),
            other => Err(format!("unknown exit kind {other}")),
        }
    }
}

/// What ATTACHED says of the session taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    /// The process's pid in the container.
    pub pid: u32,
    /// It has a terminal.
    pub pty: bool,
    /// Its output and input were counted from its start (it was relayed, not handed
    /// over): `lost` and `input_offset` are exact. Otherwise the replay is what came
    /// while nobody was attached, `lost` what of that was dropped, and
    /// `input_offset` 0.
    pub counted: bool,
    /// Output bytes past the agent's offset that the history no longer held; the
    /// replay starts after them.
    pub lost: u64,
    /// Stdin payload bytes the helper has taken in all, so the agent's side can send
    /// again what never arrived.
    pub input_offset: u64,
}

impl Attached {
    /// The payload of an ATTACHED frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(21);
        p.extend_from_slice(&self.pid.to_be_bytes());
        p.push(self.pty as u8 | (self.counted as u8) << 1);
        p.extend_from_slice(&self.lost.to_be_bytes());
        p.extend_from_slice(&self.input_offset.to_be_bytes());
        p
    }

    /// Decodes an ATTACHED frame's payload.
    pub fn decode(payload: &[u8]) -> Result<Attached, String> {
        let mut r = Reader(payload);
        let pid = r.u32()?;
        let flags = r.u8()?;
        let attached = Attached {
            pid,
            pty: flags & 1 == 1,
            counted: flags & 2 == 2,
            lost: r.u64()?,
            input_offset: r.u64()?,
        };
        if !r.0.is_empty() {
            return Err("trailing bytes after ATTACHED".to_owned());
        }
        Ok(attached)
    }
}

/// The payload of an ADDRESSES frame: a `u32` count, then per address a family byte
/// (4 or 6), the address's bytes, the port (`u16`) and, for IPv6, the scope id
/// (`u32`). At most [`MAX_ADDRESSES`] are kept.
pub fn encode_addresses(addrs: &[SocketAddr]) -> Vec<u8> {
    let addrs = &addrs[..addrs.len().min(MAX_ADDRESSES)];
    let mut p = Vec::with_capacity(4 + addrs.len() * 23);
    p.extend_from_slice(&(addrs.len() as u32).to_be_bytes());
    for addr in addrs {
        match addr {
            SocketAddr::V4(a) => {
                p.push(4);
                p.extend_from_slice(&a.ip().octets());
                p.extend_from_slice(&a.port().to_be_bytes());
            }
            SocketAddr::V6(a) => {
                p.push(6);
                p.extend_from_slice(&a.ip().octets());
                p.extend_from_slice(&a.port().to_be_bytes());
                p.extend_from_slice(&a.scope_id().to_be_bytes());
            }
        }
    }
    p
}

/// Decodes an ADDRESSES frame's payload.
pub fn decode_addresses(payload: &[u8]) -> Result<Vec<SocketAddr>, String> {
    let mut r = Reader(payload);
    let n = r.u32()? as usize;
    if n > MAX_ADDRESSES {
        return Err(format!("{n} addresses in one answer"));
    }
    let mut addrs = Vec::with_capacity(n);
    for _ in 0..n {
        let addr = match r.u8()? {
            4 => {
                let b = r.take(4)?;
                let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                SocketAddr::V4(SocketAddrV4::new(ip, r.u16()?))
            }
            6 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(r.take(16)?);
                let port = r.u16()?;
                let scope = r.u32()?;
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(b), port, 0, scope))
            }
            other => return Err(format!("unknown address family {other}")),
        };
        addrs.push(addr);
    }
    if !r.0.is_empty() {
        return Err("trailing bytes after the addresses".to_owned());
    }
    Ok(addrs)
}
