//! Kept sessions (SPAWN_KEPT): what labssh-init holds so a session outlives its
//! agent, detaching when the connection breaks and re-attaching when the agent, back,
//! names the session's id.

use std::collections::VecDeque;

use super::*;

/// What a quiet session's history keeps: about a screenful.
const KEPT_IDLE: usize = 16 * 1024;

/// What a kept session holds for a re-attach.
pub struct Kept {
    /// The id the agent gave it.
    id: String,
    /// How long it is kept while nobody is attached.
    grace: Duration,
    /// While detached: when it is hung up.
    pub expire_at: Option<Instant>,
    /// Output most recently read, as (frame kind, bytes), at most
    /// [`wire::KEPT_OUTPUT`] bytes in all.
    history: VecDeque<(u8, Vec<u8>)>,
    /// Bytes in `history`.
    history_len: usize,
    /// Output bytes read from the process in all; the history ends there.
    output_total: u64,
    /// Output dropped from the history since the session was last detached, for a
    /// session whose output the agent read itself (no common count).
    dropped_detached: u64,
    /// Stdin payload bytes received in all.
    pub input_total: u64,
    /// Output and input are counted from the start (relayed from the start): the
    /// agent's offsets mean the same bytes as these totals.
    counted: bool,
    /// Stdin bytes held when a new agent attached: they were granted to the agent
    /// before, so they are not granted again.
    forgiven: usize,
    /// A handed-over session's pipes, as copies: stdin (until EOF), stdout and
    /// stderr, taken up if the agent goes away.
    pub spare: Option<(Option<OwnedFd>, OwnedFd, OwnedFd)>,
    /// The history was cut to its idle size and nothing was recorded since.
    trimmed: bool,
}

impl Kept {
    pub fn new(keep: wire::Keep) -> Kept {
        Kept {
            id: keep.id,
            grace: Duration::from_secs(keep.grace_secs.into()),
            expire_at: None,
            history: VecDeque::new(),
            history_len: 0,
            output_total: 0,
            dropped_detached: 0,
            input_total: 0,
            counted: true,
            forgiven: 0,
            spare: None,
            trimmed: false,
        }
    }

    /// Keeps a copy of output just read, dropping the oldest beyond the bound.
    pub fn record(&mut self, frame_kind: u8, data: &[u8]) {
        self.trimmed = false;
        self.output_total += data.len() as u64;
        // Consecutive small reads of one stream share an entry.
        match self.history.back_mut() {
            Some((k, last)) if *k == frame_kind && last.len() + data.len() <= READ_CHUNK => {
                last.extend_from_slice(data)
            }
            _ => self.history.push_back((frame_kind, data.to_vec())),
        }
        self.history_len += data.len();
        while self.history_len > wire::KEPT_OUTPUT {
            let excess = self.history_len - wire::KEPT_OUTPUT;
            let Some((_, front)) = self.history.front_mut() else {
                break;
            };
            let cut = excess.min(front.len());
            front.drain(..cut);
            if front.is_empty() {
                self.history.pop_front();
            }
            self.history_len -= cut;
            if self.expire_at.is_some() {
                self.dropped_detached += cut as u64;
            }
        }
    }

    /// A quiet, attached session's history cut to its last [`KEPT_IDLE`] bytes, the
    /// storage given back; true when anything was. Output the student may not have
    /// had yet is then still counted: a re-attach reports it lost rather than
    /// silently missing.
    pub fn trim_idle(&mut self) -> bool {
        if std::mem::replace(&mut self.trimmed, true) || self.history.is_empty() {
            return false;
        }
        let mut tail: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut room = KEPT_IDLE;
        for (k, data) in self.history.iter().rev() {
            if room == 0 {
                break;
            }
            let take = data.len().min(room);
            tail.push((*k, data[data.len() - take..].to_vec()));
            room -= take;
        }
        tail.reverse();
        self.history_len = KEPT_IDLE - room;
        self.history = tail.into();
        true
    }

    /// The output offset of the history's first byte.
    fn history_start(&self) -> u64 {
        self.output_total - self.history_len as u64
    }

    /// Whether a detached session's grace ran out.
    pub fn expired(&self, now: Instant) -> bool {
        self.expire_at.is_some_and(|t| t <= now)
    }

    /// Of `n` stdin bytes passed on, how many were forgiven (not to be granted).
    pub fn forgive(&mut self, n: u32) -> u32 {
        let f = self.forgiven.min(n as usize);
        self.forgiven -= f;
        f as u32
    }

