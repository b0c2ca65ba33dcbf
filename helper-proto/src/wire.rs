//! The protocol on the helper's unix socket, spoken by labssh-init and the agent.
//!
//! Both sides use this one module, so they cannot drift apart; it uses nothing but
//! `std`.
//!
//! Every message is a frame: a big-endian `u32` length of what follows, a kind byte,
//! then the payload. A connection carries exactly one request, the agent's first frame
//! ([`kind::SPAWN`], [`kind::CONNECT`], [`kind::LOOKUP`] or [`kind::LISTEN`]), and then
//! that request's traffic:
//!
//! ```text
//! agent → helper: SPAWN, then STDIN* / EOF / RESIZE / SIGNAL in any order
//! helper → agent: STARTED | ERROR, then STDOUT* / STDERR* / WINDOW*, then EXIT
//! agent → helper: CONNECT
//! helper → agent: CONNECTED (with the socket as SCM_RIGHTS) | ERROR
//! agent → helper: LOOKUP
//! helper → agent: ADDRESSES | ERROR
//! agent → helper: LISTEN
//! helper → agent: LISTENING (with the listening socket as SCM_RIGHTS) | ERROR
//! ```
//!
//! Stdin is credit-based: the agent sends at most [`STDIN_WINDOW`] bytes more than the
//! helper has granted back with WINDOW, so the helper can always read control frames
//! (signals, resizes) without buffering without bound behind a process that does not
//! read its stdin.
//!
//! Running containers keep the labssh-init they were created with while agents are
//! upgraded, so requests carry [`VERSION`] and the helper refuses versions it does not
//! speak; the agent then falls back to Docker exec. Request kinds added later (LOOKUP,
//! LISTEN) keep the version: a helper that predates one answers ERROR starting with
//! [`UNEXPECTED_KIND`], which the agent recognises.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Protocol version in every request.
pub const VERSION: u16 = 1;
/// Length prefix plus kind byte.
pub const HEADER_LEN: usize = 5;
/// Largest frame either side accepts; output is sent in much smaller pieces.
pub const MAX_FRAME: usize = 1 << 20;
/// Stdin bytes in flight before the agent must wait for WINDOW.
pub const STDIN_WINDOW: u32 = 256 * 1024;
/// Name of the socket in the helper's directory in the container.
pub const SOCKET_NAME: &str = "helper.sock";
/// How the ERROR answer to a request kind the helper does not know begins (every
/// helper version has answered this way).
pub const UNEXPECTED_KIND: &str = "unexpected request kind";
/// Most addresses in one ADDRESSES frame.
pub const MAX_ADDRESSES: usize = 64;

/// Frame kinds. Below 0x80 the agent sends, from 0x80 the helper does.
pub mod kind {
    /// Start a process: [`super::Spawn`].
    pub const SPAWN: u8 = 0x01;
    /// Open a TCP connection: [`super::Connect`].
    pub const CONNECT: u8 = 0x02;
    /// Bytes for the process's stdin.
    pub const STDIN: u8 = 0x03;
    /// The process's stdin ends (ignored with a terminal, as sshd does).
    pub const EOF: u8 = 0x04;
    /// New terminal size: cols `u16`, rows `u16`.
    pub const RESIZE: u8 = 0x05;
    /// Deliver a signal: number `u8`.
    pub const SIGNAL: u8 = 0x06;
    /// Resolve a name inside the container: [`super::Lookup`].
    pub const LOOKUP: u8 = 0x07;
    /// Listen on a TCP address inside the container: [`super::Listen`].
    pub const LISTEN: u8 = 0x08;

    /// The process runs: its pid in the container, `u32`.
    pub const STARTED: u8 = 0x81;
    /// Bytes from stdout (or the terminal).
    pub const STDOUT: u8 = 0x82;
    /// Bytes from stderr.
    pub const STDERR: u8 = 0x83;
    /// How the process ended: [`super::Exit`]; the last frame.
    pub const EXIT: u8 = 0x84;
    /// The request failed: a UTF-8 message; the last frame.
    pub const ERROR: u8 = 0x85;
    /// The TCP connection is open; its socket travels with this frame.
    pub const CONNECTED: u8 = 0x86;
    /// The helper passed this many more stdin bytes on: `u32`.
    pub const WINDOW: u8 = 0x87;
    /// What a LOOKUP resolved to: see [`super::encode_addresses`].
    pub const ADDRESSES: u8 = 0x88;
    /// The socket listens; it travels with this frame.
    pub const LISTENING: u8 = 0x89;
}

/// A process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawn {
    /// Program and arguments; the program is looked up in the `PATH` of `env`.
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries laid over the container's own environment.
    pub env: Vec<String>,
    /// Working directory; empty keeps the helper's.
    pub cwd: String,
    /// User id to run as.
    pub uid: u32,
    /// Group id to run as.
    pub gid: u32,
    /// A terminal of this size (cols, rows), or pipes.
    pub pty: Option<(u16, u16)>,
}

/// A TCP connection to open inside the container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Name or address, resolved inside the container.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// A name to resolve as the container would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// Name or address literal.
    pub host: String,
    /// TCP port, paired with every address in the answer.
    pub port: u16,
}

