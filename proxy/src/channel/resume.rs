//! Re-attaching a session whose agent stream broke: the agent restarted (or was
//! killed) while labssh-init in the container kept the process. The proxy keeps
//! the student's channel open, asks the same agent, with backoff, to resume the
//! session by the id it issued, and sends again what the container's side never
//! got. The student reads one line while it waits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use labssh_proto::pb;
use pb::session_input::Msg as In;
use pb::session_output::Msg as Out;
use tokio::sync::mpsc;

use super::queue::Input;
use super::start::AGENT_QUEUE;
use crate::state::Context;
use crate::upstream::{with_first, Placement};

/// Stdin kept for sending again after a re-attach: what may still have been in
/// flight towards the container when the stream broke.
const KEPT_INPUT: usize = 256 * 1024;
/// First pause between attempts; doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between attempts: how late a session may notice its agent is back.
const MAX_PAUSE: Duration = Duration::from_millis(500);
/// How long one attempt may take to be answered (the agent finds the container
/// and asks its helper).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// What a session needs to be resumed: it was started kept.
pub(crate) struct Resumable {
    /// The Start it began with.
    start: pb::Start,
    /// The id the agent issued.
    id: String,
    /// How long labssh-init keeps it.
    grace: Duration,
    /// The container's side counts its stdin, so recent stdin is worth keeping.
    pub input_counted: bool,
}

impl Resumable {
    /// The session's resume details, if the agent started it kept.
    pub fn of(start: pb::Start, started: &pb::Started) -> Option<Resumable> {
        (!started.session_id.is_empty() && started.reattach_grace_secs > 0).then(|| Resumable {
            start,
            id: started.session_id.clone(),
            grace: Duration::from_secs(started.reattach_grace_secs.into()),
            input_counted: started.input_counted,
        })
    }
}

/// What went to the agent, for sending again after a re-attach: the last
/// [`KEPT_INPUT`] bytes of stdin (when the container's side counts it: a command
/// whose pipes the agent holds, an upload say, keeps none), whether stdin ended, the
/// last window size.
#[derive(Default)]
pub(crate) struct SentInput {
    /// Stdin is kept.
    keeps_stdin: bool,
    /// Stdin most recently sent, oldest first.
    kept: VecDeque<Bytes>,
    /// Bytes in `kept`.
    kept_len: usize,
    /// Stdin bytes sent in all.
    total: u64,
    /// The client ended stdin.
    eof: bool,
    /// The last window size sent.
    size: Option<pb::WindowSize>,
}

impl SentInput {
    /// For a session whose stdin the container's side counts (`keeps_stdin`), or not.
    pub fn new(keeps_stdin: bool) -> SentInput {
        SentInput {
            keeps_stdin,
            ..SentInput::default()
        }
    }

    /// Notes an input about to go to the agent.
    pub fn record(&mut self, input: &Input) {
        match input {
            Input::Data(_) if !self.keeps_stdin => {}
            Input::Data(data) => {
                self.total += data.len() as u64;
                self.kept_len += data.len();
                self.kept.push_back(data.clone());
                while self.kept_len > KEPT_INPUT {
                    let excess = self.kept_len - KEPT_INPUT;
                    let Some(front) = self.kept.front_mut() else {
                        break;
                    };
                    let cut = excess.min(front.len());
                    let _ = front.split_to(cut);
                    self.kept_len -= cut;
                    if front.is_empty() {
                        self.kept.pop_front();
                    }
                }
            }
            Input::Eof => self.eof = true,
            Input::WindowChange(size) => self.size = Some(*size),
            Input::Signal(_) => {}
        }
    }

    /// What the re-attached session gets first: the stdin past `taken` (what the
    /// container's side had, when it counts), then the end of stdin and the window
    /// size again. The second value is how many stdin bytes are gone for good.
    pub fn replay(&self, taken: Option<u64>) -> (Vec<In>, u64) {
        let mut out = Vec::new();
        let mut gone = 0;
        if let Some(taken) = taken {
            let start = self.total - self.kept_len as u64;
            gone = start.saturating_sub(taken);
            let mut skip = taken.saturating_sub(start) as usize;
            for data in &self.kept {
                if skip >= data.len() {
                    skip -= data.len();
                    continue;
                }
                out.push(In::Stdin(data.slice(skip..)));
                skip = 0;
            }
        }
        if self.eof {
            out.push(In::Eof(pb::Eof {}));
        }
        if let Some(size) = self.size {
            out.push(In::Resize(size));
        }
        (out, gone)
    }
}

/// A re-attached session's stream: input towards the agent, its output, and what
/// it said of the re-attach.
pub(crate) type Reattached = (
    mpsc::Sender<pb::SessionInput>,
    tonic::Streaming<pb::SessionOutput>,
    pb::Resumed,
);

/// What the student reads when the node did not come back in time.
fn not_back(agent: &str, grace: Duration) -> String {
    format!(
        "lost the connection to node '{agent}', where your container runs, and it did not come back within {} s; this session has ended",
        grace.as_secs()
    )
}

