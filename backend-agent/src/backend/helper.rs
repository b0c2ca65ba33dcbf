//! The agent's side of labssh-init, the helper running as PID 1 in containers created
//! for it: spawning processes, opening TCP connections, resolving names and listening
//! inside the container, over its unix socket.
//!
//! Runtime-neutral: all it needs is the socket's path on this host. One connection per
//! request; the protocol is `init/src/wire.rs`, compiled in here too.

mod process;
#[path = "../../../init/src/wire.rs"]
mod wire;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UnixStream};

use super::{Process, RunAs, SpawnSpec};

pub use wire::SOCKET_NAME;

/// The helper answers a spawn once the exec succeeded: a fork and an exec, or a failed
/// chdir; this only bounds a helper that is wedged.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// A CONNECT waits for the TCP handshake inside the container (the helper gives up
/// after 10 s per address); a LOOKUP for DNS (2 s per query and nameserver).
const CONNECT_REPLY_TIMEOUT: Duration = Duration::from_secs(60);
/// First pause between connection attempts while a just-started helper binds its
/// socket; doubles up to the cap.
const RETRY_START: Duration = Duration::from_millis(2);
/// Longest pause between connection attempts.
const RETRY_MAX: Duration = Duration::from_millis(100);
/// Unix socket paths longer than this do not fit in `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 107;

/// Why the helper could not do what was asked.
#[derive(Debug)]
pub enum HelperError {
    /// Nothing usable answers: no helper (yet), an old one speaking another protocol
    /// version or predating the request, or a stopped container. Nothing was started;
    /// Docker exec (or the agent itself) may be tried.
    Unavailable(String),
    /// The helper tried and failed (e.g. the program does not exist): final.
    Failed(String),
}

impl std::fmt::Display for HelperError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HelperError::Unavailable(m) | HelperError::Failed(m) => f.write_str(m),
        }
    }
}

/// One container's helper socket on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperSocket {
    /// `<dir>/helper.sock`, where `<dir>` is mounted into the container.
    pub path: PathBuf,
}

impl HelperSocket {
    /// The socket in the directory shared with a container.
    pub fn in_dir(dir: &Path) -> HelperSocket {
        HelperSocket {
            path: dir.join(SOCKET_NAME),
        }
    }

    /// Starts `spec` through the helper. Keeps trying to connect until `ready_by`
    /// while the helper may still be starting.
    pub async fn spawn(
        &self,
        spec: &SpawnSpec,
        ready_by: tokio::time::Instant,
    ) -> Result<Process, HelperError> {
        let (uid, gid) = match spec.run_as {
            RunAs::Root => (0, 0),
            RunAs::Ids { uid, gid } => (uid, gid),
        };
        let request = wire::Request::Spawn(wire::Spawn {
            argv: spec.argv.clone(),
            env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: spec.workdir.clone().unwrap_or_default(),
            uid,
            gid,
            pty: spec.pty.as_ref().map(|p| (p.cols, p.rows)),
        });
        let mut stream = self.request(&request, ready_by).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let reply = tokio::time::timeout(REPLY_TIMEOUT, read_frame(&mut stream, &mut buf)).await;
        let (kind, payload) = match reply {
            Err(_) => return Err(HelperError::Failed("the helper did not answer".to_owned())),
            Ok(Err(e)) => return Err(unavailable("reading the helper's answer", &e)),
            Ok(Ok(frame)) => frame,
        };
        match kind {
            wire::kind::STARTED => {
                let pid = wire::Reader(&payload).u32().unwrap_or(0);
                Ok(process::start(stream, buf, pid, spec.pty.is_some()))
            }
            wire::kind::ERROR => Err(refusal(&payload)),
            other => Err(HelperError::Failed(format!(
                "unexpected answer {other:#x} from the helper"
            ))),
        }
    }

