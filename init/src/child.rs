//! Starting a child: terminal or pipes, identity, capabilities, working directory,
//! then exec.
//!
//! Everything that allocates happens before `fork`; the child only makes system calls
//! and reports the first failure on a close-on-exec pipe, which the parent reads: end
//! of file means the exec succeeded.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::creds::{self, Creds};
use crate::sys::{self, cvt, owned};

/// Used when the environment has no PATH; Docker's default.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Highest signal number whose disposition a child gets reset.
const MAX_SIGNAL: libc::c_int = 64;

/// Everything a child needs, prepared before `fork`.
pub struct Plan {
    /// Program and arguments.
    argv: Vec<CString>,
    /// `KEY=VALUE` entries.
    env: Vec<CString>,
    /// Paths to try for the program, in order (the PATH lookup is done up front).
    candidates: Vec<CString>,
    /// Working directory, if it changes.
    cwd: Option<CString>,
    /// Identity.
    creds: Creds,
    /// Capabilities the helper holds only for itself.
    drop_caps: Vec<u32>,
    /// A session of its own (spawned processes) or only a process group (the main
    /// command, which stays in the helper's session).
    new_session: bool,
}

/// What the child's stdin, stdout and stderr are.
pub enum Stdio {
    /// All three are this terminal, which becomes the controlling one.
    Pty(OwnedFd),
    /// Three pipe ends.
    Pipes {
        /// Read end of the stdin pipe.
        stdin: OwnedFd,
        /// Write end of the stdout pipe.
        stdout: OwnedFd,
        /// Write end of the stderr pipe.
        stderr: OwnedFd,
    },
    /// Only stdin is replaced; stdout and stderr are the helper's (the container log).
    StdinOnly(OwnedFd),
}

/// A forked child on its way to exec.
pub struct Started {
    /// The child.
    pub pid: libc::pid_t,
    /// Closes without a byte when the exec succeeded; else carries the failed step and
    /// errno (five bytes, one atomic pipe write).
    pub report: OwnedFd,
}

impl Started {
    /// `None` while the child is still on its way (the report is non-blocking),
    /// `Some(Ok)` once it runs the program, `Some(Err)` if it could not.
    pub fn outcome(&self, program: &str) -> Option<Result<(), SpawnError>> {
        let mut report = [0u8; 5];
        match sys::retry(|| sys::read(&self.report, &mut report)) {
            Ok(5) => {}
            Ok(_) => return Some(Ok(())), // end of file: exec'd (or died; the reaper says)
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(_) => return Some(Ok(())),
        }
        let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
        let step = if report[0] == STEP_EXEC {
            format!("cannot execute {program}")
        } else {
            STEPS
                .get(report[0] as usize)
                .copied()
                .unwrap_or("spawn")
                .to_owned()
        };
        Some(Err(SpawnError { step, errno }))
    }
}

/// Where starting a child failed.
#[derive(Debug)]
pub struct SpawnError {
    /// The step, e.g. "exec /bin/sh".
    pub step: String,
    /// errno.
    pub errno: i32,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, sys::errno_text(self.errno))
    }
}

/// Steps the child reports by number.
const STEPS: &[&str] = &[
    "setsid",
    "setting up stdio",
    "setgroups",
    "setgid",
    "setuid",
    "dropping capabilities",
    "chdir",
    "exec",
];
const STEP_SETSID: u8 = 0;
const STEP_STDIO: u8 = 1;
const STEP_SETGROUPS: u8 = 2;
const STEP_SETGID: u8 = 3;
const STEP_SETUID: u8 = 4;
const STEP_CAPS: u8 = 5;
const STEP_CHDIR: u8 = 6;
const STEP_EXEC: u8 = 7;

