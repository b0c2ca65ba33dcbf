//! CONNECT: a TCP connection opened inside the container's network namespace and
//! handed to the agent as a descriptor, so the bytes never pass through the helper.
//!
//! Resolving and connecting can block for seconds, so each request runs in a forked
//! copy of the helper (the helper has no threads, which keeps `fork` safe for spawns).

use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use crate::sys;
use crate::wire::{self, kind, Connect};

/// How long one address gets to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers `request` on `conn` from a forked worker; the helper reaps it like any
/// orphan. The parent's copy of `conn` is closed when this returns.
pub fn start(conn: OwnedFd, request: Connect) {
    // SAFETY: the helper is single-threaded; the child leaves with _exit.
    match unsafe { libc::fork() } {
        -1 => reply_error(&conn, "cannot fork a connection worker"),
        0 => {
            let _ = sys::set_nonblocking(&conn, false);
            match open(&request) {
                Ok(stream) => {
                    let mut frame = Vec::new();
                    wire::put_frame(&mut frame, kind::CONNECTED, &[]);
                    let _ = sys::send_with_fd(&conn, &frame, stream.as_raw_fd());
                }
                Err(message) => reply_error(&conn, &message),
            }
            // SAFETY: leaves the worker without running the helper's destructors.
            unsafe { libc::_exit(0) };
        }
        _ => {}
    }
}

fn open(request: &Connect) -> Result<TcpStream, String> {
    let target = format!("{}:{}", request.host, request.port);
    let addrs = crate::resolve::lookup(&request.host, request.port)?;
    let mut last = String::new();
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("{target} ({addr}): {e}"),
        }
    }
    Err(last)
}

/// Sends an ERROR frame on a blocking write; best effort.
pub fn reply_error(conn: &OwnedFd, message: &str) {
    let mut frame = Vec::new();
    wire::put_frame(&mut frame, kind::ERROR, message.as_bytes());
    let _ = sys::set_nonblocking(conn, false);
    let _ = sys::write_all(conn, &frame);
}
