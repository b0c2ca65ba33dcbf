//! Entering a running container from the agent itself: for containers without a
//! helper (`spawn = "exec"`, or created before labssh-init), for looking at a
//! container's files, and for finding a helper's socket safely (see `helper.rs`).
//!
//! The agent runs as root on the host. It opens the container's first process's
//! `/proc/PID` once, checks that this process is the container's (its cgroup names the
//! container id, so a recycled pid cannot lead elsewhere), and from that directory
//! takes:
//!
//! - the network namespace (`ns/net`): a short-lived thread of its own joins it with
//!   `setns` (which changes only the calling thread, never a tokio worker) and creates
//!   the socket there. A socket stays in the namespace it was made in, so the agent
//!   then connects, binds and accepts on it from anywhere;
//! - the root directory (`root`): the container's files are opened beneath it with
//!   `openat2(RESOLVE_IN_ROOT)`, so absolute symlinks and `..` inside the container
//!   resolve inside it, never on the host. Kernels without openat2 (before 5.6) get
//!   the same resolution done one component at a time in user space.

mod paths;
mod plain;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

// Name lookup as labssh-init does it, so both paths resolve alike.
use labssh_helper_proto::resolve;

pub use paths::{file_type, open_at, open_no_symlinks};
use paths::{is_executable, read_file, read_limited, MAX_FILE};
pub use plain::PlainFile;

/// How long one address gets to accept a connection (as in labssh-init).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pending connections a listener holds (as in labssh-init).
const BACKLOG: u32 = 128;

/// A running container as the host sees it: its network namespace and root.
#[derive(Clone)]
pub struct Container {
    /// `/proc/PID/ns/net`.
    net: Arc<OwnedFd>,
    /// `/proc/PID/root`, an `O_PATH` directory.
    root: Arc<OwnedFd>,
}

impl Container {
    /// The container whose first process has host pid `pid`, checked to belong to the
    /// container with the full id `id`. Errors are student-readable.
    pub fn open(pid: u32, id: &str) -> Result<Container, String> {
        let proc_dir = open_process(pid, id)?;
        let gone = |e: io::Error| {
            format!(
                "cannot enter the container (it may have just stopped): {}",
                os_text(&e)
            )
        };
        let net = open_at(Some(&proc_dir), "ns/net", libc::O_RDONLY).map_err(gone)?;
        let root =
            open_at(Some(&proc_dir), "root", libc::O_PATH | libc::O_DIRECTORY).map_err(gone)?;
        Ok(Container {
            net: Arc::new(net),
            root: Arc::new(root),
        })
    }