impl Plan {
    /// A plan for `argv` with the environment `env` (`KEY=VALUE`; its PATH is used to
    /// find the program). Fails for strings with NUL bytes.
    pub fn new(
        argv: &[Vec<u8>],
        env: &[Vec<u8>],
        cwd: Option<&[u8]>,
        creds: Creds,
        drop_caps: &[u32],
        new_session: bool,
    ) -> Result<Plan, String> {
        let c = |b: &[u8]| CString::new(b).map_err(|_| "argument contains a NUL byte".to_owned());
        let argv: Vec<CString> = argv.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
        let program = argv.first().ok_or("empty command")?.as_bytes().to_vec();
        let path = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(b"PATH="))
            .unwrap_or(DEFAULT_PATH.as_bytes());
        let candidates = if program.contains(&b'/') {
            vec![c(&program)?]
        } else {
            path.split(|&b| b == b':')
                .map(|dir| {
                    let dir = if dir.is_empty() { &b"."[..] } else { dir };
                    c(&[dir, b"/", &program].concat())
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Plan {
            argv,
            env: env.iter().map(|e| c(e)).collect::<Result<_, _>>()?,
            candidates,
            cwd: cwd.filter(|d| !d.is_empty()).map(c).transpose()?,
            creds,
            drop_caps: drop_caps.to_vec(),
            new_session,
        })
    }

    /// The program name, for messages.
    pub fn program(&self) -> String {
        String::from_utf8_lossy(self.argv[0].as_bytes()).into_owned()
    }

    /// Forks and execs, and waits until the exec succeeded (or failed). For the main
    /// command, before the helper serves anyone; sessions use [`Plan::start`].
    pub fn spawn(&self, stdio: Stdio) -> Result<libc::pid_t, SpawnError> {
        let started = self.start(stdio)?;
        sys::set_nonblocking(&started.report, false).map_err(|e| SpawnError {
            step: "pipe".to_owned(),
            errno: e.raw_os_error().unwrap_or(0),
        })?;
        match started.outcome(&self.program()) {
            Some(Err(e)) => {
                // The child exits at once; reap it here so nobody reports it.
                let mut status = 0;
                // SAFETY: status is a valid int.
                unsafe { libc::waitpid(started.pid, &mut status, 0) };
                Err(e)
            }
            _ => Ok(started.pid),
        }
    }

    /// Forks; the child sets itself up and execs while the caller goes on. Whether the
    /// exec worked arrives on [`Started::report`]. The `stdio` descriptors are closed
    /// in the parent when this returns.
    pub fn start(&self, stdio: Stdio) -> Result<Started, SpawnError> {
        let fail = |step: &str| SpawnError {
            step: step.to_owned(),
            errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
        };
        let (report_read, report_write) = sys::pipe().map_err(|_| fail("pipe"))?;
        sys::set_nonblocking(&report_read, true).map_err(|_| fail("pipe"))?;
        let argv = sys::ptr_array(&self.argv);
        let envp = sys::ptr_array(&self.env);
        // SAFETY: the helper is single-threaded (connection workers are processes), so
        // the child may do anything; it still only makes system calls.
        let pid = unsafe { libc::fork() };
        if pid == -1 {
            return Err(fail("fork"));
        }
        if pid == 0 {
            let (step, errno) = self.in_child(&stdio, &argv, &envp);
            let mut report = [step, 0, 0, 0, 0];
            report[1..].copy_from_slice(&errno.to_ne_bytes());
            let _ = sys::write(&report_write, &report);
            // SAFETY: leaves the forked child without running the parent's destructors.
            unsafe { libc::_exit(127) };
        }
        // Only the child may hold the report's write end, or it never ends.
        drop(report_write);
        drop(stdio);
        Ok(Started {
            pid,
            report: report_read,
        })
    }

    /// Runs in the forked child; returns only on failure, with the step and errno.
    fn in_child(
        &self,
        stdio: &Stdio,
        argv: &[*const libc::c_char],
        envp: &[*const libc::c_char],
    ) -> (u8, i32) {
        let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);
        // SAFETY (whole block): plain system calls on values prepared before the fork;
        // pointers come from `argv`, `envp`, `candidates` and `cwd`, alive until exec.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            for signo in 1..=MAX_SIGNAL {
                if signo != libc::SIGKILL && signo != libc::SIGSTOP {
                    libc::signal(signo, libc::SIG_DFL);
                }
            }
            let grouped = if self.new_session {
                libc::setsid()
            } else {
                libc::setpgid(0, 0)
            };
            if grouped == -1 {
                return (STEP_SETSID, errno());
            }
            let ok = match stdio {
                Stdio::Pty(tty) => {
                    let fd = tty.as_raw_fd();
                    dup_to(fd, 0)
                        && dup_to(fd, 1)
                        && dup_to(fd, 2)
                        && libc::ioctl(0, libc::TIOCSCTTY, 0) == 0
                }
                Stdio::Pipes {
                    stdin,
                    stdout,
                    stderr,
                } => {
                    dup_to(stdin.as_raw_fd(), 0)
                        && dup_to(stdout.as_raw_fd(), 1)
                        && dup_to(stderr.as_raw_fd(), 2)
                }
                Stdio::StdinOnly(stdin) => dup_to(stdin.as_raw_fd(), 0),
            };
            if !ok {
                return (STEP_STDIO, errno());
            }
            // While still root with CAP_SETPCAP: no child may regain these. The helper
            // dropped them from its own bounding set at start; again here, so a child
            // never depends on that having worked.
            creds::drop_from_bounding_set(&self.drop_caps);
            // Enter the directory as root first (a directory only root may enter), else
            // again as the user (a student's 0700 home, which root without
            // CAP_DAC_READ_SEARCH may not search).
            let mut in_cwd = match &self.cwd {
                Some(cwd) => libc::chdir(cwd.as_ptr()) == 0,
                None => true,
            };
            if let Err(step) = become_user(&self.creds) {
                return (step, errno());
            }
            if let (false, Some(cwd)) = (in_cwd, &self.cwd) {
                in_cwd = libc::chdir(cwd.as_ptr()) == 0;
                if !in_cwd {
                    // As sshd does: say so and start in / (root without
                    // CAP_DAC_OVERRIDE in a home another environment gave the student).
                    let reason = chdir_failure_text(errno());
                    for part in [
                        &b"Could not chdir to home directory "[..],
                        cwd.as_bytes(),
                        b": ",
                        reason,
                        b"\n",
                    ] {
                        libc::write(2, part.as_ptr().cast(), part.len());
                    }
                    if libc::chdir(c"/".as_ptr()) != 0 {
                        return (STEP_CHDIR, errno());
                    }
                }
            }
            if let Err(e) = creds::drop_from_process(&self.drop_caps) {
                return (STEP_CAPS, e);
            }
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let mut result = libc::ENOENT;
            for path in &self.candidates {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                match errno() {
                    // Like execvp: keep looking, but report a permission problem.
                    libc::EACCES => result = libc::EACCES,
                    libc::ENOENT | libc::ENOTDIR => {}
                    other => return (STEP_EXEC, other),
                }
            }
            (STEP_EXEC, result)
        }
    }
}

