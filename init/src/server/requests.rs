//! The agent's connections: accepting them (only from outside the container's PID
//! namespace), reading their one request, and starting what it asks for.

use super::*;

impl Server {
    pub(super) fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let conn: OwnedFd = match listener.accept() {
                Ok((stream, _)) => stream.into(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::log!("accept: {e}");
                    return;
                }
            };
            // A peer outside the container's PID namespace (the agent) reads as pid 0.
            // Anything inside gets the connection closed and nothing else.
            match sys::peer_pid(&conn) {
                Ok(0) => {}
                Ok(pid) => {
                    // Logged at powers of two: a process retrying in a loop cannot
                    // fill the node's disk through the container log.
                    self.refused += 1;
                    if self.refused.is_power_of_two() {
                        crate::log!(
                            "refused a connection from pid {pid} inside the container ({} so far)",
                            self.refused
                        );
                    }
                    continue;
                }
                Err(e) => {
                    crate::log!("cannot check a peer: {e}");
                    continue;
                }
            }
            if sys::set_nonblocking(&conn, true).is_err() {
                continue;
            }
            self.pending.push(Pending {
                conn,
                inbuf: Vec::new(),
                deadline: Instant::now() + REQUEST_TIMEOUT,
            });
        }
    }

    pub(super) fn read_pending(&mut self, i: usize) {
        let p = &mut self.pending[i];
        let mut buf = [0u8; 4096];
        match sys::retry(|| sys::read(&p.conn, &mut buf)) {
            Ok(0) => {
                self.pending.swap_remove(i);
                return;
            }
            Ok(n) => p.inbuf.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                self.pending.swap_remove(i);
                return;
            }
        }
        let request = match wire::split_frame(&p.inbuf) {
            Ok(None) => return,
            Ok(Some((kind, payload, used))) => {
                let request = Request::decode(kind, payload);
                p.inbuf.drain(..used);
                request
            }
            Err(e) => Err(e),
        };
        let Pending { conn, inbuf, .. } = self.pending.swap_remove(i);
        match request {
            Ok(Request::Spawn(spawn)) => self.spawn(conn, inbuf, spawn),
            Ok(Request::Connect(request)) => connect::start(conn, request),
            Ok(Request::Lookup(request)) => connect::lookup(conn, request),
            Ok(Request::Listen(request)) => crate::listen::start(conn, request),
            Ok(Request::ConnectUnix(request)) => {
                crate::unix::connect(conn, request, &self.authority)
            }
            Ok(Request::ListenUnix(request)) => crate::unix::listen(conn, request, &self.authority),
            Ok(Request::Reattach(request)) => self.reattach(conn, inbuf, request),
            Ok(Request::Listeners) => connect::listeners(&conn),
            Err(message) => connect::reply_error(&conn, &message),
        }
    }

    pub(super) fn spawn(&mut self, conn: OwnedFd, inbuf: Vec<u8>, request: wire::Spawn) {
        if self.stopping.is_some() {
            return connect::reply_error(&conn, "the container is stopping");
        }
        match self.start_process(&request) {
            Ok((started, program, stdin, out, err)) => {
                let pid = started.pid;
                let hand_over = request.pipes;
                let keep = request.keep;
                let session = Session::new(
                    conn, inbuf, started, program, stdin, out, err, hand_over, keep,
                );
                match session {
                    Ok(session) => self.sessions.push(session),
                    Err(e) => {
                        // The connection is closed without a reply; the agent reports it.
                        crate::log!("cannot relay for pid {pid}: {e}");
                        sys::kill(pid, libc::SIGKILL);
                    }
                }
            }
            Err(e) => connect::reply_error(&conn, &e.to_string()),
        }
    }

    /// Hands a kept session to the connection that names its id.
    pub(super) fn reattach(&mut self, conn: OwnedFd, inbuf: Vec<u8>, request: wire::Reattach) {
        let session = self
            .sessions
            .iter_mut()
            .find(|s| s.kept_id() == Some(request.id.as_str()));
        let Some(session) = session else {
            return connect::reply_error(
                &conn,
                "no such session here (it ended, or its grace ran out)",
            );
        };
        if let Err((conn, e)) = session.reattach(conn, inbuf, request.output_offset) {
            crate::log!("session {}: cannot re-attach: {e}", session.pid);
            connect::reply_error(&conn, &e);
        }
    }

    /// Forks the process a request asks for: (child, program, stdin, stdout or
    /// terminal, stderr).
    pub(super) fn start_process(&self, request: &wire::Spawn) -> io::Result<StartedProcess> {
        let env = overlay_env(&self.base_env, &request.env);
        let argv: Vec<Vec<u8>> = request.argv.iter().map(|a| a.as_bytes().to_vec()).collect();
        let creds = Creds::for_ids(request.uid, request.gid);
        // A helper that is not root refuses before anything is forked, in words the
        // student reads.
        self.authority.permits(&creds).map_err(io::Error::other)?;
        let plan = Plan::new(
            &argv,
            &env,
            Some(request.cwd.as_bytes()),
            creds,
            &self.opts.drop_caps,
            true,
        )
        .map_err(io::Error::other)?;
        let context = |what: &'static str| {
            move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"))
        };
        let spawned = |e: child::SpawnError| io::Error::other(e.to_string());
        match request.pty {
            Some((cols, rows)) => {
                let (master, slave) = child::open_pty(request.uid, cols, rows)
                    .map_err(context("cannot open a terminal"))?;
                let stdin = master.try_clone()?;
                let started = plan.start(Stdio::Pty(slave)).map_err(spawned)?;
                Ok((started, plan.program(), stdin, master, None))
            }
            None => {
                let (in_r, in_w) = sys::pipe()?;
                let (out_r, out_w) = sys::pipe()?;
                let (err_r, err_w) = sys::pipe()?;
                let stdio = Stdio::Pipes {
                    stdin: in_r,
                    stdout: out_w,
                    stderr: err_w,
                };
                let started = plan.start(stdio).map_err(spawned)?;
                Ok((started, plan.program(), in_w, out_r, Some(err_r)))
            }
        }
    }
}

/// `base` with `overrides` laid over it, both `KEY=VALUE`.
fn overlay_env(base: &[Vec<u8>], overrides: &[String]) -> Vec<Vec<u8>> {
    let key = |e: &[u8]| e.iter().position(|&b| b == b'=').map(|i| e[..i].to_vec());
    let mut env: Vec<Vec<u8>> = base.to_vec();
    for entry in overrides {
        let entry = entry.as_bytes();
        let Some(k) = key(entry) else { continue };
        match env.iter_mut().find(|e| key(e).as_deref() == Some(&k[..])) {
            Some(slot) => *slot = entry.to_vec(),
            None => env.push(entry.to_vec()),
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_env_overrides_the_container_env() {
        let base = vec![b"PATH=/bin".to_vec(), b"HOME=/root".to_vec()];
        let env = overlay_env(&base, &["HOME=/home/a".into(), "TERM=xterm".into()]);
        assert_eq!(
            env,
            vec![
                b"PATH=/bin".to_vec(),
                b"HOME=/home/a".to_vec(),
                b"TERM=xterm".to_vec()
            ]
        );
    }
}
