//! One Session stream: start → admit the student → ensure the container → spawn →
//! relay → exit status. Every way out drops the output sender, which ends the
//! response stream.

mod command;
mod refusal;
mod relay;
mod resume;

use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component};
use pb::session_input::Msg as In;
use pb::session_output::Msg as Out;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::field::Empty;
use tracing::Instrument;

use crate::backend::{BackendError, Ensured, Process, SpawnSpec};
use crate::forward::agent_peers::Registration;
use crate::hooks::{Event, Target};
use crate::limits::caps::{Held, Kind};
use crate::limits::cgroup::LimitWatch;
use crate::start_queue::{Caller, Class, Place};
use crate::state::Shared;
use crate::stream;
use labssh_helper_proto::wire;
pub use refusal::SessionError;
pub use relay::OutputSender;

/// Where the proxy names the connection's agent socket.
const AUTH_SOCK: &str = "SSH_AUTH_SOCK";

/// A session's process, started, and what the rest of the session needs of it.
struct Started {
    /// The process.
    process: Process,
    /// The environment it runs in.
    env: pb::Environment,
    /// What the ensure found or did.
    ensured: Ensured,
    /// The container's limits as the session started, to say which one it hit.
    watch: Option<LimitWatch>,
    /// Its process may use its connection's agent socket, while it runs.
    _agent_peer: Option<Registration>,
    /// The id labssh-init keeps the session by, when it does.
    session_id: Option<String>,
    /// labssh-init counts its stdin.
    input_counted: bool,
}

/// Runs a session to its end.
pub async fn run<S>(shared: Arc<Shared>, mut inbound: S, tx: OutputSender)
where
    S: Stream<Item = Result<pb::SessionInput, Status>> + Send + Unpin + 'static,
{
    let _counted = shared.inventory.open_session();
    let Some(first) = stream::first_message(&shared.shutdown, &mut inbound, &tx).await else {
        return;
    };
    let start = match first.msg {
        Some(In::Start(start)) => start,
        Some(In::Resume(resume)) => return resume::run(shared, resume, inbound, tx).await,
        _ => return refuse(&tx, SessionError::NotStart).await,
    };
    tracing::debug!(user = %start.user, env = %start.environment, "session start");
    // Held until the session ends, whichever way.
    let _held = match admit(&shared, &start) {
        Ok(held) => held,
        Err(e) => return refuse(&tx, e).await,
    };
    // Keeps the container awake until the session ends.
    let active = shared.lifecycle.hold(&start.user, &start.environment);
    let started = match start_process(&shared, &start, &tx).await {
        Some(Ok(started)) => started,
        Some(Err(e)) => return refuse(&tx, e).await,
        None => return, // the agent is shutting down
    };
    let reply = Out::Started(pb::Started {
        container: started.ensured.name.clone(),
        container_started: started.ensured.created || started.ensured.started,
        notice: started.ensured.notice.clone(),
        session_id: started.session_id.clone().unwrap_or_default(),
        reattach_grace_secs: match started.session_id {
            Some(_) => shared.reattach_grace,
            None => 0,
        },
        input_counted: started.input_counted,
    });
    let logout = Target {
        user: start.user.clone(),
        env: started.env.clone(),
        container: started.ensured.name.clone(),
    };
    if !stream::answer(&tx, pb::SessionOutput { msg: Some(reply) }).await {
        relay::hang_up(started.process.control).await;
        shared.hooks.fire(Event::Logout, logout);
        return;
    }
    let limits = started.watch.map(|watch| relay::LimitNotes {
        watch,
        newline: if start.pty.is_some() { "\r\n" } else { "\n" },
    });
    let ending = active.ending();
    relay::relay(
        started.process,
        inbound,
        tx,
        &shared.shutdown,
        ending,
        limits,
    )
    .await;
    shared.hooks.fire(Event::Logout, logout);
    let disk = &shared.limits.disk;
    if !start.subsystem.is_empty() && disk.check(&start.user, &started.env).is_err() {
        // They may have deleted files to get under their quota: measure again now.
        disk.measure_soon(&start.user, &started.env.name);
    }
}

/// Counts the session against the student's cap; shells and commands wait while they
/// are over a disk quota, SFTP stays open to delete files.
fn admit(shared: &Shared, start: &pb::Start) -> Result<Held, SessionError> {
    let held = shared
        .limits
        .caps
        .admit(&start.user, Kind::Session, "session")?;
    if start.subsystem.is_empty() {
        if let Ok(env) = shared.catalogue.get(&start.environment) {
            shared.limits.disk.check(&start.user, &env).inspect_err(|over| {
                tracing::info!(user = %start.user, environment = %start.environment, "session refused: {over}");
            })?;
        }
    }
    Ok(held)
}

/// The proxy's word (it drops a client's own SSH_AUTH_SOCK): the connection's agent
/// socket, which this process and its descendants may use.
fn agent_peer(
    shared: &Shared,
    start: &pb::Start,
    container_id: &str,
    process: &Process,
) -> Option<Registration> {
    let path = start.env.get(AUTH_SOCK)?;
    let pid = process.control.pid_in_container()?;
    Some(shared.agent_peers.register(container_id, path, pid))
}