    /// Opens a TCP connection to `host:port` from inside the container.
    pub async fn connect_tcp(
        &self,
        host: &str,
        port: u16,
        ready_by: tokio::time::Instant,
    ) -> Result<TcpStream, HelperError> {
        let request = wire::Request::Connect(wire::Connect {
            host: host.to_owned(),
            port,
        });
        let timed_out = format!("connecting to {host}:{port} timed out");
        let answer = self
            .ask(&request, ready_by, CONNECT_REPLY_TIMEOUT, &timed_out)
            .await?;
        match answer {
            (wire::kind::CONNECTED, _, Some(fd)) => {
                let std_stream = std::net::TcpStream::from(fd);
                std_stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(std_stream))
                    .map_err(|e| HelperError::Failed(format!("cannot use the connection: {e}")))
            }
            (kind, _, _) => Err(unexpected(kind)),
        }
    }

    /// Resolves `host` as the container does (its /etc/hosts, then DNS to the
    /// nameservers of its /etc/resolv.conf); every address comes with `port`.
    pub async fn lookup(
        &self,
        host: &str,
        port: u16,
        ready_by: tokio::time::Instant,
    ) -> Result<Vec<SocketAddr>, HelperError> {
        let request = wire::Request::Lookup(wire::Lookup {
            host: host.to_owned(),
            port,
        });
        let timed_out = format!("looking up {host} timed out");
        let answer = self
            .ask(&request, ready_by, CONNECT_REPLY_TIMEOUT, &timed_out)
            .await?;
        match answer {
            (wire::kind::ADDRESSES, payload, _) => wire::decode_addresses(&payload)
                .map_err(|e| HelperError::Failed(format!("bad answer from the helper: {e}"))),
            (kind, _, _) => Err(unexpected(kind)),
        }
    }

    /// A socket listening on `addr` inside the container's network namespace; the
    /// agent accepts on it directly. Port 0 lets the kernel pick; `local_addr` tells.
    pub async fn listen_tcp(
        &self,
        addr: SocketAddr,
        ready_by: tokio::time::Instant,
    ) -> Result<TcpListener, HelperError> {
        let request = wire::Request::Listen(wire::Listen {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
        let timed_out = format!("listening on {addr} timed out");
        let answer = self
            .ask(&request, ready_by, REPLY_TIMEOUT, &timed_out)
            .await?;
        match answer {
            (wire::kind::LISTENING, _, Some(fd)) => {
                let std_listener = std::net::TcpListener::from(fd);
                std_listener
                    .set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(std_listener))
                    .map_err(|e| HelperError::Failed(format!("cannot use the listener: {e}")))
            }
            (kind, _, _) => Err(unexpected(kind)),
        }
    }

    /// Sends a request answered by a single frame (and maybe a descriptor) and reads
    /// that answer; an ERROR frame becomes the error.
    async fn ask(
        &self,
        request: &wire::Request,
        ready_by: tokio::time::Instant,
        timeout: Duration,
        timed_out: &str,
    ) -> Result<(u8, Vec<u8>, Option<OwnedFd>), HelperError> {
        let stream = self.request(request, ready_by).await?;
        let (kind, payload, fd) = tokio::time::timeout(timeout, read_frame_with_fd(&stream))
            .await
            .map_err(|_| HelperError::Failed(timed_out.to_owned()))?
            .map_err(|e| unavailable("reading the helper's answer", &e))?;
        if kind == wire::kind::ERROR {
            return Err(refusal(&payload));
        }
        Ok((kind, payload, fd))
    }

    /// Connects (retrying until `ready_by`) and sends the request frame.
    async fn request(
        &self,
        request: &wire::Request,
        ready_by: tokio::time::Instant,
    ) -> Result<UnixStream, HelperError> {
        let mut pause = RETRY_START;
        let mut stream = loop {
            match self.connect().await {
                Ok(stream) => break stream,
                // The socket is not there yet, or is an earlier run's: the helper of a
                // container that just started is about to bind it.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) && tokio::time::Instant::now() + pause < ready_by =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
                Err(e) => return Err(unavailable("connecting to the helper", &e)),
            }
        };
        stream
            .write_all(&request.encode())
            .await
            .map_err(|e| unavailable("sending to the helper", &e))?;
        Ok(stream)
    }

    /// Connects and hangs up at once: does the helper accept connections yet?
    pub async fn probe(&self) -> io::Result<()> {
        self.connect().await.map(drop)
    }

    async fn connect(&self) -> io::Result<UnixStream> {
        if self.path.as_os_str().len() <= MAX_SOCKET_PATH {
            return UnixStream::connect(&self.path).await;
        }
        // Too long for sockaddr_un: reach it through the directory's descriptor.
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let dir = std::fs::File::open(dir)?;
        let short = format!("/proc/self/fd/{}/{SOCKET_NAME}", dir.as_raw_fd());
        UnixStream::connect(short).await
    }
}

fn unavailable(what: &str, e: &io::Error) -> HelperError {
    HelperError::Unavailable(format!("{what}: {e}"))
}

/// An ERROR frame: a version refusal means this helper predates (or postdates) the
/// agent, and Docker exec may still serve; so does a helper that predates the request.
fn refusal(payload: &[u8]) -> HelperError {
    let message = String::from_utf8_lossy(payload).into_owned();
    if message.starts_with("protocol version") {
        HelperError::Unavailable(message)
    } else if message.starts_with(wire::UNEXPECTED_KIND) {
        HelperError::Unavailable(format!(
            "this container's labssh-init is older than the agent and cannot do this ({message}); it is updated when the container is recreated"
        ))
    } else {
        HelperError::Failed(message)
    }
}

/// An answer of the wrong kind, or without the descriptor it should carry.
fn unexpected(kind: u8) -> HelperError {
    HelperError::Failed(format!(
        "unexpected answer {kind:#x} from the helper (or its descriptor is missing)"
    ))
}

/// Reads one frame, keeping bytes past it in `buf`.
async fn read_frame(stream: &mut UnixStream, buf: &mut BytesMut) -> io::Result<(u8, Vec<u8>)> {
    loop {
        let split = wire::split_frame(buf).map_err(io::Error::other)?;
        if let Some((kind, payload, used)) = split {
            let frame = (kind, payload.to_vec());
            buf.advance(used);
            return Ok(frame);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the helper closed the connection",
            ));
        }
    }
}

