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
//! agent → helper: SPAWN_PIPES (no terminal), then SIGNAL*
//! helper → agent: STARTED (with the process's stdin, stdout and stderr pipes as
//!                 SCM_RIGHTS: the agent writes and reads them itself) | ERROR,
//!                 then EXIT as soon as the process is reaped
//! agent → helper: CONNECT
//! helper → agent: CONNECTED (with the socket as SCM_RIGHTS) | ERROR
//! agent → helper: LOOKUP
//! helper → agent: ADDRESSES | ERROR
//! agent → helper: LISTENERS
//! helper → agent: ADDRESSES (the listening TCP sockets) | ERROR
//! agent → helper: LISTEN
//! helper → agent: LISTENING (with the listening socket as SCM_RIGHTS) | ERROR
//! agent → helper: CONNECT_UNIX
//! helper → agent: CONNECTED (with the socket as SCM_RIGHTS) | ERROR
//! agent → helper: LISTEN_UNIX
//! helper → agent: LISTENING (with the listening socket as SCM_RIGHTS) | ERROR,
//!                 then nothing: the agent keeps the connection while it listens,
//!                 and its end tells the helper to remove the socket file
//! agent → helper: SPAWN_KEPT (SPAWN or SPAWN_PIPES with a session id and a grace),
//!                 then as after those, and RELEASE once the session is over
//! agent → helper: REATTACH (the id, and how much output the student has)
//! helper → agent: ATTACHED | ERROR, then the output held since that offset, then
//!                 as after SPAWN (a handed-over session is relayed from now on)
//! ```
//!
//! A kept session (SPAWN_KEPT) outlives its connection: when the connection breaks
//! before RELEASE, labssh-init keeps the process, its terminal and its children for
//! the grace period, goes on reading its output into a bounded history
//! ([`KEPT_OUTPUT`], the oldest dropped) and holds its input, until a REATTACH with
//! the session's id takes it over, or the grace runs out and it is hung up. Output is
//! counted in payload bytes from the session's start, so the agent names what the
//! student already has and nothing is shown twice; bytes beyond the history are
//! reported as lost in ATTACHED. A session quiet for a second with everything sent
//! keeps only its last screenful of history, so idle sessions hold little. Only the agent can connect (the peer check), and
//! only with the random id it issued.
//!
//! Stdin is credit-based: the agent sends at most [`STDIN_WINDOW`] bytes more than the
//! helper has granted back with WINDOW, so the helper can always read control frames
//! (signals, resizes) without buffering without bound behind a process that does not
//! read its stdin.
//!
//! Running containers keep the labssh-init they were created with while agents are
//! upgraded, so requests carry [`VERSION`] and the helper refuses versions it does not
//! speak; the agent then restores the helper (a restart mounts the current
//! labssh-init). Request kinds added later (LOOKUP, LISTEN, CONNECT_UNIX,
//! LISTEN_UNIX, SPAWN_PIPES, SPAWN_KEPT, REATTACH, LISTENERS) keep the version: a helper that predates one answers
//! ERROR starting with [`UNEXPECTED_KIND`], which the agent recognises (and for
//! SPAWN_PIPES asks again with SPAWN, the relayed way).

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
/// Longest unix socket path: `sun_path` holds 108 bytes, the last one the NUL.
pub const MAX_SOCKET_PATH: usize = 107;
/// Most addresses in one ADDRESSES frame.
pub const MAX_ADDRESSES: usize = 64;
/// Output a kept session holds for a re-attach: what was sent last (it may not have
/// reached the student) and what came while nobody was attached.
pub const KEPT_OUTPUT: usize = 256 * 1024;

mod answer;
mod request;

