//! Signals, reaping, and stopping with the container.

use super::*;

impl Server {
    pub(super) fn handle_signals(&mut self) {
        for signo in self.signals.drain() {
            match signo {
                libc::SIGCHLD => self.reap(),
                _ => self.forward(signo),
            }
        }
    }

    pub(super) fn forward(&mut self, signo: libc::c_int) {
        match self.main {
            Some(pid) => {
                sys::kill(pid, signo);
                if signo == libc::SIGTERM {
                    // `docker stop`: the container is going away; end sessions now so
                    // their exit reaches the agent before everything is killed.
                    self.hang_up_sessions();
                }
            }
            None if signals::is_stop_signal(signo) => self.stop(0),
            None => {}
        }
    }

    pub(super) fn reap(&mut self) {
        let now = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: status is a valid int.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let exit = decode_status(status);
            if Some(pid) == self.main {
                self.main = None;
                let code = match exit {
                    Exit::Code(code) => code,
                    Exit::Signal { signo, .. } => 128 + signo,
                };
                self.stop(code);
            } else if let Some(s) = self.sessions.iter_mut().find(|s| s.pid == pid) {
                s.exited(exit, now);
            }
            // Anything else was an orphan (or a connection worker): reaped, forgotten.
        }
    }

    pub(super) fn hang_up_sessions(&self) {
        for s in &self.sessions {
            s.signal_group(libc::SIGHUP);
        }
    }

    /// The main command is gone (or there is none and a stop signal came): no new
    /// sessions; running ones are hung up, killed after a grace period, and their exits
    /// reported.
    pub(super) fn stop(&mut self, code: i32) {
        if self.stopping.is_some() {
            return;
        }
        self.exit_code = code;
        let now = Instant::now();
        self.stopping = Some(Stopping {
            kill_at: Some(now + STOP_GRACE),
            last: now + STOP_GRACE + FINAL_GRACE,
        });
        self.listener = None;
        let _ = std::fs::remove_file(&self.opts.socket);
        self.pending.clear();
        self.hang_up_sessions();
    }
}

fn decode_status(status: libc::c_int) -> Exit {
    if libc::WIFSIGNALED(status) {
        Exit::Signal {
            signo: libc::WTERMSIG(status),
            core_dumped: libc::WCOREDUMP(status),
        }
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    }
}