/// Why a chdir failed, without allocating (the forked child may not).
fn chdir_failure_text(errno: i32) -> &'static [u8] {
    match errno {
        libc::EACCES => b"Permission denied",
        libc::ENOENT => b"No such file or directory",
        libc::ENOTDIR => b"Not a directory",
        _ => b"cannot enter it",
    }
}

/// dup2 that also works when the descriptor already has the target number (dup2 would
/// then leave close-on-exec set).
fn dup_to(fd: RawFd, target: RawFd) -> bool {
    // SAFETY: descriptor calls without pointers.
    unsafe {
        if fd == target {
            libc::fcntl(fd, libc::F_SETFD, 0) != -1
        } else {
            libc::dup2(fd, target) != -1
        }
    }
}

/// [`become_user`] for a worker that does not exec: the failed step by name.
pub(crate) fn take_creds(creds: &Creds) -> Result<(), &'static str> {
    become_user(creds).map_err(|step| STEPS.get(step as usize).copied().unwrap_or("setuid"))
}

/// Switches to `creds`. Without the privilege to switch, staying the same user is fine.
/// A helper that is not root keeps its groups (setgroups needs CAP_SETGID; the server
/// checked that `creds` asks for none it lacks, see `creds::Authority`) and its uid
/// and gid, which setresuid and setresgid then only confirm.
fn become_user(creds: &Creds) -> Result<(), u8> {
    // SAFETY: id calls; the groups pointer is valid for its length.
    unsafe {
        let root = libc::geteuid() == 0;
        let same = libc::geteuid() == creds.uid && libc::getegid() == creds.gid;
        let tolerate = |ret: libc::c_int| {
            ret == 0 || (same && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
        };
        if root && !tolerate(libc::setgroups(creds.groups.len(), creds.groups.as_ptr())) {
            return Err(STEP_SETGROUPS);
        }
        if !tolerate(libc::setresgid(creds.gid, creds.gid, creds.gid)) {
            return Err(STEP_SETGID);
        }
        if !tolerate(libc::setresuid(creds.uid, creds.uid, creds.uid)) {
            return Err(STEP_SETUID);
        }
    }
    Ok(())
}

/// A new terminal pair of the given size whose slave belongs to `uid` (as a terminal
/// that `docker exec -t` or sshd sets up does): (master, slave), both close-on-exec.
pub fn open_pty(uid: u32, cols: u16, rows: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    // devpts gives a new terminal to the opener's filesystem uid: open it as `uid`.
    // SAFETY: id calls and an open of a constant path.
    let master = unsafe {
        let previous = libc::setfsuid(uid);
        let fd = libc::open(
            sys::PTMX.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        let saved = io::Error::last_os_error();
        libc::setfsuid(previous as u32);
        if fd == -1 {
            return Err(saved);
        }
        owned(fd)
    };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    // SAFETY: TIOCGPTPEER takes open flags and returns a descriptor.
    let slave = cvt(unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    let slave = owned(slave);
    resize(&master, cols, rows)?;
    Ok((master, slave))
}

/// Sets a terminal's size; 0 leaves the kernel's default.
pub fn resize(tty: &impl AsRawFd, cols: u16, rows: u16) -> io::Result<()> {
    if cols == 0 || rows == 0 {
        return Ok(());
    }
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize.
    cvt(unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &size) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_is_looked_up_in_the_environment_path() {
        let creds = Creds {
            uid: 0,
            gid: 0,
            groups: vec![0],
        };
        let plan = Plan::new(
            &[b"ls".to_vec()],
            &[b"PATH=/a::/b".to_vec()],
            None,
            creds.clone(),
            &[],
            true,
        )
        .unwrap();
        let paths: Vec<_> = plan
            .candidates
            .iter()
            .map(|c| c.to_str().unwrap())
            .collect();
        assert_eq!(paths, ["/a/ls", "./ls", "/b/ls"]);
        let plan = Plan::new(&[b"./x".to_vec()], &[], None, creds.clone(), &[], true).unwrap();
        assert_eq!(plan.candidates.len(), 1);
        assert!(Plan::new(&[b"a\0b".to_vec()], &[], None, creds, &[], true).is_err());
    }
}
