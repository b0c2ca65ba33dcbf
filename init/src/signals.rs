//! Signals arrive on a signalfd: blocked, then read in the event loop like any input.
//!
//! Blocking matters for PID 1: the kernel drops signals that PID 1 has no handler for,
//! but a blocked signal is always queued, so `docker stop`'s TERM reaches the loop.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys::{self, cvt, owned};

/// Faults are the helper's own and must kill it; KILL and STOP cannot be caught; PIPE
/// stays ignored (writes report EPIPE instead).
const NOT_HANDLED: &[libc::c_int] = &[
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGABRT,
    libc::SIGPIPE,
];
/// Highest standard and real-time signal on Linux.
const MAX_SIGNAL: libc::c_int = 64;

/// The signals the helper handles, as a readable descriptor.
pub struct Signals {
    /// Non-blocking signalfd.
    fd: OwnedFd,
}

impl Signals {
    /// Blocks every signal the helper handles and opens a signalfd for them.
    pub fn block() -> io::Result<Signals> {
        // SAFETY: sigset manipulation on a local; sigprocmask and signalfd with valid
        // pointers.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signo in 1..=MAX_SIGNAL {
                if !NOT_HANDLED.contains(&signo) {
                    libc::sigaddset(&mut set, signo);
                }
            }
            cvt(libc::sigprocmask(
                libc::SIG_BLOCK,
                &set,
                std::ptr::null_mut(),
            ))?;
            let fd = cvt(libc::signalfd(
                -1,
                &set,
                libc::SFD_CLOEXEC | libc::SFD_NONBLOCK,
            ))?;
            Ok(Signals { fd: owned(fd) })
        }
    }

    /// The descriptor to poll.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Signal numbers that arrived since the last call.
    pub fn drain(&self) -> Vec<libc::c_int> {
        let mut got = Vec::new();
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        let mut buf = vec![0u8; size * 8];
        while let Ok(n) = sys::retry(|| sys::read(&self.fd, &mut buf)) {
            if n == 0 {
                break;
            }
            for info in buf[..n].chunks_exact(size) {
                // ssi_signo is the first u32 of signalfd_siginfo.
                got.push(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]) as libc::c_int);
            }
        }
        got
    }
}

/// Signals that stop the helper when it runs no main command (with one, they go to it
/// and its exit stops the helper).
pub fn is_stop_signal(signo: libc::c_int) -> bool {
    matches!(
        signo,
        libc::SIGTERM | libc::SIGINT | libc::SIGQUIT | libc::SIGHUP
    )
}
