//! The helper's event loop: signals, the main command, the agent's socket and every
//! session, in one thread with poll(2).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::args::Options;
use crate::child::{self, Plan, Stdio};
use crate::connect;
use crate::creds::{Authority, Creds};
use crate::session::{Session, Source};
use crate::signals::{self, Signals};
use crate::sys;
use labssh_helper_proto::wire::{self, Exit, Request};

mod lifecycle;
mod requests;

/// How long a new connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// When the container stops, how long hung-up sessions get before they are killed.
/// Docker's stop timeout for labssh containers is 2 s; stay well inside it.
const STOP_GRACE: Duration = Duration::from_millis(1000);
/// After the kill, how long exit statuses may take to reach the agent.
const FINAL_GRACE: Duration = Duration::from_millis(300);

/// A connection that has not sent its request yet.
struct Pending {
    /// The agent's connection.
    conn: OwnedFd,
    /// Bytes so far.
    inbuf: Vec<u8>,
    /// When it is dropped if still silent.
    deadline: Instant,
}

/// A forked process: the child, its program, stdin, stdout (or the terminal), stderr
/// (none with a terminal).
type StartedProcess = (child::Started, String, OwnedFd, OwnedFd, Option<OwnedFd>);

/// Why a poll result matters.
#[derive(Clone, Copy)]
enum Token {
    Signals,
    Listener,
    Pending(usize),
    Session(usize, Source),
}

/// Deadlines once the container stops.
struct Stopping {
    /// When sessions still running get killed; `None` once they were.
    kill_at: Option<Instant>,
    /// When the helper leaves even if exits are still unreported.
    last: Instant,
}

/// The whole helper state.
struct Server {
    /// Command-line options.
    opts: Options,
    /// Who children may be started as.
    authority: Authority,
    /// The helper's environment at start: the container's; base of every child's.
    base_env: Vec<Vec<u8>>,
    /// Signals as a descriptor.
    signals: Signals,
    /// The agent's socket; closed once the container stops.
    listener: Option<UnixListener>,
    /// The image's command, while it runs.
    main: Option<libc::pid_t>,
    /// Exit code the helper ends with.
    exit_code: i32,
    /// Connections waiting for their request.
    pending: Vec<Pending>,
    /// Spawned processes.
    sessions: Vec<Session>,
    /// The container is stopping.
    stopping: Option<Stopping>,
    /// Connections refused by the peer check, for rate-limiting their log lines.
    refused: u64,
    /// Write end of the main command's stdin, held open so a shell or interpreter
    /// there waits for input forever, as with `docker run -i`.
    _main_stdin: Option<OwnedFd>,
}

/// Runs the helper until the container stops; returns the exit code.
pub fn run(opts: Options) -> i32 {
    match start(opts) {
        Ok(mut server) => server.serve(),
        Err(message) => {
            crate::log!("{message}");
            1
        }
    }
}

fn start(opts: Options) -> Result<Server, String> {
    let signals = Signals::block().map_err(|e| format!("cannot block signals: {e}"))?;
    let authority = Authority::current();
    if authority.is_root() {
        // Before the command runs: nothing in the container may put anything beside
        // the socket (a pod's emptyDir is made world-writable).
        if let Some(dir) = opts.socket.parent() {
            secure_dir(dir);
        }
    } else {
        // Every process of the pod runs as this same user: none may attach to the
        // helper or read its memory (the agent, with CAP_SYS_PTRACE, still reaches
        // /proc/PID/root). Children are dumpable again after their exec.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    }
    // What the helper holds only for itself leaves the bounding set before anything
    // else runs, so no process in the container can ever regain it; the helper keeps
    // it in its own effective set.
    crate::creds::drop_from_bounding_set(&opts.drop_caps);
    // SAFETY: getpid and prctl with integer arguments.
    unsafe {
        if libc::getpid() != 1 {
            // Not PID 1 (a test, or `docker run --init`): adopt orphans anyway.
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
    }
    let base_env: Vec<Vec<u8>> = std::env::vars_os()
        .map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            entry
        })
        .collect();
    let mut server = Server {
        opts,
        authority,
        base_env,
        signals,
        listener: None,
        main: None,
        exit_code: 0,
        pending: Vec::new(),
        sessions: Vec::new(),
        stopping: None,
        refused: 0,
        _main_stdin: None,
    };
    if let Some(account) = &server.opts.account {
        crate::account::add(Path::new("/etc"), account);
    }
    // The command first: if it cannot start, the helper exits without ever having
    // answered, and the agent reports the container's log instead of a dead helper.
    if !server.opts.command.is_empty() {
        server.start_main()?;
    }
    server.listener = Some(listen(&server.opts.socket)?);
    Ok(server)
}