    /// The frames a re-attach with `offset` gets after ATTACHED, and what ATTACHED
    /// says of it.
    fn replay(&self, offset: u64, pid: u32, pty: bool) -> (wire::Attached, Vec<u8>) {
        let mut frames = Vec::new();
        let (skip, lost) = if self.counted {
            let start = self.history_start();
            let offset = offset.min(self.output_total);
            (offset.saturating_sub(start), start.saturating_sub(offset))
        } else {
            (0, self.dropped_detached)
        };
        let mut skip = skip as usize;
        for (k, data) in &self.history {
            if skip >= data.len() {
                skip -= data.len();
                continue;
            }
            for piece in data[skip..].chunks(READ_CHUNK) {
                wire::put_frame(&mut frames, *k, piece);
            }
            skip = 0;
        }
        let attached = wire::Attached {
            pid,
            pty,
            counted: self.counted,
            lost,
            input_offset: if self.counted { self.input_total } else { 0 },
        };
        (attached, frames)
    }
}

impl Session {
    /// A kept session nobody is attached to.
    pub(super) fn detached(&self) -> bool {
        self.conn.is_none() && self.keep.is_some()
    }

    /// The id of a kept session.
    pub fn kept_id(&self) -> Option<&str> {
        self.keep.as_ref().map(|k| k.id.as_str())
    }

    /// The agent went away from a kept session: keep the process and read its output
    /// into the history until a re-attach or the grace's end. Whatever was queued for
    /// the dead agent (perhaps half a frame) goes: a re-attach replays from the
    /// history.
    pub(super) fn detach(&mut self) {
        let Some(keep) = &mut self.keep else { return };
        self.conn = None;
        self.outbuf = Buffer::default();
        self.inbuf = Buffer::default();
        keep.expire_at = Some(Instant::now() + keep.grace);
        keep.dropped_detached = 0;
        let grace = keep.grace.as_secs();
        if self.hand_over {
            self.take_pipes_back();
        }
        crate::log!(
            "session {}: the agent went away; keeping it for {grace} s",
            self.pid
        );
    }

    /// A handed-over session's pipes, read and written here from now on; its
    /// offsets are no longer the agent's.
    fn take_pipes_back(&mut self) {
        self.hand_over = false;
        let Some(keep) = &mut self.keep else { return };
        keep.counted = false;
        let Some((stdin, out, err)) = keep.spare.take() else {
            return;
        };
        for fd in [stdin.as_ref(), Some(&out), Some(&err)]
            .into_iter()
            .flatten()
        {
            let _ = sys::set_nonblocking(fd, true);
        }
        self.stdin = stdin;
        self.stdin_eof = self.stdin.is_none();
        self.out = Some(out);
        self.err = Some(err);
    }