    /// Runs `f` on a new thread that first joins the container's network namespace;
    /// the thread ends with `f`.
    async fn in_netns<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let net = Arc::clone(&self.net);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("labssh-netns".into())
            .spawn(move || {
                // SAFETY: setns with a namespace descriptor; it changes only this
                // thread, which ends when `f` returns.
                let joined = unsafe { libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) };
                let result = if joined == 0 {
                    f()
                } else {
                    Err(io::Error::last_os_error())
                };
                let _ = tx.send(result);
            })?;
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread failed")))
    }

    /// A TCP socket of `addr`'s family, created inside the container's network.
    async fn socket(&self, addr: SocketAddr) -> io::Result<TcpSocket> {
        let domain = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        let fd = self
            .in_netns(move || {
                let flags = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
                // SAFETY: socket(2) with constant arguments.
                let fd = unsafe { libc::socket(domain, flags, 0) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: a descriptor we just created and own alone.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            })
            .await?;
        Ok(TcpSocket::from_std_stream(std::net::TcpStream::from(fd)))
    }

    /// Resolves `host` as the container would: address literals, its /etc/hosts
    /// (`localhost` even without one), then DNS to the nameservers of its
    /// /etc/resolv.conf, queried from inside its network. Every address gets `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let root = Arc::clone(&self.root);
        let host = host.to_owned();
        self.in_netns(move || {
            let hosts = read_file(&root, "/etc/hosts").unwrap_or_default();
            let resolv = read_file(&root, "/etc/resolv.conf").unwrap_or_default();
            Ok(resolve::lookup_with(&hosts, &resolv, &host, port))
        })
        .await
        .map_err(|e| format!("cannot look names up in the container: {}", os_text(&e)))?
    }

    /// The TCP sockets listening in the container's network, read from its socket
    /// tables by a thread inside it.
    pub async fn listening(&self) -> Result<Vec<SocketAddr>, String> {
        self.in_netns(|| labssh_helper_proto::sockets::read_listening("/proc/thread-self/net"))
            .await
            .map_err(|e| format!("cannot read the container's socket tables: {}", os_text(&e)))
    }

    /// A TCP connection from inside the container to the first of `addrs` that
    /// accepts within [`CONNECT_TIMEOUT`]; `target` is what the student asked for.
    pub async fn connect(&self, addrs: &[SocketAddr], target: &str) -> Result<TcpStream, String> {
        // The first failure is reported, as labssh-init does.
        let mut first = None;
        for &addr in addrs {
            let attempt = async {
                let socket = self.socket(addr).await?;
                match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
                    Ok(connected) => connected,
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection timed out",
                    )),
                }
            };
            match attempt.await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => {
                    first.get_or_insert_with(|| format!("{target} ({addr}): {}", os_text(&e)));
                }
            }
        }
        Err(first.unwrap_or_else(|| format!("{target}: no address to connect to")))
    }

    /// A socket listening on `addr` inside the container's network, made as
    /// labssh-init makes it: SO_REUSEADDR, IPv6 sockets only for IPv6, backlog 128.
    /// The error is the system's reason, e.g. "Address already in use".
    pub async fn listen(&self, addr: SocketAddr) -> Result<TcpListener, String> {
        let listen = async {
            let socket = self.socket(addr).await?;
            socket.set_reuseaddr(true)?;
            if addr.is_ipv6() {
                set_v6_only(&socket)?;
            }
            socket.bind(addr)?;
            socket.listen(BACKLOG)
        };
        listen.await.map_err(|e| os_text(&e))
    }

    /// The small regular file `path` (absolute in the container) with no symlink
    /// followed on the way, at most `limit` bytes of it; see [`plain::read_plain`].
    pub async fn read_plain(&self, path: String, limit: u64) -> io::Result<PlainFile> {
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || plain::read_plain(&root, &path, limit))
            .await
            .map_err(io::Error::other)?
    }

    /// The first of `candidates` (absolute paths in the container) that is a regular
    /// file with an execute bit, symlinks resolved inside the container.
    pub async fn find_executable(&self, candidates: Vec<String>) -> Option<String> {
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .find(|path| is_executable(&root, path))
        })
        .await
        .ok()
        .flatten()
    }
}

/// `/proc/PID` (an `O_PATH` directory) of the process with host pid `pid`, checked to be
/// in the container with the full id `id`: its cgroup names the container, so a pid the
/// container's process left behind and another process took cannot lead elsewhere. The
/// descriptor stays bound to that process. Errors are student-readable.
pub fn open_process(pid: u32, id: &str) -> Result<OwnedFd, String> {
    let gone = |e: io::Error| {
        format!(
            "cannot enter the container (it may have just stopped): {}",
            os_text(&e)
        )
    };
    let proc_dir = open_at(
        None,
        &format!("/proc/{pid}"),
        libc::O_PATH | libc::O_DIRECTORY,
    )
    .map_err(gone)?;
    let cgroup = open_at(Some(&proc_dir), "cgroup", libc::O_RDONLY)
        .and_then(|fd| read_limited(fd, MAX_FILE))
        .map_err(gone)?;
    if id.len() < 12 || !cgroup.contains(id) {
        return Err("cannot enter the container: its process changed (it may have just restarted); try again".to_owned());
    }
    Ok(proc_dir)
}

/// The text of an OS error without Rust's "(os error N)" suffix.
pub fn os_text(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Sets IPV6_V6ONLY, so `[::]` and `0.0.0.0` are separate listeners.
fn set_v6_only(socket: &TcpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a valid int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The addresses among `texts` (Docker's network settings), deduplicated, loopback and
/// unspecified ones left out.
pub fn usable_addresses<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = texts
        .into_iter()
        .filter_map(|t| t.trim().parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_docker() {
        assert_eq!(
            usable_addresses([
                "172.17.0.2",
                "",
                "172.17.0.2",
                "fd00::2",
                "::",
                "127.0.0.1",
                "x"
            ]),
            vec![
                "172.17.0.2".parse::<IpAddr>().unwrap(),
                "fd00::2".parse().unwrap()
            ]
        );
    }

    #[test]
    fn os_errors_read_plainly() {
        let e = io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(os_text(&e), "Address already in use");
    }

    #[test]
    fn pid_reuse_is_caught() {
        // This test's own process is in no container with such an id.
        let err = Container::open(std::process::id(), &"0".repeat(64))
            .err()
            .expect("not that container");
        assert!(err.contains("its process changed"), "{err}");
        let err = Container::open(u32::MAX - 1, &"0".repeat(64))
            .err()
            .expect("no such process");
        assert!(err.contains("may have just stopped"), "{err}");
    }
}
