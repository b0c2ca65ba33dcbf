//! The agent's side of labssh-init, the helper running as PID 1 in containers created
//! for it: spawning processes, opening TCP connections, resolving names and listening
//! inside the container, over its unix socket.
//!
//! The socket lives on a small tmpfs private to the container, at [`SOCKET_PATH`].
//! Root in a root environment can delete, rename or replace anything there, so the
//! agent trusts no path: it reaches the socket through the container's init process
//! (`/proc/PID/root`, a descriptor bound to that process, so a recycled pid leads
//! nowhere), resolves the path inside the container's root with no symlink followed
//! at all, requires a socket at the end, and before it sends a byte checks that the
//! listener is that init process (SO_PEERCRED). Anything else is [`HelperError::Tampered`]:
//! refused, logged, and the container's helper restored by the caller.
//!
//! One connection per request; the protocol is `labssh_helper_proto::wire`.

mod process;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UnixStream};

use labssh_helper_proto::wire;

use super::netns;
use super::{Process, RunAs, SpawnSpec};

pub use wire::SOCKET_NAME;

/// Where labssh-init listens inside every container created for it: on the tmpfs the
/// agent mounts at `/.labssh/run`.
pub const SOCKET_PATH: &str = "/.labssh/run/helper.sock";

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

/// Why the helper could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelperError {
    /// Nothing usable answers: no socket (yet), the container's init has gone, an old
    /// helper speaking another protocol version or predating the request. Nothing was
    /// started; the helper must be restored before it can serve.
    #[error("{0}")]
    Unavailable(String),
    /// What answers at the socket's path is not the container's own labssh-init: a
    /// symlink, something that is not a socket, or a socket another process made.
    /// Not a byte was sent to it.
    #[error("{0}")]
    Tampered(String),
    /// The helper tried and failed (e.g. the program does not exist): final.
    #[error("{0}")]
    Failed(String),
}

/// Why a connection to the helper could not be made.
#[derive(Debug)]
enum ConnectError {
    /// Nothing listens there yet: the helper of a container that just started is about
    /// to bind its socket.
    Absent(io::Error),
    /// Anything else; final for this attempt.
    Helper(HelperError),
}

/// One container's helper, reached through the container's init process.
#[derive(Debug, Clone)]
pub struct HelperSocket {
    /// `/proc/PID` of the container's init, `O_PATH`: bound to that process, so lookups
    /// through it fail once it has exited, whoever gets its pid next.
    proc_dir: Arc<OwnedFd>,
    /// The init's pid as this agent sees it, which SO_PEERCRED must report for the
    /// socket's listener.
    pid: u32,
    /// The socket's absolute path inside the container: [`SOCKET_PATH`], but for tests.
    path: Arc<str>,
}

impl PartialEq for HelperSocket {
    fn eq(&self, other: &Self) -> bool {
        self.pid == other.pid
    }
}

impl Eq for HelperSocket {}

impl HelperSocket {
    /// The helper of the container with the full id `container_id`, whose init has
    /// host pid `pid` (checked: its cgroup names the container). Errors are
    /// student-readable.
    pub fn of_init(pid: u32, container_id: &str) -> Result<HelperSocket, String> {
        Ok(HelperSocket {
            proc_dir: Arc::new(netns::open_process(pid, container_id)?),
            pid,
            path: Arc::from(SOCKET_PATH),
        })
    }

