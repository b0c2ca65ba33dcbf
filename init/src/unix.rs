//! CONNECT_UNIX and LISTEN_UNIX: unix sockets inside the container (`ssh -L
//! port:/path` and `ssh -R /path:host:port`), made or reached as the student.
//!
//! Each runs in a forked worker like CONNECT, and the worker takes the student's
//! groups, gid and uid before it touches the path: the container's file permissions
//! then decide what the student may reach or where they may create a socket, exactly
//! as for their own programs, and a socket they create is theirs. Under a umask of
//! 0177 a listening socket is created 0600, as OpenSSH's sshd makes them.
//!
//! A LISTEN_UNIX worker stays, holding only the agent's connection, until that
//! connection ends (the forward is cancelled, the SSH connection or the agent is
//! gone); it then removes the socket file if it is still the one it made, so no stale
//! file blocks the next `ssh -R` to the same path.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::child;
use crate::connect;
use crate::creds::{Authority, Creds};
use crate::sys;
use labssh_helper_proto::wire::{kind, UnixSocket, MAX_SOCKET_PATH};

/// Pending connections the kernel holds for the agent, as for TCP listeners.
const BACKLOG: libc::c_int = 128;
/// Leaves a new socket file readable and writable by its owner alone.
const SOCKET_UMASK: libc::mode_t = 0o177;

/// Answers a CONNECT_UNIX from a forked worker.
pub fn connect(conn: OwnedFd, request: UnixSocket, authority: &Authority) {
    let authority = authority.clone();
    connect::in_worker(conn, |conn| {
        match as_student(&request, &authority).and_then(|()| open_stream(&request.path)) {
            Ok(stream) => connect::send_fd(conn, kind::CONNECTED, &stream),
            Err(message) => connect::reply_error(conn, &message),
        }
    });
}

/// Answers a LISTEN_UNIX from a forked worker, which then waits for the agent to
/// hang up and removes the socket file.
pub fn listen(conn: OwnedFd, request: UnixSocket, authority: &Authority) {
    let authority = authority.clone();
    connect::in_worker(conn, |conn| {
        let (listener, made) =
            match as_student(&request, &authority).and_then(|()| bind(&request.path)) {
                Ok(bound) => bound,
                Err(message) => return connect::reply_error(conn, &message),
            };
        connect::send_fd(conn, kind::LISTENING, &listener);
        drop(listener);
        close_all_but(conn.as_raw_fd());
        wait_for_hang_up(conn);
        remove_if_ours(&request.path, made);
    });
}

/// Refuses a path the kernel could not take, in the student's words.
pub fn check_path(path: &str) -> Result<CString, String> {
    if !path.starts_with('/') {
        return Err(format!("socket path {path:?} is not absolute"));
    }
    if path.len() > MAX_SOCKET_PATH {
        return Err(format!(
            "socket path {path:?} is {} bytes long, more than the {MAX_SOCKET_PATH} a unix socket takes",
            path.len()
        ));
    }
    CString::new(path).map_err(|_| format!("socket path {path:?} contains a NUL byte"))
}

/// Becomes the student the request names (all their groups), in this worker only.
fn as_student(request: &UnixSocket, authority: &Authority) -> Result<(), String> {
    let creds = Creds::for_ids(request.uid, request.gid);
    authority.permits(&creds)?;
    child::take_creds(&creds)
        .map_err(|step| format!("cannot act as uid {}: {step} failed", request.uid))
}