/// Whether the socket's directory must be made root's alone: someone else owns it or
/// may write to it.
fn needs_securing(mode: u32, owner: u32) -> bool {
    owner != 0 || mode & 0o022 != 0
}

/// Makes `dir` root's, mode 0700, unless it already is; failures are logged (the agent
/// trusts nothing in it either way: see `backend-agent/src/backend/helper.rs`).
fn secure_dir(dir: &Path) {
    let c_dir = sys::cstring(&dir.to_string_lossy());
    // SAFETY: open, fstat, fchown and fchmod on a descriptor this function owns; stat
    // is plain data filled by fstat.
    let result = unsafe {
        let fd = libc::open(
            c_dir.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        );
        if fd == -1 {
            Err(io::Error::last_os_error())
        } else {
            let fd = sys::owned(fd);
            let mut st: libc::stat = std::mem::zeroed();
            sys::cvt(libc::fstat(fd.as_raw_fd(), &mut st))
                .and_then(|_| {
                    if !needs_securing(st.st_mode & 0o7777, st.st_uid) {
                        return Ok(0);
                    }
                    sys::cvt(libc::fchown(fd.as_raw_fd(), 0, 0))?;
                    sys::cvt(libc::fchmod(fd.as_raw_fd(), 0o700))
                })
                .map(|_| ())
        }
    };
    if let Err(e) = result {
        crate::log!("cannot make {} private: {e}", dir.display());
    }
}

/// Binds the socket, replacing one left by an earlier run of the container.
fn listen(path: &PathBuf) -> Result<UnixListener, String> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    // Only root may connect; the peer check below is what keeps root in the
    // container out.
    let c_path = sys::cstring(&path.to_string_lossy());
    // SAFETY: chmod on a valid C string.
    unsafe { libc::chmod(c_path.as_ptr(), 0o600) };
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    Ok(listener)
}

impl Server {
    fn start_main(&mut self) -> Result<(), String> {
        let creds = if self.opts.user.is_empty() {
            self.authority.default_creds()
        } else {
            Creds::for_image_user(&self.opts.user)?
        };
        self.authority.permits(&creds).map_err(|e| {
            format!(
                "cannot run {} as {:?}: {e}",
                self.opts.command[0].to_string_lossy(),
                self.opts.user
            )
        })?;
        let argv: Vec<Vec<u8>> = self
            .opts
            .command
            .iter()
            .cloned()
            .map(OsString::into_vec)
            .collect();
        let plan = Plan::new(
            &argv,
            &self.base_env,
            None,
            creds,
            &self.opts.drop_caps,
            false,
        )?;
        let (stdin_read, stdin_write) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let pid = plan
            .spawn(Stdio::StdinOnly(stdin_read))
            .map_err(|e| e.to_string())?;
        self.main = Some(pid);
        self._main_stdin = Some(stdin_write);
        Ok(())
    }