/// Reads the single frame of a CONNECT answer and the descriptor sent with it.
async fn read_frame_with_fd(stream: &UnixStream) -> io::Result<(u8, Vec<u8>, Option<OwnedFd>)> {
    let mut buf = Vec::new();
    let mut fd = None;
    loop {
        if let Some((kind, payload, _)) = wire::split_frame(&buf).map_err(io::Error::other)? {
            return Ok((kind, payload.to_vec(), fd));
        }
        stream.readable().await?;
        let mut chunk = [0u8; 4096];
        let read = stream.try_io(Interest::READABLE, || {
            recv_with_fd(stream.as_raw_fd(), &mut chunk)
        });
        match read {
            Ok((0, _)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the helper closed the connection",
                ))
            }
            Ok((n, got)) => {
                buf.extend_from_slice(&chunk[..n]);
                if got.is_some() {
                    fd = got;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// One `recvmsg`, taking any descriptor passed with the bytes (close-on-exec).
fn recv_with_fd(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64 keeps the control buffer aligned for cmsghdr; room for a few descriptors.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; iov and control outlive the call and their lengths
    // are given; the kernel writes at most msg_controllen bytes of control data.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut fd = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - (data as usize - cmsg as usize))
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    // The first is the connection; any others are closed on drop.
                    let owned = OwnedFd::from_raw_fd(raw);
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n as usize, fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake helper that reads one request and answers with `frames` (or just hangs
    /// up when there are none); returns the request it got.
    fn fake_helper(
        dir: &Path,
        frames: Vec<u8>,
    ) -> (HelperSocket, tokio::task::JoinHandle<wire::Request>) {
        let socket = HelperSocket::in_dir(dir);
        let listener = UnixListener::bind(&socket.path).unwrap();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            let (kind, payload) = read_frame(&mut conn, &mut buf).await.unwrap();
            conn.write_all(&frames).await.unwrap();
            wire::Request::decode(kind, &payload).unwrap()
        });
        (socket, task)
    }

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn lookups_bring_addresses_back() {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<SocketAddr> =
            vec!["10.0.0.9:80".parse().unwrap(), "[::1]:80".parse().unwrap()];
        let mut frames = Vec::new();
        wire::put_frame(
            &mut frames,
            wire::kind::ADDRESSES,
            &wire::encode_addresses(&addrs),
        );
        let (socket, served) = fake_helper(dir.path(), frames);
        assert_eq!(socket.lookup("db", 80, soon()).await.unwrap(), addrs);
        assert_eq!(
            served.await.unwrap(),
            wire::Request::Lookup(wire::Lookup {
                host: "db".into(),
                port: 80
            })
        );
    }

    #[tokio::test]
    async fn a_helper_predating_the_request_is_unavailable_not_silent() {
        // What every labssh-init before LOOKUP and LISTEN answers to them.
        let dir = tempfile::tempdir().unwrap();
        let mut frames = Vec::new();
        wire::put_frame(
            &mut frames,
            wire::kind::ERROR,
            b"unexpected request kind 0x8",
        );
        let (socket, _served) = fake_helper(dir.path(), frames);
        let addr = "127.0.0.1:0".parse().unwrap();
        match tokio::time::timeout(Duration::from_secs(5), socket.listen_tcp(addr, soon())).await {
            Ok(Err(HelperError::Unavailable(m))) => {
                assert!(m.contains("older than the agent"), "{m}")
            }
            Ok(other) => panic!("{:?}", other.map(|_| ())),
            Err(_) => panic!("no answer in time"),
        }
    }

    #[tokio::test]
    async fn refusals_and_hang_ups_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut frames = Vec::new();
        wire::put_frame(
            &mut frames,
            wire::kind::ERROR,
            b"cannot resolve \"x\" in the container",
        );
        let (socket, _served) = fake_helper(dir.path(), frames);
        match socket.lookup("x", 1, soon()).await {
            Err(HelperError::Failed(m)) => assert!(m.contains("cannot resolve"), "{m}"),
            other => panic!("{other:?}"),
        }
        // A helper that closes without answering.
        let dir = tempfile::tempdir().unwrap();
        let (socket, _served) = fake_helper(dir.path(), Vec::new());
        match socket.lookup("x", 1, soon()).await {
            Err(HelperError::Unavailable(m)) => assert!(m.contains("closed"), "{m}"),
            other => panic!("{other:?}"),
        }
        // An answer of the wrong kind.
        let dir = tempfile::tempdir().unwrap();
        let mut frames = Vec::new();
        wire::put_frame(&mut frames, wire::kind::CONNECTED, &[]);
        let (socket, _served) = fake_helper(dir.path(), frames);
        match socket.lookup("x", 1, soon()).await {
            Err(HelperError::Failed(m)) => assert!(m.contains("unexpected answer"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