/// Ensures the container and starts the process in it; `None` when the agent shuts
/// down meanwhile.
async fn start_process(
    shared: &Shared,
    start: &pb::Start,
    tx: &OutputSender,
) -> Option<Result<Started, SessionError>> {
    let (env, ensured) = match ensure(shared, start, tx).await? {
        Ok(ok) => ok,
        Err(e) => return Some(Err(e)),
    };
    let started = async {
        // Every session is a login, so a refusing hook cannot be passed by with a
        // command or SFTP; it runs before the process starts.
        let login = Target {
            user: start.user.clone(),
            env: env.clone(),
            container: ensured.name.clone(),
        };
        shared
            .hooks
            .run_required(Event::Login, &login)
            .await
            .map_err(SessionError::Hook)?;
        let mut spec = command::spec(&shared.backend, &ensured.container_id, start, &env).await?;
        spec.keep = (shared.reattach_grace > 0).then(|| wire::Keep {
            id: resume::new_session_id(),
            grace_secs: shared.reattach_grace,
        });
        let keep = spec.keep.clone();
        let watch = LimitWatch::start(&ensured.container_id);
        let process = spawn(shared, &ensured.container_id, spec, start)
            .await
            .map_err(
                |e| match watch.as_ref().and_then(LimitWatch::spawn_refusal) {
                    Some(limit) => {
                        tracing::info!(user = %start.user, "session refused: {limit}");
                        SessionError::ProcessLimit(limit)
                    }
                    None => e,
                },
            )?;
        let agent_peer = agent_peer(shared, start, &ensured.container_id, &process);
        let session_id = keep.filter(|_| process.control.kept()).map(|k| k.id);
        let input_counted = session_id.is_some() && process.control.counts_input();
        Ok(Started {
            input_counted,
            process,
            env,
            ensured,
            watch,
            _agent_peer: agent_peer,
            session_id,
        })
    };
    Some(started.await)
}

/// The student's container, timed and traced, each step it takes told to the student
/// on `tx`; `None` when the agent shuts down first. An ensure is not abandoned when
/// the proxy leaves: another login may wait on it.
async fn ensure(
    shared: &Shared,
    start: &pb::Start,
    tx: &OutputSender,
) -> Option<Result<(pb::Environment, Ensured), SessionError>> {
    let span = tracing::info_span!(
        "ensure",
        user = %start.user,
        environment = %start.environment,
        outcome = Empty,
        container = Empty
    );
    let ensuring = Instant::now();
    let progress = {
        let tx = tx.clone();
        Box::new(move |message: String| {
            let line = Out::Progress(pb::Progress { message });
            // Nothing else is sent before Started: the stream's buffer has room.
            let _ = tx.try_send(Ok(pb::SessionOutput { msg: Some(line) }));
        })
    };
    // Waiting in the start queue, the student is told their place; when the proxy's
    // stream is gone they leave it (an admitted ensure goes on).
    let left = CancellationToken::new();
    let caller = Caller {
        class: Class::Student,
        told: Some({
            let tx = tx.clone();
            Arc::new(move |place: Place| {
                let line = Out::Progress(pb::Progress {
                    message: place.line(),
                });
                let _ = tx.try_send(Ok(pb::SessionOutput { msg: Some(line) }));
            })
        }),
        left: Some(left.clone()),
    };
    let ensure = shared.ensure_with(
        (&start.user, start.identity.as_ref()),
        &start.environment,
        Some(progress),
        caller,
    );
    let ensure = ensure.instrument(span.clone());
    tokio::pin!(ensure);
    let ensured = loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return None,
            _ = tx.closed(), if !left.is_cancelled() => left.cancel(),
            ensured = &mut ensure => break ensured,
        }
    };
    let (env, ensured) = match ensured {
        Ok(ok) => ok,
        Err(e) => {
            span.record("outcome", "failed");
            return Some(Err(e.into()));
        }
    };
    let outcome = if ensured.created {
        "created"
    } else if ensured.started {
        "started"
    } else {
        "found"
    };
    telemetry::container_ensure(&shared.name, outcome, ensuring.elapsed());
    span.record("outcome", outcome);
    span.record("container", ensured.name.as_str());
    Some(Ok((env, ensured)))
}

/// Starts the process, timed and traced with the path it took (helper or exec).
async fn spawn(
    shared: &Shared,
    container: &str,
    spec: SpawnSpec,
    start: &pb::Start,
) -> Result<Process, SessionError> {
    let span = tracing::info_span!("spawn", path = Empty, pty = start.pty.is_some());
    let spawning = Instant::now();
    let spawned = shared
        .backend
        .spawn(container, spec)
        .instrument(span.clone())
        .await;
    match spawned {
        Ok(process) => {
            let path = process.path.name();
            span.record("path", path);
            telemetry::spawn(&shared.name, path, spawning.elapsed());
            Ok(process)
        }
        Err(e) => {
            tracing::warn!(user = %start.user, error = %e, "spawn failed");
            Err(SessionError::Spawn(e))
        }
    }
}

/// Tells the proxy why the session did not start, counting it where operators care.
async fn refuse(tx: &OutputSender, error: SessionError) {
    if let Some(kind) = error.metric_kind() {
        telemetry::error(Component::Agent, kind);
    }
    let message = pb::SessionOutput {
        msg: Some(Out::Error(pb::SessionError {
            message: error.to_string(),
        })),
    };
    let _ = stream::answer(tx, message).await;
}