/// A TCP address to listen on inside the container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// An IPv4 or IPv6 address literal (names are not resolved).
    pub host: String,
    /// TCP port; 0 lets the kernel pick.
    pub port: u16,
}

/// The first frame of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Start a process.
    Spawn(Spawn),
    /// Open a TCP connection.
    Connect(Connect),
    /// Resolve a name.
    Lookup(Lookup),
    /// Open a listening socket.
    Listen(Listen),
}

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

/// The header of a frame of `kind` with `payload_len` bytes of payload.
pub fn frame_header(kind: u8, payload_len: usize) -> [u8; HEADER_LEN] {
    let [a, b, c, d] = (payload_len as u32 + 1).to_be_bytes();
    [a, b, c, d, kind]
}

/// Appends one frame to `out`.
pub fn put_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.extend_from_slice(&frame_header(kind, payload.len()));
    out.extend_from_slice(payload);
}

/// A frame split off a buffer: its kind, its payload and how many bytes it took.
pub type Frame<'a> = (u8, &'a [u8], usize);

/// One frame at the front of `buf`; `Ok(None)` when more bytes are needed.
pub fn split_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, String> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(format!("bad frame length {len}"));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some((buf[4], &buf[HEADER_LEN..4 + len], 4 + len)))
}

impl Request {
    /// The request as a whole frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&VERSION.to_be_bytes());
        let kind = match self {
            Request::Spawn(s) => {
                p.extend_from_slice(&s.uid.to_be_bytes());
                p.extend_from_slice(&s.gid.to_be_bytes());
                let (flag, (cols, rows)) = match s.pty {
                    Some(size) => (1u8, size),
                    None => (0, (0, 0)),
                };
                p.push(flag);
                p.extend_from_slice(&cols.to_be_bytes());
                p.extend_from_slice(&rows.to_be_bytes());
                put_str(&mut p, &s.cwd);
                put_list(&mut p, &s.argv);
                put_list(&mut p, &s.env);
                kind::SPAWN
            }
            Request::Connect(c) => {
                p.extend_from_slice(&c.port.to_be_bytes());
                put_str(&mut p, &c.host);
                kind::CONNECT
            }
            Request::Lookup(l) => {
                p.extend_from_slice(&l.port.to_be_bytes());
                put_str(&mut p, &l.host);
                kind::LOOKUP
            }
            Request::Listen(l) => {
                p.extend_from_slice(&l.port.to_be_bytes());
                put_str(&mut p, &l.host);
                kind::LISTEN
            }
        };
        let mut frame = Vec::with_capacity(p.len() + HEADER_LEN);
        put_frame(&mut frame, kind, &p);
        frame
    }

    /// Decodes a request frame's kind and payload.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Request, String> {
        let mut r = Reader(payload);
        let version = r.u16()?;
        if version != VERSION {
            return Err(format!(
                "protocol version {version} is not supported (this labssh-init speaks {VERSION})"
            ));
        }
        let request = match kind {
            kind::SPAWN => {
                let uid = r.u32()?;
                let gid = r.u32()?;
                let flag = r.u8()?;
                let cols = r.u16()?;
                let rows = r.u16()?;
                let cwd = r.string()?;
                let argv = r.list()?;
                let env = r.list()?;
                if argv.is_empty() {
                    return Err("empty command".to_owned());
                }
                Request::Spawn(Spawn {
                    argv,
                    env,
                    cwd,
                    uid,
                    gid,
                    pty: (flag & 1 == 1).then_some((cols, rows)),
                })
            }
            kind::CONNECT => {
                let port = r.u16()?;
                let host = r.string()?;
                Request::Connect(Connect { host, port })
            }
            kind::LOOKUP => {
                let port = r.u16()?;
                let host = r.string()?;
                Request::Lookup(Lookup { host, port })
            }
            kind::LISTEN => {
                let port = r.u16()?;
                let host = r.string()?;
                Request::Listen(Listen { host, port })
            }
            other => return Err(format!("{UNEXPECTED_KIND} {other:#x}")),
        };
        if !r.0.is_empty() {
            return Err("trailing bytes after the request".to_owned());
        }
        Ok(request)
    }
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

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for item in items {
        put_str(out, item);
    }
}

