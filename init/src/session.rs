//! One spawned process and the agent connection that controls it.
//!
//! Every descriptor is non-blocking and driven by the server's poll loop. Output is
//! read only while less than [`OUT_HIGH`] bytes wait for the agent, so a slow agent
//! (a slow SSH client behind it) holds the process back instead of growing the
//! helper. Stdin is bounded by the credit the agent gets back through WINDOW frames.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::buffer::Buffer;
use crate::child;
use crate::sys;
use labssh_helper_proto::wire::{self, kind, Exit};

mod input;
mod kept;

use kept::Kept;

/// Output waiting for the agent beyond which the process's output is not read.
const OUT_HIGH: usize = 64 * 1024;
/// Size of one read of process output (and so the largest output frame), and of one
/// read from the agent's connection.
const READ_CHUNK: usize = 64 * 1024;
/// Stdin held beyond the granted window before the agent counts as misbehaving.
const STDIN_SLACK: usize = 64 * 1024;
/// Stdin credit returned in batches of at least this much (or when stdin drains).
const WINDOW_BATCH: u32 = wire::STDIN_WINDOW / 4;
/// After a hangup, how long the process gets before it is killed.
const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// After a terminal's process exits, how long output may still come from processes it
/// left holding the terminal; it normally ends at once.
const PTY_DRAIN: Duration = Duration::from_millis(200);
/// A session quiet this long gives its empty buffers back (an idle shell then costs
/// the helper its descriptors and this struct, not 64 KiB buffers); one that is busy
/// keeps them, so bulk data does not allocate per read.
const IDLE_TRIM: Duration = Duration::from_secs(1);

/// What to poll a session's descriptors for.
pub struct Interest {
    /// (descriptor, events) pairs.
    pub fds: Vec<(RawFd, libc::c_short, Source)>,
}

/// Which of a session's descriptors a poll result is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The agent's connection.
    Conn,
    /// The child's report on its exec.
    Report,
    /// The process's stdin (or the terminal, for writing).
    Stdin,
    /// The process's stdout (or the terminal).
    Stdout,
    /// The process's stderr.
    Stderr,
}

/// A running (or just exited) process and its agent connection.
pub struct Session {
    /// The agent's connection; lives as long as the session, but for a kept one
    /// while nobody is attached.
    conn: Option<OwnedFd>,
    /// Bytes from the agent not yet parsed into frames.
    inbuf: Buffer,
    /// Frames for the agent not yet written.
    outbuf: Buffer,
    /// The process; the leader of its own session and process group.
    pub pid: libc::pid_t,
    /// Until the exec is confirmed: the child's report and the program's name. Nothing
    /// else is polled meanwhile, and STARTED goes out only after.
    starting: Option<(child::Started, String)>,
    /// Where stdin goes: the pipe, or a second descriptor of the terminal.
    stdin: Option<OwnedFd>,
    /// Stdin received but not yet written.
    stdin_buf: Buffer,
    /// The agent ended stdin; close it once `stdin_buf` is written.
    stdin_eof: bool,
    /// Stdin bytes passed on (or discarded) and not yet granted back.
    window_owed: u32,
    /// Stdout pipe, or the terminal.
    out: Option<OwnedFd>,
    /// Stderr pipe; `None` with a terminal.
    err: Option<OwnedFd>,
    /// The process has a terminal (`out` is its master side).
    pty: bool,
    /// Its pipes go to the agent with STARTED (SPAWN_PIPES): the helper then holds
    /// none of them and relays nothing, only signals and the exit.
    hand_over: bool,
    /// How the process ended, once reaped.
    pub status: Option<Exit>,
    /// The agent went away: output is discarded and the process has been hung up.
    agent_gone: bool,
    /// EXIT is queued; nothing follows it.
    exit_queued: bool,
    /// When a hung-up process gets killed.
    kill_at: Option<Instant>,
    /// When to stop waiting for the terminal after the process exited.
    drain_until: Option<Instant>,
    /// When the session last did anything; `None` once its buffers were trimmed
    /// since.
    active_at: Option<Instant>,
    /// A session started with SPAWN_KEPT, until RELEASE (or the end of its grace):
    /// what a re-attach needs.
    keep: Option<Kept>,
}

