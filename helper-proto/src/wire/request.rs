//! What the agent asks: the first frame of every connection.

use super::{kind, put_frame, Reader, HEADER_LEN, UNEXPECTED_KIND, VERSION};

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
    /// Without a terminal: the helper hands the agent its ends of the process's stdin,
    /// stdout and stderr pipes with STARTED ([`kind::SPAWN_PIPES`]), so their bytes skip
    /// the relay through the helper; the connection then carries only control frames
    /// and EXIT.
    pub pipes: bool,
    /// Keep the process for a re-attach when the agent's connection breaks
    /// ([`kind::SPAWN_KEPT`]); `None` hangs it up then, as helpers always did.
    pub keep: Option<Keep>,
}

/// How a session outlives its agent: the id the agent gave it, and how long
/// labssh-init keeps it while nobody is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    /// The session's id, [`valid_session_id`]; only a re-attach naming it reaches the
    /// session again.
    pub id: String,
    /// Seconds the process is kept after the connection breaks; then it is hung up.
    pub grace_secs: u32,
}

/// Whether `id` may name a session: 16 to 64 ASCII letters and digits (the agent's
/// are 32 hex digits of randomness).
pub fn valid_session_id(id: &str) -> bool {
    (16..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Re-attach to a kept session whose agent went away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reattach {
    /// The id the session was started with.
    pub id: String,
    /// How much of the session's output (stdout and stderr payload bytes, counted
    /// together from its start) already reached the student; what the helper still
    /// holds beyond it is sent again.
    pub output_offset: u64,
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

/// A unix socket inside the container, reached or made as a student: the helper's
/// worker takes `uid` and `gid` (and their groups) before it touches `path`, so the
/// file system's permissions decide, as they would for the student's own programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    /// User id to act as.
    pub uid: u32,
    /// Group id to act as.
    pub gid: u32,
    /// Absolute path inside the container, at most [`super::MAX_SOCKET_PATH`] bytes.
    pub path: String,
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
    /// Connect to a unix socket.
    ConnectUnix(UnixSocket),
    /// Listen on a unix socket; the socket file is removed when this connection ends.
    ListenUnix(UnixSocket),
    /// Take a kept session over.
    Reattach(Reattach),
    /// The TCP sockets listening in the container's network namespace.
    Listeners,
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
                match &s.keep {
                    Some(keep) => {
                        p.push(s.pipes as u8);
                        put_str(&mut p, &keep.id);
                        p.extend_from_slice(&keep.grace_secs.to_be_bytes());
                        kind::SPAWN_KEPT
                    }
                    None if s.pipes => kind::SPAWN_PIPES,
                    None => kind::SPAWN,
                }
            }
            Request::Reattach(r) => {
                put_str(&mut p, &r.id);
                p.extend_from_slice(&r.output_offset.to_be_bytes());
                kind::REATTACH
            }
            Request::Connect(c) => {
                p.extend_from_slice(&c.port.to_be_bytes());
                put_str(&mut p, &c.host);
                kind::CONNECT
            }
            Request::Listeners => kind::LISTENERS,
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
            Request::ConnectUnix(u) => {
                put_unix(&mut p, u);
                kind::CONNECT_UNIX
            }
            Request::ListenUnix(u) => {
                put_unix(&mut p, u);
                kind::LISTEN_UNIX
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
            kind::SPAWN | kind::SPAWN_PIPES | kind::SPAWN_KEPT => {
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
                let pty = (flag & 1 == 1).then_some((cols, rows));
                let (pipes, keep) = match kind {
                    kind::SPAWN_KEPT => {
                        let pipes = r.u8()? & 1 == 1;
                        let id = r.string()?;
                        let grace_secs = r.u32()?;
                        if !valid_session_id(&id) {
                            return Err("bad session id".to_owned());
                        }
                        (pipes, Some(Keep { id, grace_secs }))
                    }
                    _ => (kind == kind::SPAWN_PIPES, None),
                };
                if pipes && pty.is_some() {
                    return Err("a terminal's process has no pipes to hand over".to_owned());
                }
                Request::Spawn(Spawn {
                    argv,
                    env,
                    cwd,
                    uid,
                    gid,
                    pty,
                    pipes,
                    keep,
                })
            }
            kind::REATTACH => {
                let id = r.string()?;
                let output_offset = r.u64()?;
                if !valid_session_id(&id) {
                    return Err("bad session id".to_owned());
                }
                Request::Reattach(Reattach { id, output_offset })
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
            kind::CONNECT_UNIX => Request::ConnectUnix(r.unix()?),
            kind::LISTENERS => Request::Listeners,
            kind::LISTEN_UNIX => Request::ListenUnix(r.unix()?),
            other => return Err(format!("{UNEXPECTED_KIND} {other:#x}")),
        };
        if !r.0.is_empty() {
            return Err("trailing bytes after the request".to_owned());
        }
        Ok(request)
    }
}

fn put_unix(out: &mut Vec<u8>, u: &UnixSocket) {
    out.extend_from_slice(&u.uid.to_be_bytes());
    out.extend_from_slice(&u.gid.to_be_bytes());
    put_str(out, &u.path);
}

impl Reader<'_> {
    fn unix(&mut self) -> Result<UnixSocket, String> {
        let uid = self.u32()?;
        let gid = self.u32()?;
        let path = self.string()?;
        Ok(UnixSocket { uid, gid, path })
    }
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