    /// A socket in `dir` (absolute) served by this very process, for the unit tests'
    /// fake helpers.
    #[cfg(test)]
    fn in_this_process(dir: &std::path::Path) -> HelperSocket {
        let pid = std::process::id();
        let proc_dir = netns::open_at(
            None,
            &format!("/proc/{pid}"),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .unwrap();
        HelperSocket {
            proc_dir: Arc::new(proc_dir),
            pid,
            path: Arc::from(dir.join(SOCKET_NAME).to_str().unwrap()),
        }
    }

    /// The container's init, as this agent sees it.
    pub fn pid(&self) -> u32 {
        self.pid
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

    /// Connects (retrying until `ready_by` while nothing listens yet) and sends the
    /// request frame.
    async fn request(
        &self,
        request: &wire::Request,
        ready_by: tokio::time::Instant,
    ) -> Result<UnixStream, HelperError> {
        let mut pause = RETRY_START;
        let mut stream = loop {
            match self.connect().await {
                Ok(stream) => break stream,
                Err(ConnectError::Absent(_)) if tokio::time::Instant::now() + pause < ready_by => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
                Err(ConnectError::Absent(e)) => {
                    return Err(unavailable("connecting to the helper", &e))
                }
                Err(ConnectError::Helper(e)) => return Err(e),
            }
        };
        stream
            .write_all(&request.encode())
            .await
            .map_err(|e| unavailable("sending to the helper", &e))?;
        Ok(stream)
    }

    /// Connects and hangs up at once: is the container's own helper listening? `Ok(false)`
    /// while nothing listens yet.
    pub async fn probe(&self) -> Result<bool, HelperError> {
        match self.connect().await {
            Ok(_) => Ok(true),
            Err(ConnectError::Absent(_)) => Ok(false),
            Err(ConnectError::Helper(e)) => Err(e),
        }
    }

    /// A connection to the socket at [`SOCKET_PATH`] in the container, once it is sure
    /// to be the container's init's.
    async fn connect(&self) -> Result<UnixStream, ConnectError> {
        let file = self.socket_file()?;
        // Connecting through the descriptor reaches that very inode, whatever the path
        // names by now.
        let stream = UnixStream::connect(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::ConnectionRefused => ConnectError::Absent(e),
                _ => ConnectError::Helper(unavailable("connecting to the helper", &e)),
            })?;
        let peer = stream
            .peer_cred()
            .map_err(|e| ConnectError::Helper(unavailable("checking the helper", &e)))?
            .pid();
        if peer != Some(self.pid as i32) {
            return Err(ConnectError::Helper(HelperError::Tampered(format!(
                "the socket at {} was made by pid {}, not by the container's labssh-init (pid {})",
                self.path,
                peer.map_or("unknown".to_owned(), |p| p.to_string()),
                self.pid
            ))));
        }
        Ok(stream)
    }

    /// An `O_PATH` descriptor of the socket file, found beneath the init's root without
    /// following a single symlink.
    fn socket_file(&self) -> Result<OwnedFd, ConnectError> {
        let gone = |e: io::Error| {
            ConnectError::Helper(HelperError::Unavailable(format!(
                "the container's init (pid {}) has gone: {}",
                self.pid,
                netns::os_text(&e)
            )))
        };
        let root = netns::open_at(
            Some(&self.proc_dir),
            "root",
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(gone)?;
        let tampered =
            |why: &str| ConnectError::Helper(HelperError::Tampered(format!("{} {why}", self.path)));
        let file = match netns::open_no_symlinks(&root, &self.path) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(ConnectError::Absent(e))
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(tampered("is, or lies under, a symlink"))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(tampered("lies under something that is not a directory"))
            }
            Err(e) => return Err(ConnectError::Helper(unavailable("finding the helper", &e))),
        };
        // O_PATH | O_NOFOLLOW opens a symlink at the end of the path as itself.
        match netns::file_type(&file) {
            Ok(libc::S_IFSOCK) => Ok(file),
            Ok(libc::S_IFLNK) => Err(tampered("is, or lies under, a symlink")),
            Ok(_) => Err(tampered("is not a socket")),
            Err(e) => Err(ConnectError::Helper(unavailable("finding the helper", &e))),
        }
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
    use std::path::Path;
    use tokio::net::UnixListener;

    /// A fake helper that reads one request and answers with `frames` (or just hangs
    /// up when there are none); returns the request it got.
    fn fake_helper(
        dir: &Path,
        frames: Vec<u8>,
    ) -> (HelperSocket, tokio::task::JoinHandle<wire::Request>) {
        let socket = HelperSocket::in_this_process(dir);
        let listener = UnixListener::bind(&*socket.path).unwrap();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            let (kind, payload) = read_frame(&mut conn, &mut buf).await.unwrap();
            conn.write_all(&frames).await.unwrap();
            wire::Request::decode(kind, &payload).unwrap()
        });
        (socket, task)
    }

    #[tokio::test]
    async fn only_a_socket_of_the_expected_process_is_spoken_to() {
        let dir = tempfile::tempdir().unwrap();
        let socket = HelperSocket::in_this_process(dir.path());
        // Nothing there yet: still starting.
        assert_eq!(socket.probe().await, Ok(false));
        // A regular file.
        std::fs::write(&*socket.path, b"").unwrap();
        let err = socket.probe().await.unwrap_err();
        assert!(
            matches!(&err, HelperError::Tampered(m) if m.contains("is not a socket")),
            "{err:?}"
        );
        std::fs::remove_file(&*socket.path).unwrap();
        // A symlink to a real listener elsewhere.
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("other.sock");
        let _other = UnixListener::bind(&target).unwrap();
        std::os::unix::fs::symlink(&target, &*socket.path).unwrap();
        let err = socket.probe().await.unwrap_err();
        assert!(
            matches!(&err, HelperError::Tampered(m) if m.contains("symlink")),
            "{err:?}"
        );
        std::fs::remove_file(&*socket.path).unwrap();
        // A symlinked directory on the way.
        let linked = HelperSocket {
            path: Arc::from(dir.path().join("via/helper.sock").to_str().unwrap()),
            ..socket.clone()
        };
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("via")).unwrap();
        std::fs::rename(&target, elsewhere.path().join(SOCKET_NAME)).unwrap();
        let err = linked.probe().await.unwrap_err();
        assert!(
            matches!(&err, HelperError::Tampered(m) if m.contains("symlink")),
            "{err:?}"
        );
        // A real socket, but its listener is not the process expected.
        let _listener = UnixListener::bind(&*socket.path).unwrap();
        assert_eq!(socket.probe().await, Ok(true));
        let impostor = HelperSocket {
            pid: 1,
            ..socket.clone()
        };
        let err = impostor.probe().await.unwrap_err();
        assert!(
            matches!(&err, HelperError::Tampered(m) if m.contains(&format!("made by pid {}", std::process::id()))),
            "{err:?}"
        );
        // And a request is refused the same way, before anything is sent.
        let err = impostor.lookup("x", 1, soon()).await.unwrap_err();
        assert!(matches!(err, HelperError::Tampered(_)), "{err:?}");
    }

    #[test]
    fn the_socket_path_is_where_init_is_told_to_listen() {
        assert_eq!(
            SOCKET_PATH,
            format!("{}/{SOCKET_NAME}", crate::backend::docker::RUN_DIR)
        );
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
