//! The `Starting` phase: place the user, open the agent's session stream with
//! the `Start`, and wait for the process to start, trying once more on a fresh
//! placement when the agent could not be reached. The retry is a policy
//! ([`retry_after`]); what a student reads when it all fails is
//! [`student_message`].

use std::time::{Duration, Instant};

use labssh_proto::pb;
use labssh_proto::pb::agent_client::AgentClient;
use labssh_telemetry::metrics::{self as telemetry, Component, Phase};
use pb::session_input::Msg as In;
use tokio::sync::mpsc;
use tonic::transport::Channel as GrpcChannel;
use tracing::field::Empty;
use tracing::Instrument;

use super::close::Closing;
use super::gather::Gathered;
use super::session::Session;
use crate::state::Context;
use crate::upstream::{first_answer_with, wire_identity, with_first, Placement, UpstreamError};

/// Inputs queued towards the agent; beyond this the client is back-pressured.
pub(crate) const AGENT_QUEUE: usize = 32;
/// How many times a session start is tried: once more after the agent could
/// not be reached, on a fresh placement (the cached one may name an agent that
/// just died). Anything else the agent says is its answer.
const START_ATTEMPTS: u32 = 2;
/// Pause before that second try: none, the fresh placement is the remedy.
const RETRY_PAUSE: Duration = Duration::ZERO;

/// A started process and the stream to it.
pub(crate) struct Started {
    /// Input towards the agent (stdin, resize, signals, EOF).
    pub tx: mpsc::Sender<pb::SessionInput>,
    /// Output from the agent.
    pub outputs: tonic::Streaming<pb::SessionOutput>,
    /// The agent's start report.
    pub started: pb::Started,
    /// Where it runs.
    pub placement: Placement,
    /// The channel's `session` span, parent of every later phase's.
    pub span: tracing::Span,
    /// How the gateway's lines end on this channel.
    pub newline: &'static str,
    /// What it runs: shell, exec or subsystem.
    pub kind: &'static str,
    /// Its terminal as asked for, if any.
    pub pty: Option<pb::PtyRequest>,
    /// How to resume it if the agent's stream breaks, when the agent kept it.
    pub resumable: Option<super::resume::Resumable>,
}

/// Runs the phase: the process started, or what to tell the student.
pub(crate) async fn run(session: &Session, gathered: Gathered) -> Result<Started, Closing> {
    let ctx = &session.ctx;
    let newline = gathered.newline();
    let kind = gathered.kind();
    let pty = gathered.pty.clone();
    let span = tracing::info_span!(
        parent: &ctx.span,
        "session",
        channel = ?session.id,
        kind = gathered.kind(),
        pty = gathered.pty.is_some()
    );
    let mut start = gathered.into_start(&ctx.login.user);
    // The agent decides the student's uid/gid (`uid = "ldap"`) and checks their
    // groups from it.
    start.identity = Some(wire_identity(&ctx.identity));
    // The agent's progress lines (its container being started) go to stderr as they
    // come, never to stdout: a non-interactive client's output stays the command's.
    let (progress, mut lines) = mpsc::unbounded_channel();
    let environment = ctx.environment();
    let opening = open(ctx, &environment, start, progress).instrument(span.clone());
    tokio::pin!(opening);
    let opened = loop {
        tokio::select! {
            biased;
            Some(line) = lines.recv() => session.tell(&line, newline).await,
            opened = &mut opening => break opened,
        }
    };
    while let Ok(line) = lines.try_recv() {
        session.tell(&line, newline).await;
    }
    let (tx, outputs, started, placement, start) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            return Err(Closing::NotStarted {
                message: student_message(&error),
                newline,
            })
        }
    };
    for notice in [&placement.notice, &started.notice] {
        if !notice.is_empty() {
            session.tell(notice, newline).await;
        }
    }
    let resumable = super::resume::Resumable::of(start, &started);
    Ok(Started {
        resumable,
        tx,
        outputs,
        started,
        placement,
        span,
        newline,
        kind,
        pty,
    })
}

/// After attempt number `attempt` failed with `error`: how long to wait
/// before the next one, or `None` to give up.
fn retry_after(attempt: u32, error: &UpstreamError) -> Option<Duration> {
    (error.agent_unreachable() && attempt < START_ATTEMPTS).then_some(RETRY_PAUSE)
}