impl Session {
    /// A session for a forked child; STARTED (or ERROR) follows its exec, with the
    /// process's pipes when `hand_over` (which needs `err`: no terminal).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        conn: OwnedFd,
        inbuf: Vec<u8>,
        started: child::Started,
        program: String,
        stdin: OwnedFd,
        out: OwnedFd,
        err: Option<OwnedFd>,
        hand_over: bool,
        keep: Option<wire::Keep>,
    ) -> io::Result<Session> {
        for fd in [Some(&stdin), Some(&out), err.as_ref()]
            .into_iter()
            .flatten()
        {
            sys::set_nonblocking(fd, true)?;
        }
        let mut session = Session {
            conn: Some(conn),
            inbuf: Buffer::from(inbuf),
            outbuf: Buffer::default(),
            pid: started.pid,
            starting: Some((started, program)),
            pty: err.is_none(),
            hand_over: hand_over && err.is_some(),
            stdin: Some(stdin),
            stdin_buf: Buffer::default(),
            stdin_eof: false,
            window_owed: 0,
            out: Some(out),
            err,
            status: None,
            agent_gone: false,
            exit_queued: false,
            kill_at: None,
            drain_until: None,
            active_at: Some(Instant::now()),
            keep: keep.map(Kept::new),
        };
        session.parse_frames();
        Ok(session)
    }

    /// The descriptors to poll and for what.
    pub fn interest(&self) -> Interest {
        let mut fds = Vec::with_capacity(4);
        if let Some((started, _)) = &self.starting {
            fds.push((started.report.as_raw_fd(), libc::POLLIN, Source::Report));
            return Interest { fds };
        }
        if let (Some(conn), false) = (&self.conn, self.agent_gone) {
            let mut events = 0;
            if self.stdin_buf.len() <= wire::STDIN_WINDOW as usize + STDIN_SLACK {
                events |= libc::POLLIN;
            }
            if !self.outbuf.is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push((conn.as_raw_fd(), events, Source::Conn));
        }
        if let Some(stdin) = &self.stdin {
            if !self.stdin_buf.is_empty() {
                fds.push((stdin.as_raw_fd(), libc::POLLOUT, Source::Stdin));
            }
        }
        // Detached, output goes on into the kept history, the oldest dropped.
        let room = self.agent_gone || self.detached() || self.outbuf.len() < OUT_HIGH;
        if room {
            if let Some(out) = &self.out {
                fds.push((out.as_raw_fd(), libc::POLLIN, Source::Stdout));
            }
            if let Some(err) = &self.err {
                fds.push((err.as_raw_fd(), libc::POLLIN, Source::Stderr));
            }
        }
        Interest { fds }
    }

    /// Handles poll results for one of the descriptors.
    pub fn ready(&mut self, source: Source, revents: libc::c_short) {
        self.active_at = Some(Instant::now());
        match source {
            Source::Conn => {
                if revents & libc::POLLOUT != 0 {
                    self.flush();
                }
                if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.read_conn();
                }
            }
            Source::Report => self.check_start(),
            Source::Stdin => self.write_stdin(),
            Source::Stdout | Source::Stderr => {
                self.read_output(source);
            }
        }
        self.queue_exit();
        self.flush();
    }

    /// Reports the exec: STARTED, or ERROR and nothing more.
    fn check_start(&mut self) {
        let Some((started, program)) = &self.starting else {
            return;
        };
        match started.outcome(program) {
            None => {}
            Some(Ok(())) if self.hand_over => {
                self.starting = None;
                self.hand_pipes_over();
            }
            Some(Ok(())) => {
                self.starting = None;
                let pid = (self.pid as u32).to_be_bytes();
                self.outbuf.put_frame(kind::STARTED, &pid);
            }
            Some(Err(e)) => {
                self.starting = None;
                self.outbuf.put_frame(kind::ERROR, e.to_string().as_bytes());
                self.exit_queued = true;
                self.stdin = None;
                self.out = None;
                self.err = None;
            }
        }
    }

    /// STARTED with the process's stdin, stdout and stderr pipes attached, then the
    /// helper lets go of its own copies: from now on the agent writes and reads them
    /// itself, and end of file on each is the process's (and its children's) doing.
    /// Nothing else was queued before STARTED (stdin frames are not taken in this
    /// mode), so the frame is the first the agent reads.
    fn hand_pipes_over(&mut self) {
        debug_assert!(self.outbuf.is_empty());
        let (Some(stdin), Some(out), Some(err)) =
            (self.stdin.take(), self.out.take(), self.err.take())
        else {
            return self.hang_up();
        };
        // A kept session holds copies: if the agent goes, labssh-init reads and
        // writes the pipes itself until a re-attach.
        if let Some(keep) = &mut self.keep {
            match (stdin.try_clone(), out.try_clone(), err.try_clone()) {
                (Ok(i), Ok(o), Ok(e)) => keep.spare = Some((Some(i), o, e)),
                _ => crate::log!(
                    "session {}: cannot keep its pipes; it ends with its agent",
                    self.pid
                ),
            }
        }
        let mut frame = Vec::with_capacity(wire::HEADER_LEN + 4);
        wire::put_frame(&mut frame, kind::STARTED, &(self.pid as u32).to_be_bytes());
        let fds = [stdin.as_raw_fd(), out.as_raw_fd(), err.as_raw_fd()];
        // The connection's first bytes, into its empty buffer: they go at once. If they
        // cannot, the agent is treated as gone.
        let sent = match &self.conn {
            Some(conn) => sys::send_with_fds(conn, &frame, &fds).is_ok(),
            None => false,
        };
        if !sent {
            self.lost_agent();
        }
    }

    /// Reads what one output descriptor has; true when it gave bytes.
    fn read_output(&mut self, source: Source) -> bool {
        let fd = match source {
            Source::Stdout => &self.out,
            _ => &self.err,
        };
        let Some(fd) = fd else { return false };
        // Read in place, behind room for the frame header; a departed agent's output
        // is read the same way and not kept.
        let spare = self.outbuf.spare(wire::HEADER_LEN + READ_CHUNK);
        let (header, body) = spare.split_at_mut(wire::HEADER_LEN);
        match sys::retry(|| sys::read(fd, &mut body[..READ_CHUNK])) {
            Ok(n) if n > 0 => {
                let k = if source == Source::Stdout {
                    kind::STDOUT
                } else {
                    kind::STDERR
                };
                if let Some(keep) = &mut self.keep {
                    keep.record(k, &body[..n]);
                }
                if !self.agent_gone && self.conn.is_some() {
                    header.copy_from_slice(&wire::frame_header(k, n));
                    self.outbuf.commit(wire::HEADER_LEN + n);
                }
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            // End of file, or EIO from a terminal nobody holds any more.
            _ => {
                self.close_output(source);
                false
            }
        }
    }

    fn close_output(&mut self, source: Source) {
        match source {
            Source::Stdout => self.out = None,
            _ => self.err = None,
        }
        if self.pty && self.out.is_none() {
            self.stdin = None; // the same terminal
        }
    }

    /// Writes queued frames until the socket is full.
    pub fn flush(&mut self) {
        while !self.outbuf.is_empty() && !self.agent_gone {
            let Some(conn) = &self.conn else { return };
            match sys::send(conn, self.outbuf.as_slice()) {
                Ok(n) => {
                    self.outbuf.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.lost_agent(),
            }
        }
    }

    /// The agent's connection ended: a kept session waits for a re-attach, any other
    /// is hung up.
    fn lost_agent(&mut self) {
        if self.keep.is_some() && !self.agent_gone {
            self.detach();
        } else {
            self.hang_up();
        }
    }

    /// The agent is gone: hang the process's group up like a dropped terminal, kill it
    /// if it lingers, and discard its output from now on.
    fn hang_up(&mut self) {
        if self.agent_gone {
            return;
        }
        self.agent_gone = true;
        self.keep = None;
        self.conn = None;
        self.outbuf = Buffer::default();
        self.stdin = None;
        self.stdin_buf = Buffer::default();
        if self.status.is_none() {
            self.signal_group(libc::SIGHUP);
            self.kill_at = Some(Instant::now() + HANGUP_GRACE);
        } else {
            self.out = None;
            self.err = None;
        }
    }

    /// Signals the process's whole group (it leads its own), then wakes it if stopped.
    pub fn signal_group(&self, signo: libc::c_int) {
        if self.status.is_none() {
            sys::kill(-self.pid, signo);
            sys::kill(-self.pid, libc::SIGCONT);
        }
    }

    /// Records the process's exit (from the reaper).
    pub fn exited(&mut self, status: Exit, now: Instant) {
        self.status = Some(status);
        self.kill_at = None;
        if self.agent_gone {
            // Nobody will read the rest; do not wait for processes it left behind.
            // (Detached, a kept session reads on: a re-attach will want it.)
            self.out = None;
            self.err = None;
        } else if self.pty && self.out.is_some() {
            self.drain_until = Some(now + PTY_DRAIN);
        }
        self.queue_exit();
        self.flush();
    }

    /// Gives back the buffers of a session quiet for [`IDLE_TRIM`]; true when any
    /// storage was freed (the caller may then return memory to the system).
    pub fn trim_if_idle(&mut self, now: Instant) -> bool {
        match self.active_at {
            Some(at) if now.duration_since(at) >= IDLE_TRIM => {
                self.active_at = None;
                // Attached with nothing left to send, the agent has had the history
                // for a second: a quiet session keeps only its last screenful.
                let settled = self.conn.is_some() && self.outbuf.is_empty();
                let history = match &mut self.keep {
                    Some(keep) if settled => keep.trim_idle(),
                    _ => false,
                };
                let freed = [
                    self.inbuf.release_if_empty(),
                    self.outbuf.release_if_empty(),
                    self.stdin_buf.release_if_empty(),
                    history,
                ];
                freed.contains(&true)
            }
            _ => false,
        }
    }

    /// Acts on deadlines that passed.
    pub fn tick(&mut self, now: Instant) {
        if self.kill_at.is_some_and(|t| t <= now) {
            self.kill_at = None;
            self.signal_group(libc::SIGKILL);
        }
        if self.keep.as_ref().is_some_and(|k| k.expired(now)) {
            crate::log!(
                "session {}: nobody re-attached within its grace; hanging it up",
                self.pid
            );
            self.hang_up();
        }
        // (Output waits for STARTED, which waits for the exec report.)
        if self.starting.is_none() && self.drain_until.is_some_and(|t| t <= now) {
            self.drain_until = None;
            // Drain what is already there (boundedly: a child left behind may go on
            // writing), then let go of the terminal.
            for _ in 0..64 {
                let room = self.detached() || self.outbuf.len() < OUT_HIGH;
                if self.out.is_none() || self.agent_gone || !room {
                    break;
                }
                if !self.read_output(Source::Stdout) {
                    break;
                }
            }
            self.close_output(Source::Stdout);
            self.queue_exit();
            self.flush();
        }
    }

    /// The next deadline, for the poll timeout.
    pub fn deadline(&self) -> Option<Instant> {
        let trim = self.active_at.map(|at| at + IDLE_TRIM);
        let expiry = self.keep.as_ref().and_then(|k| k.expire_at);
        [self.kill_at, self.drain_until, trim, expiry]
            .into_iter()
            .flatten()
            .min()
    }

    fn queue_exit(&mut self) {
        if self.exit_queued || self.out.is_some() || self.err.is_some() || self.detached() {
            return;
        }
        let Some(status) = self.status else { return };
        self.exit_queued = true;
        if !self.agent_gone {
            self.outbuf.put_frame(kind::EXIT, &status.encode());
        }
    }

    /// Everything is said: the session can be dropped, closing the connection. A
    /// kept one waits for RELEASE (the agent passed the exit on) or its grace.
    pub fn done(&self) -> bool {
        self.status.is_some()
            && self.out.is_none()
            && self.err.is_none()
            && (self.agent_gone
                || (self.exit_queued && self.outbuf.is_empty() && self.keep.is_none()))
    }
}
