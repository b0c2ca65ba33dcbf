//! What the agent sends a session: frames off its connection (stdin, EOF, resizes,
//! signals), applied in order, and stdin written to the process as it reads, with
//! window credit granted back.

use super::*;

impl Session {
    pub(super) fn read_conn(&mut self) {
        let Some(conn) = &self.conn else { return };
        let spare = &mut self.inbuf.spare(READ_CHUNK)[..READ_CHUNK];
        match sys::retry(|| sys::read(conn, spare)) {
            Ok(0) => self.lost_agent(),
            Ok(n) => {
                self.inbuf.commit(n);
                self.parse_frames();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.lost_agent(),
        }
    }

    pub(super) fn parse_frames(&mut self) {
        // Taken out while frames are applied, so payloads are used where they lie.
        let mut inbuf = std::mem::take(&mut self.inbuf);
        loop {
            let (frame_kind, payload, len) = match wire::split_frame(inbuf.as_slice()) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    crate::log!("session {}: {e}; hanging up", self.pid);
                    self.hang_up();
                    return;
                }
            };
            self.apply(frame_kind, payload);
            inbuf.consume(len);
        }
        self.inbuf = inbuf;
    }

    pub(super) fn apply(&mut self, frame_kind: u8, payload: &[u8]) {
        let mut r = wire::Reader(payload);
        if let (kind::STDIN, Some(keep)) = (frame_kind, &mut self.keep) {
            keep.input_total += payload.len() as u64;
        }
        match frame_kind {
            // The agent holds the pipe itself; nothing it sends here is stdin.
            kind::STDIN if self.hand_over => {}
            kind::STDIN if self.stdin.is_some() && !self.stdin_eof => {
                // Straight to the process when nothing waits before it; only what the
                // pipe does not take now is kept.
                let mut rest = payload;
                if let (true, Some(stdin)) = (self.stdin_buf.is_empty(), &self.stdin) {
                    match sys::retry(|| sys::write(stdin, rest)) {
                        Ok(n) => {
                            rest = &rest[n..];
                            self.grant(n as u32);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => self.stdin = None, // what is left is discarded below
                    }
                }
                self.stdin_buf.extend(rest);
                self.write_stdin();
            }
            kind::STDIN => self.grant(payload.len() as u32), // nobody reads it any more
            kind::EOF => {
                // A kept handed-over session's stdin has a second writer, the copy
                // kept here: only this frame ends it.
                if let Some(spare) = self.keep.as_mut().and_then(|k| k.spare.as_mut()) {
                    spare.0 = None;
                }
                // With a terminal EOF is ignored, as sshd does: there is no half-close.
                if !self.pty {
                    self.stdin_eof = true;
                    self.write_stdin();
                }
            }
            kind::RESIZE => {
                if let (Ok(cols), Ok(rows), true) = (r.u16(), r.u16(), self.pty) {
                    let tty = self.out.as_ref().or(self.stdin.as_ref());
                    if let Some(tty) = tty {
                        let _ = child::resize(tty, cols, rows);
                    }
                }
            }
            kind::SIGNAL => {
                if let (Ok(signo), None) = (r.u8(), self.status) {
                    if (1..=64).contains(&signo) {
                        sys::kill(self.pid, signo as libc::c_int);
                    }
                }
            }
            // The agent is done with the session (its exit passed on, or it hung the
            // session up): no re-attach, and a broken connection hangs it up.
            kind::RELEASE => self.keep = None,
            other => crate::log!("session {}: ignoring frame kind {other:#x}", self.pid),
        }
    }

    /// Returns stdin credit to the agent.
    pub(super) fn grant(&mut self, n: u32) {
        // Stdin held across a re-attach was granted to the agent before: the new one
        // starts with a whole window.
        let forgiven = self.keep.as_mut().map_or(0, |k| k.forgive(n));
        self.window_owed = self.window_owed.saturating_add(n - forgiven);
        if self.window_owed >= WINDOW_BATCH || (self.stdin_buf.is_empty() && self.window_owed > 0) {
            if !self.agent_gone {
                self.outbuf
                    .put_frame(kind::WINDOW, &self.window_owed.to_be_bytes());
            }
            self.window_owed = 0;
        }
    }

    pub(super) fn write_stdin(&mut self) {
        while !self.stdin_buf.is_empty() {
            let Some(stdin) = &self.stdin else { break };
            match sys::retry(|| sys::write(stdin, self.stdin_buf.as_slice())) {
                Ok(n) => {
                    self.stdin_buf.consume(n);
                    self.grant(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The process closed its stdin: what is left can never be read.
                Err(_) => self.stdin = None,
            }
        }
        if self.stdin.is_none() && !self.stdin_buf.is_empty() {
            let n = self.stdin_buf.len();
            self.stdin_buf.consume(n);
            self.grant(n as u32);
        }
        if self.stdin_eof && self.stdin_buf.is_empty() {
            self.stdin = None;
        }
    }
}