/// A connected unix stream socket to `path`, close-on-exec.
fn open_stream(path: &str) -> Result<OwnedFd, String> {
    let c_path = check_path(path)?;
    let sock = socket().map_err(|e| described(&e))?;
    let (addr, len) = sockaddr(&c_path);
    // SAFETY: addr holds a sockaddr_un of the length given.
    sys::cvt(unsafe {
        libc::connect(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })
    .map_err(|e| described(&e))?;
    Ok(sock)
}

/// A unix socket bound at `path` and listening, and the (device, inode) of the file
/// it made.
fn bind(path: &str) -> Result<(OwnedFd, (u64, u64)), String> {
    let c_path = check_path(path)?;
    let sock = socket().map_err(|e| described(&e))?;
    let (addr, len) = sockaddr(&c_path);
    // SAFETY: umask and bind on a sockaddr_un of the length given; the umask is this
    // worker's own and it is single-threaded.
    let bound = unsafe {
        let previous = libc::umask(SOCKET_UMASK);
        let rc = libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        );
        let saved = io::Error::last_os_error();
        libc::umask(previous);
        if rc == -1 {
            Err(saved)
        } else {
            Ok(())
        }
    };
    bound.map_err(|e| described(&e))?;
    let made = identity(&c_path).map_err(|e| described(&e))?;
    // SAFETY: listen on a socket we own.
    sys::cvt(unsafe { libc::listen(sock.as_raw_fd(), BACKLOG) }).map_err(|e| described(&e))?;
    Ok((sock, made))
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments.
    let fd = sys::cvt(unsafe {
        libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
    })?;
    Ok(sys::owned(fd))
}

/// `path` (checked by [`check_path`]) as the kernel takes it.
fn sockaddr(path: &CString) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes();
    for (slot, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *slot = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    (addr, len as libc::socklen_t)
}

/// The (device, inode) of the file at `path`, not following a symlink.
fn identity(path: &CString) -> io::Result<(u64, u64)> {
    // SAFETY: stat is plain data; lstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a stat to fill.
    sys::cvt(unsafe { libc::lstat(path.as_ptr(), &mut st) })?;
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// The system's words (the agent's message names the path).
fn described(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => sys::errno_text(errno),
        None => e.to_string(),
    }
}

/// Closes every descriptor but `keep`: a long-lived worker must not hold the helper's
/// listening socket or other sessions' terminals and pipes open.
fn close_all_but(keep: RawFd) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => (0..1024).collect(),
    };
    for fd in fds.into_iter().filter(|&fd| fd != keep) {
        // SAFETY: closing descriptors this worker will never use again.
        unsafe { libc::close(fd) };
    }
}

/// Blocks until the agent closes its end (the agent never writes on it).
fn wait_for_hang_up(conn: &OwnedFd) {
    let mut buf = [0u8; 64];
    loop {
        match sys::retry(|| sys::read(conn, &mut buf)) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Removes the socket file at `path` unless someone replaced it since.
fn remove_if_ours(path: &str, made: (u64, u64)) {
    let Ok(c_path) = CString::new(path) else {
        return;
    };
    if identity(&c_path).ok() == Some(made) {
        // SAFETY: a NUL-terminated path.
        unsafe { libc::unlink(c_path.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn paths_the_kernel_cannot_take_are_refused_in_words() {
        assert!(check_path("run/x.sock")
            .unwrap_err()
            .contains("not absolute"));
        let long = format!("/{}", "a".repeat(MAX_SOCKET_PATH));
        assert!(check_path(&long).unwrap_err().contains("107"));
        let longest = format!("/{}", "a".repeat(MAX_SOCKET_PATH - 1));
        assert!(check_path(&longest).is_ok());
    }

    #[test]
    fn binds_0600_connects_and_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        let path = path.to_str().unwrap();
        let (listener, made) = bind(path).unwrap();
        let meta = std::fs::symlink_metadata(path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let listener = UnixListener::from(listener);
        let mut client = UnixStream::from(open_stream(path).unwrap());
        client.write_all(b"hi").unwrap();
        let (mut served, _) = listener.accept().unwrap();
        let mut buf = [0u8; 2];
        served.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        // A second listener on the same path, and a path with nothing there.
        assert!(bind(path).unwrap_err().ends_with("Address already in use"));
        let missing = dir.path().join("none.sock");
        let err = open_stream(missing.to_str().unwrap()).unwrap_err();
        assert!(err.ends_with("No such file or directory"), "{err}");
        // Removed only while it is the file this listener made.
        remove_if_ours(path, (made.0, made.1 + 1));
        assert!(std::fs::symlink_metadata(path).is_ok());
        remove_if_ours(path, made);
        assert!(std::fs::symlink_metadata(path).is_err());
    }
}
