//! Thin wrappers over the system calls the helper makes, returning `io::Result`.
//!
//! Every descriptor the helper opens is close-on-exec, so a spawned process inherits
//! only the stdio it is given.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Turns a `-1` return into the thread's errno.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`] for calls returning `ssize_t`.
pub fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Retries a call interrupted by a signal.
pub fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Takes ownership of a descriptor a call just returned.
pub fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass descriptors they just opened and own nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// Sets or clears O_NONBLOCK.
pub fn set_nonblocking(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; no pointers.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) })?;
    Ok(())
}

/// One `read(2)`; `Ok(0)` is end of file.
pub fn read(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    cvt_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// One `write(2)`.
pub fn write(fd: &impl AsRawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    cvt_size(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
}

/// One `send(2)` without SIGPIPE, for the agent's socket.
pub fn send(fd: &impl AsRawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    cvt_size(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    })
}

/// Writes all of `buf` to a blocking descriptor.
pub fn write_all(fd: &impl AsRawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = retry(|| send_or_write(fd, buf))?;
        buf = &buf[n..];
    }
    Ok(())
}

fn send_or_write(fd: &impl AsRawFd, buf: &[u8]) -> io::Result<usize> {
    match send(fd, buf) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => write(fd, buf),
        other => other,
    }
}

/// Sends one frame with a descriptor attached (SCM_RIGHTS).
pub fn send_with_fd(sock: &impl AsRawFd, frame: &[u8], fd: RawFd) -> io::Result<()> {
    send_with_fds(sock, frame, &[fd])
}

/// Most descriptors one frame carries.
const MAX_FDS: usize = 4;

/// Sends one frame with up to [`MAX_FDS`] descriptors attached (SCM_RIGHTS), in order.
pub fn send_with_fds(sock: &impl AsRawFd, frame: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(!fds.is_empty() && fds.len() <= MAX_FDS && !frame.is_empty());
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    let fds_len = std::mem::size_of_val(fds) as u32;
    // u64 keeps the control buffer aligned for cmsghdr; 48 bytes hold one cmsghdr
    // (16) with MAX_FDS ints, rounded up.
    let mut control = [0u64; 6];
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(fds_len) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&control));
    // SAFETY: msghdr is plain data; every pointer set below outlives the call, and the
    // control buffer holds one cmsghdr with `fds.len()` ints (checked above).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fds_len) as _;
        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        for (i, fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(data.add(i), *fd);
        }
        let sent = retry(|| cvt_size(libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)))?;
        // The descriptors went with the first byte; finish the frame plainly.
        write_all(sock, &frame[sent..])
    }
}

/// The pid, as the helper's PID namespace sees it, of the process at the other end of
/// a unix socket; 0 when that process is outside the namespace.
pub fn peer_pid(sock: &impl AsRawFd) -> io::Result<libc::pid_t> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for getsockopt to fill.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.pid)
}

/// `kill(2)`, ignoring a process that is already gone.
pub fn kill(pid: libc::pid_t, signo: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, signo) };
}

/// The text of an errno value.
pub fn errno_text(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Prints a line to the helper's stderr, which is the container's log.
pub fn log(message: std::fmt::Arguments<'_>) {
    let line = format!("labssh-init: {message}\n");
    let _ = write_all(&std::io::stderr(), line.as_bytes());
}

/// Logs through [`log`] with `format!` syntax.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::sys::log(format_args!($($arg)*)) };
}

/// A C string from a Rust one that has been checked to hold no NUL.
pub fn cstring(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap_or_else(|_| c"?".to_owned())
}

/// A NULL-terminated pointer array over C strings, as execve wants; valid while
/// `strings` lives.
pub fn ptr_array(strings: &[std::ffi::CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// `/dev/ptmx`, the pseudo-terminal multiplexer.
pub const PTMX: &CStr = c"/dev/ptmx";