/// Asks `placement`'s agent to resume the session until it answers or the grace
/// has passed since `broke`; `received` is the output the student has had. The
/// error is the student's line.
pub(crate) async fn reconnect(
    ctx: &Context,
    placement: &Placement,
    resumable: &Resumable,
    received: u64,
    broke: Instant,
) -> Result<Reattached, String> {
    let agent_name = &placement.agent;
    let deadline = broke + resumable.grace;
    let mut pause = FIRST_PAUSE;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let mut agent = ctx
            .shared
            .upstream
            .agent(placement)
            .map_err(|e| e.to_string())?;
        let first = pb::SessionInput {
            msg: Some(In::Resume(pb::Resume {
                start: Some(resumable.start.clone()),
                session_id: resumable.id.clone(),
                output_offset: received,
            })),
        };
        let (tx, inputs) = with_first(first, AGENT_QUEUE);
        let attempt = async {
            let call = agent.session(labssh_telemetry::grpc::request(inputs));
            let mut outputs = call.await?.into_inner();
            let answer = match outputs.next().await {
                Some(Ok(pb::SessionOutput { msg: Some(msg) })) => msg,
                Some(Err(status)) => return Err(status),
                _ => return Err(tonic::Status::unavailable("the stream ended at once")),
            };
            Ok(match answer {
                Out::Resumed(resumed) => Ok((outputs, resumed)),
                Out::Error(e) => Err(e.message),
                _ => Err("unexpected reply from the container's node".to_owned()),
            })
        };
        let why = match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(Ok(Ok((outputs, resumed)))) => {
                tracing::info!(
                    conn = ctx.conn,
                    agent = %agent_name,
                    attempts,
                    waited_ms = broke.elapsed().as_millis() as u64,
                    lost = resumed.lost_bytes,
                    "session resumed"
                );
                return Ok((tx, outputs, resumed));
            }
            // The agent's answer (no such session, its container stopped): final.
            Ok(Ok(Err(message))) => {
                tracing::info!(conn = ctx.conn, agent = %agent_name, "session not resumed: {message}");
                return Err(message);
            }
            Ok(Err(status)) => status.message().to_owned(),
            Err(_) => "no answer".to_owned(),
        };
        let now = Instant::now();
        if now + pause >= deadline {
            tracing::warn!(conn = ctx.conn, agent = %agent_name, attempts, "gave up resuming the session: {why}");
            return Err(not_back(agent_name, resumable.grace));
        }
        tracing::debug!(conn = ctx.conn, agent = %agent_name, attempts, "resume failed, trying again: {why}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &'static str) -> Input {
        Input::Data(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn input_is_sent_again_from_what_the_container_took() {
        let mut sent = SentInput::new(true);
        sent.record(&data("ls\n"));
        sent.record(&data("pwd\n"));
        let size = pb::WindowSize {
            cols: 100,
            rows: 30,
            width_px: 0,
            height_px: 0,
        };
        sent.record(&Input::WindowChange(size));
        // The container had "ls\np": the rest of the second line, then the size.
        let (replay, gone) = sent.replay(Some(4));
        assert_eq!(
            replay,
            vec![In::Stdin(Bytes::from_static(b"wd\n")), In::Resize(size)]
        );
        assert_eq!(gone, 0);
        // All of it arrived; or the count is unknown: nothing is sent twice.
        assert_eq!(sent.replay(Some(7)).0, vec![In::Resize(size)]);
        assert_eq!(sent.replay(None).0, vec![In::Resize(size)]);
        sent.record(&Input::Eof);
        assert_eq!(
            sent.replay(Some(7)).0,
            vec![In::Eof(pb::Eof {}), In::Resize(size)]
        );
    }

    #[test]
    fn kept_input_is_bounded() {
        let mut sent = SentInput::new(true);
        let chunk = Bytes::from(vec![b'x'; 100 * 1024]);
        for _ in 0..4 {
            sent.record(&Input::Data(chunk.clone()));
        }
        assert_eq!(sent.kept_len, KEPT_INPUT);
        let (replay, gone) = sent.replay(Some(0));
        assert_eq!(gone, 400 * 1024 - KEPT_INPUT as u64);
        let resent: usize = replay
            .iter()
            .map(|m| match m {
                In::Stdin(d) => d.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(resent, KEPT_INPUT);
        // Not counted there, nothing is kept (and nothing could be sent again).
        let mut uncounted = SentInput::new(false);
        uncounted.record(&Input::Data(chunk));
        assert_eq!((uncounted.kept_len, uncounted.kept.len()), (0, 0));
        assert!(uncounted.replay(Some(0)).0.is_empty());
    }

    #[test]
    fn only_kept_sessions_resume() {
        let start = pb::Start::default();
        let mut started = pb::Started::default();
        assert!(Resumable::of(start.clone(), &started).is_none());
        started.session_id = "0123456789abcdef0123456789abcdef".into();
        assert!(Resumable::of(start.clone(), &started).is_none(), "no grace");
        started.reattach_grace_secs = 60;
        let r = Resumable::of(start, &started).unwrap();
        assert_eq!(r.grace, Duration::from_secs(60));
        assert_eq!(
            not_back("a0", r.grace),
            "lost the connection to node 'a0', where your container runs, and it did not come back within 60 s; this session has ended"
        );
    }
}