/// Why a start failed, as the log and the student's line say it.
fn reason(error: &UpstreamError) -> String {
    match error {
        UpstreamError::AgentUnreachable(status) | UpstreamError::AgentLost(status) => {
            status.message().to_owned()
        }
        other => other.to_string(),
    }
}

/// What a student reads when their session could not start.
fn student_message(error: &UpstreamError) -> String {
    match error {
        UpstreamError::AgentUnreachable(_)
        | UpstreamError::AgentLost(_)
        | UpstreamError::AgentClosed(_)
        | UpstreamError::Unexpected
        | UpstreamError::Refused { .. } => {
            format!("could not start your session: {}", reason(error))
        }
        UpstreamError::TimedOut(timeout) => format!(
            "your container did not start within {} s; please try again",
            timeout.as_secs()
        ),
        // Placement and configuration errors say it themselves.
        other => other.to_string(),
    }
}

/// Counts a failure in `errors_total` under its kind.
fn count(error: &UpstreamError) {
    if let Some(kind) = error.kind() {
        telemetry::error(Component::Proxy, kind);
    }
}

/// The process started: the stream's two ends, the agent's report, where.
type Opened = (
    mpsc::Sender<pb::SessionInput>,
    tonic::Streaming<pb::SessionOutput>,
    pb::Started,
    Placement,
    pb::Start,
);

/// Places the user and starts the process, trying again as [`retry_after`]
/// says.
async fn open(
    ctx: &Context,
    requested_env: &str,
    mut start: pb::Start,
    progress: mpsc::UnboundedSender<String>,
) -> Result<Opened, UpstreamError> {
    let user = &ctx.login.user;
    let upstream = &ctx.shared.upstream;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let placement = place(ctx, requested_env, attempt).await?;
        let mut agent = upstream.agent(&placement)?;
        start.environment = placement.environment.clone();
        let once = start_once(ctx, &mut agent, &placement, &start, attempt, &progress);
        let error = match once.await {
            Ok((tx, outputs, started)) => return Ok((tx, outputs, started, placement, start)),
            Err(error) => error,
        };
        upstream.forget_placement(user, requested_env);
        let agent = &placement.agent;
        let Some(pause) = retry_after(attempt, &error) else {
            if let UpstreamError::TimedOut(_) = error {
                tracing::warn!(conn = ctx.conn, %user, %agent, "session start timed out");
            } else {
                let why = reason(&error);
                tracing::warn!(conn = ctx.conn, %user, %agent, "session start failed: {why}");
            }
            return Err(error);
        };
        let why = reason(&error);
        tracing::warn!(conn = ctx.conn, %user, %agent, "agent unreachable, placing again: {why}");
        tokio::time::sleep(pause).await;
    }
}

/// Asks where the user's container lives, in a `place` span.
async fn place(
    ctx: &Context,
    requested_env: &str,
    attempt: u32,
) -> Result<Placement, UpstreamError> {
    let user = &ctx.login.user;
    let place_span = tracing::info_span!(
        "place",
        environment = %requested_env,
        attempt,
        cached = false,
        agent = Empty
    );
    let placing = Instant::now();
    let placed = ctx
        .shared
        .upstream
        .place(user, requested_env, &ctx.identity)
        .instrument(place_span.clone())
        .await;
    let placement = placed.inspect_err(|e| {
        tracing::warn!(conn = ctx.conn, %user, environment = %requested_env, "placement failed: {e}");
        count(e);
    })?;
    telemetry::setup_phase(Phase::Place, placing.elapsed());
    place_span.record("agent", placement.agent.as_str());
    Ok(placement)
}

/// One try at starting the process on `placement`'s agent, in a `start` span.
async fn start_once(
    ctx: &Context,
    agent: &mut AgentClient<GrpcChannel>,
    placement: &Placement,
    start: &pb::Start,
    attempt: u32,
    progress: &mpsc::UnboundedSender<String>,
) -> Result<
    (
        mpsc::Sender<pb::SessionInput>,
        tonic::Streaming<pb::SessionOutput>,
        pb::Started,
    ),
    UpstreamError,
> {
    let start_span = tracing::info_span!(
        "start",
        agent = %placement.agent,
        attempt,
        container = Empty,
        container_started = Empty
    );
    let starting = Instant::now();
    let first = pb::SessionInput {
        msg: Some(In::Start(start.clone())),
    };
    let (tx, inputs) = with_first(first, AGENT_QUEUE);
    let timeout = ctx.shared.config.session_start_timeout();
    // The agent's `agent.session` span joins the trace as a child of `start`.
    let request = start_span.in_scope(|| labssh_telemetry::grpc::request(inputs));
    let call = agent.session(request);
    let answered = first_answer_with(timeout, call, Some(progress))
        .instrument(start_span.clone())
        .await;
    let (outputs, started) = answered.inspect_err(count)?;
    telemetry::setup_phase(Phase::Start, starting.elapsed());
    start_span.record("container", started.container.as_str());
    start_span.record("container_started", started.container_started);
    Ok((tx, outputs, started))
}