    /// A new agent connection takes the session over: ATTACHED, the output the
    /// student has not had (from `offset`), and from then on as a relayed session
    /// (EXIT, if the process ended meanwhile, after the output). A connection still
    /// attached is dropped: only the agent can connect, and it asked.
    pub fn reattach(
        &mut self,
        conn: OwnedFd,
        inbuf: Vec<u8>,
        offset: u64,
    ) -> Result<(), (OwnedFd, String)> {
        if self.starting.is_some() || self.agent_gone || self.keep.is_none() {
            return Err((conn, "the session is not kept".to_owned()));
        }
        if self.hand_over {
            self.take_pipes_back();
        }
        let Some(keep) = &mut self.keep else {
            return Err((conn, "the session is not kept".to_owned()));
        };
        keep.expire_at = None;
        keep.forgiven = self.stdin_buf.len();
        let (attached, frames) = keep.replay(offset, self.pid as u32, self.pty);
        self.window_owed = 0;
        self.conn = Some(conn);
        self.outbuf = Buffer::default();
        self.outbuf.put_frame(kind::ATTACHED, &attached.encode());
        self.outbuf.extend(&frames);
        // An EXIT the dead agent may not have passed on goes again, after the output.
        self.exit_queued = false;
        self.inbuf = Buffer::from(inbuf);
        self.active_at = Some(Instant::now());
        crate::log!(
            "session {}: re-attached (replaying {} bytes, {} lost)",
            self.pid,
            frames.len(),
            attached.lost
        );
        self.parse_frames();
        self.queue_exit();
        self.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> Kept {
        Kept::new(wire::Keep {
            id: "0123456789abcdef".into(),
            grace_secs: 60,
        })
    }

    fn frames(buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = buf;
        while let Some((k, payload, used)) = wire::split_frame(rest).unwrap() {
            out.push((k, payload.to_vec()));
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        out
    }

    #[test]
    fn a_reattach_gets_exactly_what_the_student_lacks() {
        let mut k = kept();
        k.record(kind::STDOUT, b"one\n");
        k.record(kind::STDERR, b"warn\n");
        k.record(kind::STDOUT, b"two\n");
        k.input_total = 9;
        // The student had "one\nwa": the rest of the stderr line, then stdout.
        let (attached, replay) = k.replay(6, 7, true);
        assert_eq!(
            frames(&replay),
            vec![
                (kind::STDERR, b"rn\n".to_vec()),
                (kind::STDOUT, b"two\n".to_vec())
            ]
        );
        assert_eq!((attached.lost, attached.input_offset), (0, 9));
        assert!(attached.counted && attached.pty && attached.pid == 7);
        // Everything, nothing, and an offset past the end (nothing, not a panic).
        assert_eq!(frames(&k.replay(0, 7, true).1).len(), 3);
        assert!(k.replay(13, 7, true).1.is_empty());
        assert!(k.replay(1 << 40, 7, true).1.is_empty());
    }

    #[test]
    fn the_history_is_bounded_and_says_what_it_dropped() {
        let mut k = kept();
        let chunk = vec![b'x'; 60 * 1024];
        for _ in 0..10 {
            k.record(kind::STDOUT, &chunk);
        }
        assert_eq!(k.history_len, wire::KEPT_OUTPUT);
        let total = 10 * chunk.len() as u64;
        assert_eq!(k.output_total, total);
        let (attached, replay) = k.replay(0, 1, false);
        assert_eq!(attached.lost, total - wire::KEPT_OUTPUT as u64);
        let replayed: usize = frames(&replay).iter().map(|(_, d)| d.len()).sum();
        assert_eq!(replayed, wire::KEPT_OUTPUT);
        // Every frame fits what the agent reads.
        assert!(frames(&replay).iter().all(|(_, d)| d.len() <= READ_CHUNK));
    }

    #[test]
    fn a_quiet_sessions_history_shrinks_to_its_last_screenful() {
        let mut k = kept();
        for i in 0..6u8 {
            k.record(kind::STDOUT, &vec![b'a' + i; 40 * 1024]);
        }
        k.record(kind::STDERR, b"last words");
        let total = k.output_total;
        assert!(k.trim_idle());
        assert_eq!(k.history_len, KEPT_IDLE);
        assert!(!k.trim_idle(), "nothing more to give back");
        // The tail is what it was, and older output counts as lost.
        let (attached, replay) = k.replay(0, 1, false);
        assert_eq!(attached.lost, total - KEPT_IDLE as u64);
        let replay = frames(&replay);
        assert_eq!(
            replay.last().unwrap(),
            &(kind::STDERR, b"last words".to_vec())
        );
        let bytes: usize = replay.iter().map(|(_, d)| d.len()).sum();
        assert_eq!(bytes, KEPT_IDLE);
        assert!(replay[0].1.iter().all(|&b| b == b'f'));
        // What came since the student's offset is still exact.
        let (attached, replay) = k.replay(total - 4, 1, false);
        assert_eq!(
            (attached.lost, frames(&replay)),
            (0, vec![(kind::STDERR, b"ords".to_vec())])
        );
    }

    #[test]
    fn uncounted_sessions_replay_what_came_while_detached() {
        let mut k = kept();
        k.counted = false;
        k.expire_at = Some(Instant::now());
        k.record(kind::STDOUT, b"while away");
        let (attached, replay) = k.replay(12345, 1, false);
        assert_eq!(
            frames(&replay),
            vec![(kind::STDOUT, b"while away".to_vec())]
        );
        assert_eq!((attached.lost, attached.input_offset), (0, 0));
        assert!(!attached.counted);
    }

    #[test]
    fn held_stdin_is_not_granted_twice() {
        let mut k = kept();
        k.forgiven = 100;
        assert_eq!(k.forgive(60), 60);
        assert_eq!(k.forgive(60), 40);
        assert_eq!(k.forgive(60), 0);
    }
}
