//! The agent's side of labssh-init, the helper running as PID 1 in containers created
//! for it: spawning processes and opening TCP connections over its unix socket.
//!
//! Runtime-neutral: all it needs is the socket's path on this host. One connection per
//! process or TCP connection; the protocol is `init/src/wire.rs`, compiled in here too.

mod process;
#[path = "../../../init/src/wire.rs"]
mod wire;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpStream, UnixStream};

use super::{Process, RunAs, SpawnSpec};

pub use wire::SOCKET_NAME;

/// The helper answers a spawn once the exec succeeded: a fork and an exec, or a failed
/// chdir; this only bounds a helper that is wedged.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// A CONNECT waits for the TCP handshake inside the container (the helper gives up
/// after 10 s per address).
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
    /// version, or a stopped container. Nothing was started; Docker exec may be tried.
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
        let stream = self.request(&request, ready_by).await?;
        let (kind, payload, fd) =
            tokio::time::timeout(CONNECT_REPLY_TIMEOUT, read_frame_with_fd(&stream))
                .await
                .map_err(|_| HelperError::Failed(format!("connecting to {host}:{port} timed out")))?
                .map_err(|e| unavailable("reading the helper's answer", &e))?;
        match (kind, fd) {
            (wire::kind::CONNECTED, Some(fd)) => {
                let std_stream = std::net::TcpStream::from(fd);
                std_stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(std_stream))
                    .map_err(|e| HelperError::Failed(format!("cannot use the connection: {e}")))
            }
            (wire::kind::ERROR, _) => Err(refusal(&payload)),
            (other, _) => Err(HelperError::Failed(format!(
                "unexpected answer {other:#x} from the helper"
            ))),
        }
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
/// agent, and Docker exec may still serve.
fn refusal(payload: &[u8]) -> HelperError {
    let message = String::from_utf8_lossy(payload).into_owned();
    if message.starts_with("protocol version") {
        HelperError::Unavailable(message)
    } else {
        HelperError::Failed(message)
    }
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