pub use answer::Attached;
pub use answer::{decode_addresses, encode_addresses, Exit};
pub use request::{
    valid_session_id, Connect, Keep, Listen, Lookup, Reattach, Request, Spawn, UnixSocket,
};

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
    /// Connect to a unix socket inside the container: [`super::UnixSocket`].
    pub const CONNECT_UNIX: u8 = 0x09;
    /// Listen on a unix socket inside the container: [`super::UnixSocket`].
    pub const LISTEN_UNIX: u8 = 0x0a;
    /// Start a process without a terminal and hand its pipes over:
    /// [`super::Spawn`] with `pipes`.
    pub const SPAWN_PIPES: u8 = 0x0b;
    /// Start a process that survives its connection: [`super::Spawn`] with `keep`.
    pub const SPAWN_KEPT: u8 = 0x0c;
    /// Take a kept session over: [`super::Reattach`].
    pub const REATTACH: u8 = 0x0d;
    /// The kept session is over for the agent: when the connection ends, hang the
    /// process up instead of keeping it. No payload.
    pub const RELEASE: u8 = 0x0e;
    /// Which TCP sockets listen in the container's network namespace, read from its
    /// own socket tables (`/proc/net/tcp`, `tcp6`); answered with ADDRESSES, one per
    /// listening socket, the wildcard and loopback ones included. No payload.
    pub const LISTENERS: u8 = 0x0f;

    /// The process runs: its pid in the container, `u32`. After SPAWN_PIPES it carries
    /// three descriptors, in this order: the write end of the process's stdin, the read
    /// ends of its stdout and of its stderr.
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
    /// A REATTACH took the session over: [`super::Attached`].
    pub const ATTACHED: u8 = 0x8a;
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

    /// A big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(b.try_into().expect("eight bytes")))
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
    use std::net::{SocketAddr, SocketAddrV6};

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
            pipes: false,
            keep: None,
        }));
        round_trip(Request::Spawn(Spawn {
            argv: vec!["true".into()],
            env: vec![],
            cwd: String::new(),
            uid: 0,
            gid: 0,
            pty: None,
            pipes: false,
            keep: None,
        }));
        let handed = Spawn {
            argv: vec!["/usr/lib/openssh/sftp-server".into()],
            env: vec!["HOME=/home/a".into()],
            cwd: "/home/a".into(),
            uid: 1000,
            gid: 100,
            pty: None,
            pipes: true,
            keep: None,
        };
        round_trip(Request::Spawn(handed.clone()));
        // Only the kind tells the two ways apart: the payload is SPAWN's, so an older
        // helper refuses the kind rather than misreading it.
        let relayed = Request::Spawn(Spawn {
            pipes: false,
            ..handed.clone()
        })
        .encode();
        let pipes = Request::Spawn(handed.clone()).encode();
        assert_eq!(split_frame(&pipes).unwrap().unwrap().0, kind::SPAWN_PIPES);
        assert_eq!(&relayed[5..], &pipes[5..]);
        // A terminal's master stays with the helper.
        let (_, payload, _) = split_frame(&relayed).unwrap().unwrap();
        let with_pty = Request::Spawn(Spawn {
            pty: Some((80, 24)),
            ..handed
        })
        .encode();
        let (_, pty_payload, _) = split_frame(&with_pty).unwrap().unwrap();
        assert!(Request::decode(kind::SPAWN, payload).is_ok());
        let err = Request::decode(kind::SPAWN_PIPES, pty_payload).unwrap_err();
        assert!(err.contains("terminal"), "{err}");
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
        round_trip(Request::Listeners);
        round_trip(Request::Listen(Listen {
            host: "127.0.0.1".into(),
            port: 0,
        }));
        round_trip(Request::Listen(Listen {
            host: "::".into(),
            port: 65535,
        }));
        let socket = UnixSocket {
            uid: 1000,
            gid: 100,
            path: "/run/jupyter.sock".into(),
        };
        round_trip(Request::ConnectUnix(socket.clone()));
        round_trip(Request::ListenUnix(socket.clone()));
        let connect = Request::ConnectUnix(socket.clone()).encode();
        let listen = Request::ListenUnix(socket).encode();
        assert_eq!(
            split_frame(&connect).unwrap().unwrap().0,
            kind::CONNECT_UNIX
        );
        assert_eq!(split_frame(&listen).unwrap().unwrap().0, kind::LISTEN_UNIX);
        assert_eq!(&connect[5..], &listen[5..]);
    }

    #[test]
    fn kept_sessions_and_reattaches_round_trip() {
        let keep = Keep {
            id: "0123456789abcdef0123456789abcdef".into(),
            grace_secs: 60,
        };
        for (pty, pipes) in [(Some((80, 24)), false), (None, true), (None, false)] {
            let spawn = Spawn {
                argv: vec!["/bin/sh".into()],
                env: vec!["TERM=xterm".into()],
                cwd: "/home/a".into(),
                uid: 1000,
                gid: 100,
                pty,
                pipes,
                keep: Some(keep.clone()),
            };
            let frame = Request::Spawn(spawn.clone()).encode();
            // A kind of its own: a helper that predates it refuses it recognisably
            // rather than starting a process it would not keep.
            assert_eq!(split_frame(&frame).unwrap().unwrap().0, kind::SPAWN_KEPT);
            round_trip(Request::Spawn(spawn));
        }
        round_trip(Request::Reattach(Reattach {
            id: keep.id.clone(),
            output_offset: u64::MAX - 3,
        }));
        // Ids are the agent's random ones: no path, no NUL, no empty one.
        for bad in ["", "short", "../../etc/passwd/aaaaaaaa", &"a".repeat(65)] {
            assert!(!valid_session_id(bad), "{bad}");
            let frame = Request::Reattach(Reattach {
                id: bad.to_owned(),
                output_offset: 0,
            })
            .encode();
            let (k, payload, _) = split_frame(&frame).unwrap().unwrap();
            assert!(Request::decode(k, payload).is_err(), "{bad}");
        }
        let attached = Attached {
            pid: 42,
            pty: true,
            counted: true,
            lost: 7,
            input_offset: 1 << 40,
        };
        assert_eq!(Attached::decode(&attached.encode()).unwrap(), attached);
        assert!(Attached::decode(&attached.encode()[..20]).is_err());
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