    fn serve(&mut self) -> i32 {
        let mut pollfds: Vec<libc::pollfd> = Vec::new();
        let mut tokens: Vec<Token> = Vec::new();
        loop {
            let now = Instant::now();
            if let Some(code) = self.finished(now) {
                return code;
            }
            pollfds.clear();
            tokens.clear();
            let mut add = |fd: i32, events: libc::c_short, token: Token| {
                pollfds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                tokens.push(token);
            };
            add(self.signals.raw_fd(), libc::POLLIN, Token::Signals);
            if let Some(listener) = &self.listener {
                add(listener.as_raw_fd(), libc::POLLIN, Token::Listener);
            }
            for (i, p) in self.pending.iter().enumerate() {
                add(p.conn.as_raw_fd(), libc::POLLIN, Token::Pending(i));
            }
            for (i, s) in self.sessions.iter().enumerate() {
                for (fd, events, source) in s.interest().fds {
                    add(fd, events, Token::Session(i, source));
                }
            }
            let timeout = self.next_deadline().map_or(-1, |d| {
                d.saturating_duration_since(now).as_millis().min(60_000) as libc::c_int + 1
            });
            // SAFETY: pollfds is a valid array of its length.
            let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as _, timeout) };
            if n == -1 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                crate::log!("poll: {}", io::Error::last_os_error());
                return 1;
            }
            let mut accept = false;
            let mut signals = false;
            let mut pending_ready = Vec::new();
            for (pfd, token) in pollfds.iter().zip(&tokens) {
                if pfd.revents == 0 {
                    continue;
                }
                match *token {
                    Token::Signals => signals = true,
                    Token::Listener => accept = true,
                    Token::Pending(i) => pending_ready.push(i),
                    Token::Session(i, source) => self.sessions[i].ready(source, pfd.revents),
                }
            }
            // Indices above stay valid until here: nothing was added or removed.
            for i in pending_ready.into_iter().rev() {
                self.read_pending(i);
            }
            if signals {
                self.handle_signals();
            }
            if accept {
                self.accept();
            }
            let now = Instant::now();
            let mut freed = false;
            for s in &mut self.sessions {
                s.tick(now);
                freed |= s.trim_if_idle(now);
            }
            let before = self.sessions.len();
            self.sessions.retain(|s| !s.done());
            freed |= self.sessions.len() < before;
            if freed {
                // Freed buffers sit among live allocations; hand their pages back.
                // SAFETY: malloc_trim only returns free memory to the system.
                unsafe { libc::malloc_trim(0) };
            }
            self.pending.retain(|p| p.deadline > now);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sessions = self.sessions.iter().filter_map(Session::deadline);
        let pending = self.pending.iter().map(|p| p.deadline);
        let stopping = self.stopping.iter().flat_map(|s| [s.kill_at, Some(s.last)]);
        sessions.chain(pending).chain(stopping.flatten()).min()
    }

    /// The exit code once the helper should leave.
    fn finished(&mut self, now: Instant) -> Option<i32> {
        let stopping = self.stopping.as_mut()?;
        if stopping.kill_at.is_some_and(|t| t <= now) {
            stopping.kill_at = None;
            for s in &self.sessions {
                s.signal_group(libc::SIGKILL);
            }
        }
        (self.sessions.is_empty() || now >= stopping.last).then_some(self.exit_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn only_a_directory_of_roots_alone_is_left_as_it_is() {
        assert!(!needs_securing(0o700, 0));
        assert!(!needs_securing(0o755, 0));
        assert!(
            needs_securing(0o777, 0),
            "an emptyDir as the kubelet makes it"
        );
        assert!(needs_securing(0o1777, 0));
        assert!(needs_securing(0o2775, 0), "group-writable (fsGroup)");
        assert!(needs_securing(0o700, 1000), "a student's");
    }

    #[test]
    fn a_world_writable_directory_becomes_roots_alone() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // only root can take a directory over (the helper does so as root)
        }
        let dir = std::env::temp_dir().join(format!("labssh-init-secure-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::chown(&dir, Some(1000), Some(1000)).unwrap();
        secure_dir(&dir);
        let meta = std::fs::metadata(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
    }
}
