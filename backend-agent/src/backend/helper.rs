//! The agent's side of labssh-init, the helper running as PID 1 in containers created
//! for it: spawning processes, opening TCP connections, resolving names, listening
//! inside the container and reaching or making unix sockets there, over its unix
//! socket.
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

mod frames;
#[cfg(test)]
mod handover_tests;
mod process;
mod socket;

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use labssh_helper_proto::wire;

use super::netns;
use super::{Process, RunAs, SpawnSpec};
use frames::{read_frame_with_fd, read_frame_with_fds};
use socket::ConnectError;

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
    /// This helper predates SPAWN_PIPES (it said so once): its processes' bytes are
    /// relayed through it without asking again.
    relays_only: Arc<AtomicBool>,
    /// This helper predates SPAWN_KEPT (it said so once): its sessions end with the
    /// agent, as before.
    keeps_nothing: Arc<AtomicBool>,
}

/// How a process without a terminal gets its stdin, stdout and stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipes {
    /// The helper hands its pipes to the agent, which reads and writes them itself;
    /// an older helper that cannot relays them instead.
    Handed,
    /// The helper relays every byte over its socket.
    Relayed,
}

impl Pipes {
    /// What the agent's `helper_pipes` asks for.
    pub fn configured(config: &crate::config::Config) -> Pipes {
        if config.helper_pipes {
            Pipes::Handed
        } else {
            Pipes::Relayed
        }
    }
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
            relays_only: Arc::default(),
            keeps_nothing: Arc::default(),
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
            relays_only: Arc::default(),
            keeps_nothing: Arc::default(),
        }
    }

    /// The container's init, as this agent sees it.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Starts `spec` through the helper. Keeps trying to connect until `ready_by`
    /// while the helper may still be starting. Without a terminal, `pipes` says
    /// whether the process's pipes are handed to the agent (the helper falling back to
    /// relaying when it predates that).
    pub async fn spawn(
        &self,
        spec: &SpawnSpec,
        ready_by: tokio::time::Instant,
        pipes: Pipes,
    ) -> Result<Process, HelperError> {
        let (uid, gid) = match spec.run_as {
            RunAs::Root => (0, 0),
            RunAs::Ids { uid, gid } => (uid, gid),
        };
        let hand_over = pipes == Pipes::Handed
            && spec.pty.is_none()
            && !self.relays_only.load(Ordering::Relaxed);
        let mut request = wire::Spawn {
            argv: spec.argv.clone(),
            env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: spec.workdir.clone().unwrap_or_default(),
            uid,
            gid,
            pty: spec.pty.as_ref().map(|p| (p.cols, p.rows)),
            pipes: hand_over,
            keep: spec
                .keep
                .clone()
                .filter(|_| !self.keeps_nothing.load(Ordering::Relaxed)),
        };
        if request.keep.is_some() {
            match self
                .spawn_as(request.clone(), ready_by, spec.pty.is_some())
                .await
            {
                Err(HelperError::Unavailable(m)) if m.contains(wire::UNEXPECTED_KIND) => {
                    tracing::debug!(
                        pid = self.pid,
                        "an older labssh-init: sessions end with the agent"
                    );
                    self.keeps_nothing.store(true, Ordering::Relaxed);
                    request.keep = None;
                }
                kept => return kept,
            }
        }
        if hand_over {
            match self.spawn_as(request.clone(), ready_by, false).await {
                Err(HelperError::Unavailable(m)) if m.contains(wire::UNEXPECTED_KIND) => {
                    tracing::debug!(pid = self.pid, "an older labssh-init: relaying");
                    self.relays_only.store(true, Ordering::Relaxed);
                    request.pipes = false;
                }
                handed => return handed,
            }
        }
        self.spawn_as(request, ready_by, spec.pty.is_some()).await
    }

    /// Sends one SPAWN or SPAWN_PIPES and takes its STARTED. After SPAWN_PIPES the
    /// answer comes with the process's stdin, stdout and stderr pipes, which must be
    /// pipes, open the right way round; anything else is refused (and dropping the
    /// connection hangs the process up).
    async fn spawn_as(
        &self,
        request: wire::Spawn,
        ready_by: tokio::time::Instant,
        tty: bool,
    ) -> Result<Process, HelperError> {
        let handed = request.pipes;
        let kept = request.keep.is_some();
        let stream = self
            .request(&wire::Request::Spawn(request), ready_by)
            .await?;
        let mut buf = BytesMut::with_capacity(4096);
        let (kind, payload, fds) = first_answer(&stream, &mut buf).await?;
        match kind {
            wire::kind::STARTED => {
                let pid = wire::Reader(&payload).u32().unwrap_or(0);
                if !handed {
                    return Ok(process::start(stream, buf, pid, tty, kept));
                }
                let pipes = handed_pipes(fds).map_err(|e| {
                    HelperError::Failed(format!("the helper handed over no usable pipes: {e}"))
                })?;
                Ok(process::start_with_pipes(stream, buf, pid, pipes, kept))
            }
            wire::kind::ERROR => Err(refusal(&payload)),
            other => Err(HelperError::Failed(format!(
                "unexpected answer {other:#x} from the helper"
            ))),
        }
    }

    /// Takes over the kept session `id` (its agent went away): its output from
    /// `output_offset` on comes first, then it goes on as a relayed session. What
    /// ATTACHED said comes with it.
    pub async fn reattach(
        &self,
        id: &str,
        output_offset: u64,
        ready_by: tokio::time::Instant,
    ) -> Result<(Process, wire::Attached), HelperError> {
        let request = wire::Request::Reattach(wire::Reattach {
            id: id.to_owned(),
            output_offset,
        });
        let stream = self.request(&request, ready_by).await?;
        let mut buf = BytesMut::with_capacity(4096);
        let (kind, payload, _) = first_answer(&stream, &mut buf).await?;
        match kind {
            wire::kind::ATTACHED => {
                let attached = wire::Attached::decode(&payload)
                    .map_err(|e| HelperError::Failed(format!("bad answer from the helper: {e}")))?;
                let process = process::start(stream, buf, attached.pid, attached.pty, true);
                Ok((process, attached))
            }
            wire::kind::ERROR => Err(refusal(&payload)),
            other => Err(unexpected(other)),
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
            (wire::kind::CONNECTED, _, Some(fd)) => nonblocking(fd)
                .and_then(|fd| TcpStream::from_std(fd.into()))
                .map_err(|e| HelperError::Failed(format!("cannot use the connection: {e}"))),
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

    /// The TCP sockets listening in the container, as labssh-init reads them from the
    /// container's socket tables; `Ok(None)` from a labssh-init that predates the
    /// request (the caller reads the tables itself).
    pub async fn listeners(
        &self,
        timeout: Duration,
    ) -> Result<Option<Vec<SocketAddr>>, HelperError> {
        let ready_by = tokio::time::Instant::now();
        let answer = self
            .ask(
                &wire::Request::Listeners,
                ready_by,
                timeout,
                "listing the listening sockets timed out",
            )
            .await;
        match answer {
            Ok((wire::kind::ADDRESSES, payload, _)) => wire::decode_addresses(&payload)
                .map(Some)
                .map_err(|e| HelperError::Failed(format!("bad answer from the helper: {e}"))),
            Ok((kind, _, _)) => Err(unexpected(kind)),
            Err(HelperError::Unavailable(m)) if m.contains(wire::UNEXPECTED_KIND) => Ok(None),
            Err(e) => Err(e),
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
            (wire::kind::LISTENING, _, Some(fd)) => nonblocking(fd)
                .and_then(|fd| TcpListener::from_std(fd.into()))
                .map_err(|e| HelperError::Failed(format!("cannot use the listener: {e}"))),
            (kind, _, _) => Err(unexpected(kind)),
        }
    }

    /// Connects to the unix socket at `path` inside the container as the student
    /// `run_as` names, so the socket file's permissions apply to them.
    pub async fn connect_unix(
        &self,
        path: &str,
        run_as: RunAs,
        ready_by: tokio::time::Instant,
    ) -> Result<UnixStream, HelperError> {
        let request = wire::Request::ConnectUnix(unix_socket(path, run_as));
        let timed_out = format!("connecting to {path} timed out");
        let answer = self
            .ask(&request, ready_by, REPLY_TIMEOUT, &timed_out)
            .await?;
        match answer {
            (wire::kind::CONNECTED, _, Some(fd)) => nonblocking(fd)
                .and_then(|fd| UnixStream::from_std(fd.into()))
                .map_err(|e| HelperError::Failed(format!("cannot use the connection: {e}"))),
            (kind, _, _) => Err(unexpected(kind)),
        }
    }

    /// A unix socket listening at `path` inside the container, made by the student
    /// `run_as` names (theirs, mode 0600). The helper removes the file once the
    /// returned [`SocketListener`] is dropped.
    pub async fn listen_unix(
        &self,
        path: &str,
        run_as: RunAs,
        ready_by: tokio::time::Instant,
    ) -> Result<SocketListener, HelperError> {
        let request = wire::Request::ListenUnix(unix_socket(path, run_as));
        let timed_out = format!("listening on {path} timed out");
        // The helper's connection stays open with the listener: its end removes the file.
        let (stream, answer) = self
            .ask_keeping(&request, ready_by, REPLY_TIMEOUT, &timed_out)
            .await?;
        match answer {
            (wire::kind::LISTENING, _, Some(fd)) => nonblocking(fd)
                .and_then(|fd| UnixListener::from_std(fd.into()))
                .map(|listener| SocketListener {
                    listener,
                    _helper: stream,
                })
                .map_err(|e| HelperError::Failed(format!("cannot use the listener: {e}"))),
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
        let (_, answer) = self
            .ask_keeping(request, ready_by, timeout, timed_out)
            .await?;
        Ok(answer)
    }

    /// [`HelperSocket::ask`], also returning the connection the answer came on, for
    /// a request whose effect lasts as long as that connection.
    async fn ask_keeping(
        &self,
        request: &wire::Request,
        ready_by: tokio::time::Instant,
        timeout: Duration,
        timed_out: &str,
    ) -> Result<(UnixStream, (u8, Vec<u8>, Option<OwnedFd>)), HelperError> {
        let stream = self.request(request, ready_by).await?;
        let (kind, payload, fd) = tokio::time::timeout(timeout, read_frame_with_fd(&stream))
            .await
            .map_err(|_| HelperError::Failed(timed_out.to_owned()))?
            .map_err(|e| unavailable("reading the helper's answer", &e))?;
        if kind == wire::kind::ERROR {
            return Err(refusal(&payload));
        }
        Ok((stream, (kind, payload, fd)))
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
}

/// A unix socket listening inside a container, and the helper's connection whose end
/// tells the helper to remove the socket file.
#[derive(Debug)]
pub struct SocketListener {
    /// Accepts the container's connections.
    pub listener: UnixListener,
    /// Held, never read or written, while the listener lives.
    _helper: UnixStream,
}

/// The wire request for a unix socket at `path`, acted on as `run_as`.
fn unix_socket(path: &str, run_as: RunAs) -> wire::UnixSocket {
    let (uid, gid) = match run_as {
        RunAs::Root => (0, 0),
        RunAs::Ids { uid, gid } => (uid, gid),
    };
    wire::UnixSocket {
        uid,
        gid,
        path: path.to_owned(),
    }
}

/// The three descriptors STARTED carries after SPAWN_PIPES, as tokio pipes: tokio
/// checks each is a FIFO opened for the direction it is used in, and makes it
/// non-blocking.
fn handed_pipes(fds: Vec<OwnedFd>) -> io::Result<process::Pipes> {
    let [stdin, stdout, stderr]: [OwnedFd; 3] = fds.try_into().map_err(|fds: Vec<_>| {
        io::Error::other(format!("{} descriptors instead of 3", fds.len()))
    })?;
    Ok(process::Pipes {
        stdin: tokio::net::unix::pipe::Sender::from_owned_fd(stdin)?,
        stdout: tokio::net::unix::pipe::Receiver::from_owned_fd(stdout)?,
        stderr: tokio::net::unix::pipe::Receiver::from_owned_fd(stderr)?,
    })
}

/// A socket the helper passed, made non-blocking for tokio.
/// The helper's answer to a process request (STARTED, ATTACHED or ERROR), with the
/// descriptors that came with it; bytes read past it stay in `buf`.
async fn first_answer(
    stream: &UnixStream,
    buf: &mut BytesMut,
) -> Result<(u8, Vec<u8>, Vec<OwnedFd>), HelperError> {
    match tokio::time::timeout(REPLY_TIMEOUT, read_frame_with_fds(stream, buf)).await {
        Err(_) => Err(HelperError::Failed("the helper did not answer".to_owned())),
        Ok(Err(e)) => Err(unavailable("reading the helper's answer", &e)),
        Ok(Ok(frame)) => Ok(frame),
    }
}

fn nonblocking(fd: OwnedFd) -> io::Result<OwnedFd> {
    rustix::io::ioctl_fionbio(&fd, true)?;
    Ok(fd)
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;
    use std::path::Path;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

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

    /// One frame of `kind` carrying `payload`, as the helper writes it.
    pub(super) fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut frames = Vec::new();
        wire::put_frame(&mut frames, kind, payload);
        frames
    }

    pub(super) fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn unix_socket_requests_carry_the_students_ids_and_bring_refusals_back() {
        let student = RunAs::Ids {
            uid: 1000,
            gid: 100,
        };
        let dir = tempfile::tempdir().unwrap();
        let (socket, served) =
            fake_helper(dir.path(), frame(wire::kind::ERROR, b"Permission denied"));
        match socket.connect_unix("/run/x.sock", student, soon()).await {
            Err(HelperError::Failed(m)) => assert_eq!(m, "Permission denied"),
            other => panic!("{other:?}"),
        }
        let asked = wire::UnixSocket {
            uid: 1000,
            gid: 100,
            path: "/run/x.sock".into(),
        };
        assert_eq!(served.await.unwrap(), wire::Request::ConnectUnix(asked));
        // LISTENING without the socket it should carry.
        let dir = tempfile::tempdir().unwrap();
        let (socket, served) = fake_helper(dir.path(), frame(wire::kind::LISTENING, &[]));
        match socket.listen_unix("/tmp/a.sock", RunAs::Root, soon()).await {
            Err(HelperError::Failed(m)) => assert!(m.contains("unexpected answer"), "{m}"),
            other => panic!("{other:?}"),
        }
        let asked = wire::UnixSocket {
            uid: 0,
            gid: 0,
            path: "/tmp/a.sock".into(),
        };
        assert_eq!(served.await.unwrap(), wire::Request::ListenUnix(asked));
        // A helper that predates the request: an old helper, not a failure.
        let dir = tempfile::tempdir().unwrap();
        let old = frame(wire::kind::ERROR, b"unexpected request kind 0xa");
        let (socket, _served) = fake_helper(dir.path(), old);
        match socket.listen_unix("/tmp/a.sock", student, soon()).await {
            Err(HelperError::Unavailable(m)) => assert!(m.contains("older than the agent"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn lookups_bring_addresses_back() {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<SocketAddr> =
            vec!["10.0.0.9:80".parse().unwrap(), "[::1]:80".parse().unwrap()];
        let (socket, served) = fake_helper(
            dir.path(),
            frame(wire::kind::ADDRESSES, &wire::encode_addresses(&addrs)),
        );
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
        let (socket, _served) = fake_helper(
            dir.path(),
            frame(wire::kind::ERROR, b"unexpected request kind 0x8"),
        );
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
        let (socket, _served) = fake_helper(
            dir.path(),
            frame(wire::kind::ERROR, b"cannot resolve \"x\" in the container"),
        );
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
        let (socket, _served) = fake_helper(dir.path(), frame(wire::kind::CONNECTED, &[]));
        match socket.lookup("x", 1, soon()).await {
            Err(HelperError::Failed(m)) => assert!(m.contains("unexpected answer"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
