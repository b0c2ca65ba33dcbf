//! CONNECT, LOOKUP and LISTENERS: a TCP connection opened inside the container's
//! network namespace and handed to the agent as a descriptor, so the bytes never pass
//! through the helper; a name resolved as the container would; and the sockets that
//! listen in it.
//!
//! Resolving and connecting can block for seconds, so each request runs in a forked
//! copy of the helper (the helper has no threads, which keeps `fork` safe for spawns).

use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use crate::sys;
use labssh_helper_proto::wire::{self, kind, Connect, Lookup};

/// How long one address gets to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `request` on `conn` from a forked worker; the helper reaps it like any
/// orphan. The parent's copy of `conn` is closed when this returns.
pub fn start(conn: OwnedFd, request: Connect) {
    in_worker(conn, |conn| match open(&request) {
        Ok(stream) => send_fd(conn, kind::CONNECTED, &stream),
        Err(message) => reply_error(conn, &message),
    });
}

/// Answers a LOOKUP from a forked worker, like [`start`].
pub fn lookup(conn: OwnedFd, request: Lookup) {
    in_worker(conn, |conn| {
        match labssh_helper_proto::resolve::lookup(&request.host, request.port) {
            Ok(addrs) => {
                let mut frame = Vec::new();
                wire::put_frame(&mut frame, kind::ADDRESSES, &wire::encode_addresses(&addrs));
                let _ = sys::write_all(conn, &frame);
            }
            Err(message) => reply_error(conn, &message),
        }
    });
}

/// Answers a LISTENERS at once: the container's listening TCP sockets, from its own
/// socket tables (this process's network namespace is the container's). Reading them
/// does not block, and the answer is a few hundred bytes on a fresh connection, so no
/// worker is forked for it.
pub fn listeners(conn: &OwnedFd) {
    match labssh_helper_proto::sockets::read_listening("/proc/net") {
        Ok(addrs) => {
            let mut frame = Vec::new();
            wire::put_frame(&mut frame, kind::ADDRESSES, &wire::encode_addresses(&addrs));
            let _ = sys::write_all(conn, &frame);
        }
        Err(e) => reply_error(conn, &format!("cannot read the socket tables: {e}")),
    }
}

/// Runs `work` on `conn` (made blocking) in a forked copy of the helper, which then
/// leaves; the parent only closes its copy of `conn`.
pub fn in_worker(conn: OwnedFd, work: impl FnOnce(&OwnedFd)) {
    // SAFETY: the helper is single-threaded; the child leaves with _exit.
    match unsafe { libc::fork() } {
        -1 => reply_error(&conn, "cannot fork a worker in the container"),
        0 => {
            let _ = sys::set_nonblocking(&conn, false);
            work(&conn);
            // SAFETY: leaves the worker without running the helper's destructors.
            unsafe { libc::_exit(0) };
        }
        _ => {}
    }
}

/// Sends a frame of `kind` with no payload and `fd` attached; best effort.
pub fn send_fd(conn: &OwnedFd, kind: u8, fd: &impl AsRawFd) {
    let mut frame = Vec::new();
    wire::put_frame(&mut frame, kind, &[]);
    let _ = sys::send_with_fd(conn, &frame, fd.as_raw_fd());
}

fn open(request: &Connect) -> Result<TcpStream, String> {
    let target = format!("{}:{}", request.host, request.port);
    let addrs = labssh_helper_proto::resolve::lookup(&request.host, request.port)?;
    // The first address's failure is reported: the most preferred one, and for
    // `localhost` the IPv4 one ("refused") rather than an IPv6 one a container
    // without IPv6 cannot even try.
    let mut first = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => {
                first.get_or_insert_with(|| format!("{target} ({addr}): {e}"));
            }
        }
    }
    Err(first.unwrap_or_else(|| format!("{target}: no address to connect to")))
}

/// Sends an ERROR frame on a blocking write; best effort.
pub fn reply_error(conn: &OwnedFd, message: &str) {
    let mut frame = Vec::new();
    wire::put_frame(&mut frame, kind::ERROR, message.as_bytes());
    let _ = sys::set_nonblocking(conn, false);
    let _ = sys::write_all(conn, &frame);
}