/// Reads big-endian fields off the front of a payload.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated frame".to_owned());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|_| "string is not UTF-8".to_owned())?;
        if s.contains('\0') {
            return Err("string contains a NUL byte".to_owned());
        }
        Ok(s.to_owned())
    }

    fn list(&mut self) -> Result<Vec<String>, String> {
        let n = self.u32()? as usize;
        // Every entry takes at least its 4-byte length: a lying count cannot allocate.
        if n > self.0.len() / 4 {
            return Err("truncated frame".to_owned());
        }
        (0..n).map(|_| self.string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(request: Request) {
        let frame = request.encode();
        let (kind, payload, used) = split_frame(&frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(Request::decode(kind, payload).unwrap(), request);
    }

    #[test]
    fn requests_round_trip() {
        round_trip(Request::Spawn(Spawn {
            argv: vec!["/bin/sh".into(), "-c".into(), "echo ü".into()],
            env: vec!["HOME=/home/a".into(), "TERM=xterm".into()],
            cwd: "/home/a".into(),
            uid: 1000,
            gid: 100,
            pty: Some((80, 24)),
        }));
        round_trip(Request::Spawn(Spawn {
            argv: vec!["true".into()],
            env: vec![],
            cwd: String::new(),
            uid: 0,
            gid: 0,
            pty: None,
        }));
        round_trip(Request::Connect(Connect {
            host: "localhost".into(),
            port: 3389,
        }));
        round_trip(Request::Lookup(Lookup {
            host: "db.lab".into(),
            port: 5432,
        }));
        round_trip(Request::Lookup(Lookup {
            host: String::new(),
            port: 0,
        }));
        round_trip(Request::Listen(Listen {
            host: "127.0.0.1".into(),
            port: 0,
        }));
        round_trip(Request::Listen(Listen {
            host: "::".into(),
            port: 65535,
        }));
    }

    #[test]
    fn request_kinds_stay_apart() {
        // The same fields under different kinds must not decode as each other.
        let lookup = Request::Lookup(Lookup {
            host: "h".into(),
            port: 1,
        })
        .encode();
        let listen = Request::Listen(Listen {
            host: "h".into(),
            port: 1,
        })
        .encode();
        let connect = Request::Connect(Connect {
            host: "h".into(),
            port: 1,
        })
        .encode();
        let kinds: Vec<u8> = [&lookup, &listen, &connect]
            .iter()
            .map(|f| split_frame(f).unwrap().unwrap().0)
            .collect();
        assert_eq!(kinds, vec![kind::LOOKUP, kind::LISTEN, kind::CONNECT]);
        assert_eq!(&lookup[5..], &listen[5..]);
    }

    #[test]
    fn unknown_kinds_are_refused_recognisably() {
        // What every helper answers to a kind it predates; the agent matches on it.
        let p = VERSION.to_be_bytes();
        let err = Request::decode(0x7f, &p).unwrap_err();
        assert!(err.starts_with(UNEXPECTED_KIND), "{err}");
        assert_eq!(err, "unexpected request kind 0x7f");
        // A known kind with a truncated payload is a different error.
        let err = Request::decode(kind::LISTEN, &p).unwrap_err();
        assert!(!err.starts_with(UNEXPECTED_KIND), "{err}");
    }

    #[test]
    fn addresses_round_trip() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:80".parse().unwrap(),
            "[::1]:22".parse().unwrap(),
            "172.17.0.2:0".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 443, 0, 3)),
        ];
        let p = encode_addresses(&addrs);
        assert_eq!(decode_addresses(&p).unwrap(), addrs);
        assert_eq!(decode_addresses(&encode_addresses(&[])).unwrap(), vec![]);
        // Truncated, trailing, bad family, absurd count.
        assert!(decode_addresses(&p[..p.len() - 1]).is_err());
        let mut long = p.clone();
        long.push(0);
        assert!(decode_addresses(&long).is_err());
        let mut bad = p.clone();
        bad[4] = 5;
        assert!(decode_addresses(&bad).is_err());
        assert!(decode_addresses(&[0xff, 0xff, 0xff, 0xff]).is_err());
        // More than the limit are cut, not refused.
        let many = vec![addrs[0]; MAX_ADDRESSES + 5];
        assert_eq!(
            decode_addresses(&encode_addresses(&many)).unwrap().len(),
            MAX_ADDRESSES
        );
    }

    #[test]
    fn frames_need_all_their_bytes() {
        let mut buf = Vec::new();
        put_frame(&mut buf, kind::STDOUT, b"hello");
        assert_eq!(split_frame(&buf[..4]).unwrap(), None);
        assert_eq!(split_frame(&buf[..9]).unwrap(), None);
        assert_eq!(
            split_frame(&buf).unwrap(),
            Some((kind::STDOUT, &b"hello"[..], 10))
        );
        assert!(split_frame(&[0, 0, 0, 0, 1]).is_err());
        assert!(split_frame(&[0xff, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut frame = Request::Connect(Connect {
            host: "h".into(),
            port: 1,
        })
        .encode();
        frame[5] = 0xff; // version
        let (kind, payload, _) = split_frame(&frame).unwrap().unwrap();
        assert!(Request::decode(kind, payload)
            .unwrap_err()
            .contains("version"));
        // A list claiming more entries than the frame could hold.
        let mut p = VERSION.to_be_bytes().to_vec();
        p.extend_from_slice(&[0; 13]);
        p.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(Request::decode(kind::SPAWN, &p).is_err());
    }

    #[test]
    fn exits_round_trip() {
        for exit in [
            Exit::Code(0),
            Exit::Code(-1),
            Exit::Code(255),
            Exit::Signal {
                signo: 15,
                core_dumped: false,
            },
            Exit::Signal {
                signo: 11,
                core_dumped: true,
            },
        ] {
            assert_eq!(Exit::decode(&exit.encode()).unwrap(), exit);
        }
    }
}