#[cfg(test)]
mod tests {
    use super::super::session::line;
    use super::*;

    /// The line on the student's stderr, without a terminal.
    fn seen(error: UpstreamError) -> String {
        line(&student_message(&error), "\n")
    }

    #[test]
    fn only_an_unreachable_agent_is_tried_again_once_at_once() {
        let unreachable = UpstreamError::AgentUnreachable(tonic::Status::unavailable("down"));
        assert_eq!(retry_after(1, &unreachable), Some(Duration::ZERO));
        assert_eq!(retry_after(2, &unreachable), None, "twice at most");
        let lost = UpstreamError::AgentLost(tonic::Status::unknown("reset"));
        assert_eq!(retry_after(1, &lost), Some(Duration::ZERO));
        assert_eq!(
            retry_after(1, &UpstreamError::AgentClosed("session")),
            Some(Duration::ZERO)
        );
        for answer in [
            UpstreamError::Refused {
                message: "container failed to start: no".into(),
                prohibited: false,
            },
            UpstreamError::Unexpected,
            UpstreamError::TimedOut(Duration::from_secs(60)),
            UpstreamError::ControllerDown(None),
            UpstreamError::NoCapacity("all backend agents are full".into()),
        ] {
            assert_eq!(retry_after(1, &answer), None, "{answer:?}");
        }
    }

    #[test]
    fn students_read_what_went_wrong() {
        assert_eq!(
            seen(UpstreamError::ControllerDown(None)),
            "labssh: the lab controller is not reachable right now; please try again in a minute\n"
        );
        // No live agent, as the controller says it.
        assert_eq!(
            seen(UpstreamError::NoCapacity(
                "no backend agent is available; try again shortly".into()
            )),
            "labssh: no backend agent is available; try again shortly\n"
        );
        // The placed agent is down, still after a fresh placement.
        assert_eq!(
            seen(UpstreamError::AgentUnreachable(tonic::Status::unavailable(
                "tcp connect error"
            ))),
            "labssh: could not start your session: tcp connect error\n"
        );
        assert_eq!(
            seen(UpstreamError::AgentClosed("session")),
            "labssh: could not start your session: the container's node closed the session\n"
        );
        assert_eq!(
            seen(UpstreamError::UnknownEnvironment(
                "unknown environment 'nope'; available: default, gpu".into()
            )),
            "labssh: unknown environment 'nope'; available: default, gpu\n"
        );
        // The container cannot start: the agent's reason.
        assert_eq!(
            seen(UpstreamError::Refused {
                message: "image 'labssh/this-image-does-not-exist:never' is not available on agent 'agent0'".into(),
                prohibited: false,
            }),
            "labssh: could not start your session: image 'labssh/this-image-does-not-exist:never' is not available on agent 'agent0'\n"
        );
        assert_eq!(
            seen(UpstreamError::NotAllowed(
                "environment 'gpu' is not available to you; available: default, web".into()
            )),
            "labssh: environment 'gpu' is not available to you; available: default, web\n"
        );
        assert_eq!(
            seen(UpstreamError::TimedOut(Duration::from_secs(60))),
            "labssh: your container did not start within 60 s; please try again\n"
        );
        assert_eq!(
            line(&student_message(&UpstreamError::Unexpected), "\r\n"),
            "labssh: could not start your session: unexpected reply from the container's node\r\n"
        );
    }

    #[test]
    fn failures_count_under_their_kind() {
        assert_eq!(
            UpstreamError::ControllerDown(None).kind(),
            Some("place_controller_down")
        );
        assert_eq!(
            UpstreamError::UnknownEnvironment(String::new()).kind(),
            Some("place_unknown_environment")
        );
        assert_eq!(
            UpstreamError::AgentUnreachable(tonic::Status::unavailable("")).kind(),
            Some("agent_unreachable")
        );
        assert_eq!(
            UpstreamError::Refused {
                message: String::new(),
                prohibited: false
            }
            .kind(),
            Some("session_start_failed")
        );
    }
}
