//! One Session stream: start → ensure the container → spawn → relay → exit status.

mod relay;

use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component};
use pb::session_input::Msg as In;
use pb::session_output::Msg as Out;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::field::Empty;
use tracing::Instrument;

use crate::backend::{self, PtySpec, SpawnSpec};
use crate::limits::caps::Kind;
use crate::service::Shared;

/// Sends session output to the proxy; bounded, so a slow proxy slows the process down.
pub type OutputSender = mpsc::Sender<Result<pb::SessionOutput, Status>>;

/// Runs a session to its end. Every way out drops `tx`, which ends the response stream.
pub async fn run<S>(shared: Arc<Shared>, mut inbound: S, tx: OutputSender)
where
    S: Stream<Item = Result<pb::SessionInput, Status>> + Send + Unpin + 'static,
{
    let _counted = shared.inventory.open_session();
    let first = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        _ = tx.closed() => return,
        first = inbound.next() => first,
    };
    let start = match first {
        Some(Ok(pb::SessionInput {
            msg: Some(In::Start(start)),
        })) => start,
        Some(Ok(_)) => {
            return send_error(&tx, "the first message of a session must be start".into()).await
        }
        Some(Err(_)) | None => return, // the proxy left before saying anything
    };
    tracing::debug!(user = %start.user, env = %start.environment, "session start");
    // Held until the session ends, whichever way.
    let _counted = match shared.limits.caps.acquire(&start.user, Kind::Session) {
        Ok(held) => held,
        Err(over) => {
            tracing::info!(user = %start.user, cap = over.cap, "session refused: {}", over.kind.key());
            telemetry::error(Component::Agent, "user_cap");
            return send_error(&tx, over.to_string()).await;
        }
    };
    // Over a disk quota, shells and commands wait; SFTP stays open to delete files.
    if start.subsystem.is_empty() {
        if let Ok(env) = shared.catalogue.get(&start.environment) {
            if let Err(over) = shared.limits.disk.check(&start.user, &env) {
                tracing::info!(user = %start.user, environment = %start.environment, "session refused: {over}");
                return send_error(&tx, over.to_string()).await;
            }
        }
    }

    // Ensure is not abandoned when the proxy leaves: another login may be waiting on it.
    let ensure_span = tracing::info_span!(
        "ensure",
        user = %start.user,
        environment = %start.environment,
        outcome = Empty,
        container = Empty
    );
    let ensuring = Instant::now();
    let ensured = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        ensured = shared.ensure(&start.user, &start.environment).instrument(ensure_span.clone()) => ensured,
    };
    let (env, ensured) = match ensured {
        Ok(ok) => ok,
        Err(failure) => {
            ensure_span.record("outcome", "failed");
            telemetry::error(Component::Agent, "ensure_failed");
            return send_error(&tx, failure.message).await;
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
    ensure_span.record("outcome", outcome);
    ensure_span.record("container", ensured.name.as_str());
    drop(ensure_span);

    let shell = backend::shell(&env).to_owned();
    let argv = if !start.subsystem.is_empty() {
        match subsystem_argv(&shared, &ensured.container_id, &start.subsystem).await {
            Ok(argv) => argv,
            Err(message) => return send_error(&tx, message).await,
        }
    } else if !start.argv.is_empty() {
        start.argv.clone()
    } else if !start.command.is_empty() {
        vec![shell, "-c".to_owned(), start.command.clone()]
    } else {
        vec![shell, "-l".to_owned()]
    };
    let pty = start.pty.as_ref().map(|p| PtySpec {
        term: p.term.clone(),
        cols: clamp(p.cols),
        rows: clamp(p.rows),
    });
    let mut extra_env: Vec<_> = start.env.clone().into_iter().collect();
    extra_env.sort();
    let spec = SpawnSpec::for_user(&start.user, &env, argv, extra_env, pty);
    let spawn_span = tracing::info_span!("spawn", path = Empty, pty = start.pty.is_some());
    let spawning = Instant::now();
    let spawned = shared
        .backend
        .spawn(&ensured.container_id, spec)
        .instrument(spawn_span.clone())
        .await;
    let process = match spawned {
        Ok(p) => {
            // The backend says which way it started the process.
            let path = p.path.name();
            spawn_span.record("path", path);
            telemetry::spawn(&shared.name, path, spawning.elapsed());
            p
        }
        Err(e) => {
            telemetry::error(Component::Agent, "spawn_failed");
            tracing::warn!(user = %start.user, error = %e, "spawn failed");
            return send_error(&tx, e.to_string()).await;
        }
    };
    drop(spawn_span);
    let started = pb::SessionOutput {
        msg: Some(Out::Started(pb::Started {
            container: ensured.name.clone(),
            container_started: ensured.created || ensured.started,
        })),
    };
    if tx.send(Ok(started)).await.is_err() {
        relay::hang_up(process.control).await;
        return;
    }
    relay::relay(process, inbound, tx, &shared.shutdown).await;
    if !start.subsystem.is_empty() && shared.limits.disk.check(&start.user, &env).is_err() {
        // They may have deleted files to get under their quota: measure again now.
        shared.limits.disk.measure_soon(&start.user, &env.name);
    }
}

/// Where OpenSSH's sftp-server lives in the common distributions.
const SFTP_SERVERS: [&str; 5] = [
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/sftp-server",
];

/// The program serving a subsystem: for "sftp", the image's own sftp-server when it
/// has one, else the built-in server mounted into the container.
async fn subsystem_argv(
    shared: &Shared,
    container: &str,
    name: &str,
) -> Result<Vec<String>, String> {
    if name != "sftp" {
        return Err(format!("unknown subsystem '{name}'; only sftp is offered"));
    }
    let mut candidates = SFTP_SERVERS.to_vec();
    candidates.push(crate::backend::docker::SFTP_SERVER_PATH);
    match shared.backend.find_executable(container, &candidates).await {
        Ok(Some(path)) => {
            tracing::debug!(container, server = %path, "sftp subsystem");
            Ok(vec![path])
        }
        Ok(None) => Err(
            "this container has no SFTP server (the image has no sftp-server, and the container predates labssh's built-in one; it gets one when recreated)"
                .to_owned(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

async fn send_error(tx: &OutputSender, message: String) {
    let error = pb::SessionOutput {
        msg: Some(Out::Error(pb::SessionError { message })),
    };
    let _ = tx.send(Ok(error)).await;
}

/// Terminal sizes arrive as u32; anything beyond u16 is nonsense anyway.
fn clamp(v: u32) -> u16 {
    v.min(u16::MAX as u32) as u16
}
