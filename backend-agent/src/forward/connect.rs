//! Opening one forwarded connection: `ssh -L`/`-D` connect from inside the student's
//! container to where policy lets them; `ssh -R` attach a connection a Listen call
//! accepted.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use labssh_proto::pb;
use tokio_util::sync::CancellationToken;

use super::pending::Accepted;
use super::policy::{Policy, Refused};
use super::refusal::ForwardError;
use crate::backend::{ContainerState, Duplex, Ensured, RunAs, SharedBackend};
use crate::lifecycle::activity::Active;
use crate::limits::caps::{Held, Kind};
use crate::start_queue::{Caller, Class};
use crate::state::Shared;

/// How long the agent's own resolver may take for a name an allow rule gives.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A forwarded connection and what it holds.
pub struct Opened {
    /// The connection, made inside the container (or accepted there).
    pub stream: Box<dyn Duplex>,
    /// The container's name.
    pub container: String,
    /// The address reached (or that connected, for `ssh -R`).
    pub address: String,
    /// Counts against the student's forwards until the connection is gone.
    pub counted: Held,
    /// Keeps the container awake until the connection is gone.
    pub active: Active,
}

/// `ssh -L` / `-D`: checks policy against every address the destination resolves to,
/// then connects to the first allowed one. A name an allow rule gives is resolved by
/// the agent; any other (localhost, the container's own names, names only `*`
/// allows) as the container resolves it.
/// The container is ensured as a student's, leaving the start queue when `left` is
/// cancelled.
pub async fn open(
    shared: &Shared,
    open: pb::ForwardOpen,
    left: CancellationToken,
) -> Result<Opened, ForwardError> {
    let counted = shared.limits.caps.acquire(&open.user, Kind::Forward)?;
    let active = shared.lifecycle.hold(&open.user, &open.environment);
    let (env, ensured) = if open.reader {
        running(shared, &open)?
    } else {
        let caller = Caller {
            left: Some(left),
            ..Caller::quiet(Class::Student)
        };
        shared
            .ensure_with(
                (&open.user, open.identity.as_ref()),
                &open.environment,
                None,
                caller,
            )
            .await?
    };
    if open.reader && !open.socket_path.is_empty() {
        return Err(Refused("a reader's forward goes to TCP services only".to_owned()).into());
    }
    let policy = Policy::of(&env);
    if !open.socket_path.is_empty() {
        let held = (counted, active);
        return open_socket(shared, &open, (&env, &policy), ensured, held).await;
    }
    policy.check_local_enabled()?;
    let port = u16::try_from(open.port).map_err(|_| ForwardError::BadPort(open.port))?;
    let host = open.host.trim_start_matches('[').trim_end_matches(']');
    let backend = &shared.backend;
    let container = &ensured.container_id;
    let by_agent = policy.names_host(host, port);
    let addresses = if by_agent {
        resolve_here(host, port).await?
    } else {
        backend.resolve(container, host, port).await?
    };
    let own = own_addresses(backend, container, &addresses).await;
    let guard = shared.guard.current();
    let mut refusal: Option<Refused> = None;
    let mut last_error = None;
    for addr in &addresses {
        if let Err(r) = policy.check_destination(&guard, &own, host, *addr) {
            tracing::info!(user = %open.user, target = %format!("{host}:{port}"), %addr, "forward refused: {}", r.0);
            refusal.get_or_insert(r);
            continue;
        }
        match backend
            .connect_tcp(container, &addr.ip().to_string(), addr.port())
            .await
        {
            Ok(stream) => {
                tracing::info!(user = %open.user, container = %ensured.name, target = %format!("{host}:{port}"), %addr, resolved_by = if by_agent { "agent" } else { "container" }, originator = %open.originator, "forward opened");
                return Ok(Opened {
                    stream,
                    container: ensured.name,
                    address: addr.to_string(),
                    counted,
                    active,
                });
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(match (last_error, refusal) {
        (Some(e), _) => e.into(),
        (None, Some(r)) => r.into(),
        (None, None) => ForwardError::NoAddress(format!("{host}:{port}")),
    })
}

/// A reader's forward: `user`'s running container of the environment as the
/// inventory knows it, nothing made or started, the reader's identity not applied.
fn running(
    shared: &Shared,
    open: &pb::ForwardOpen,
) -> Result<(pb::Environment, Ensured), ForwardError> {
    let env = shared
        .catalogue
        .get(&open.environment)
        .map_err(crate::state::EnsureError::Environment)?;
    let container = shared
        .inventory
        .list()
        .into_iter()
        .find(|c| {
            c.user == open.user && c.environment == env.name && c.state == ContainerState::Running
        })
        .ok_or_else(|| ForwardError::NotRunning(open.user.clone(), env.name.clone()))?;
    tracing::debug!(user = %open.user, container = %container.name, "a reader's forward");
    Ok((
        env,
        Ensured {
            container_id: container.name.clone(),
            name: container.name,
            created: false,
            started: false,
            notice: String::new(),
        },
    ))
}

/// `ssh -L PORT:/PATH`: connects to the unix socket at the path inside the container,
/// as the student, after policy allows the path.
async fn open_socket(
    shared: &Shared,
    open: &pb::ForwardOpen,
    (env, policy): (&pb::Environment, &Policy),
    ensured: Ensured,
    (counted, active): (Held, Active),
) -> Result<Opened, ForwardError> {
    let path = &open.socket_path;
    if let Err(r) = policy.check_local_socket(path) {
        tracing::info!(user = %open.user, %path, "forward refused: {}", r.0);
        return Err(r.into());
    }
    let run_as = RunAs::student(&open.user, env);
    let stream = shared
        .backend
        .connect_unix(&ensured.container_id, path, run_as)
        .await?;
    tracing::info!(user = %open.user, container = %ensured.name, %path, originator = %open.originator, "forward opened");
    Ok(Opened {
        stream,
        container: ensured.name,
        address: path.clone(),
        counted,
        active,
    })
}

/// The container's own addresses, which matter only for a destination that is not
/// loopback (`-L p:localhost:q`, the common case, needs no Docker call).
async fn own_addresses(
    backend: &SharedBackend,
    container: &str,
    addresses: &[SocketAddr],
) -> Vec<IpAddr> {
    if addresses
        .iter()
        .all(|a| a.ip().is_loopback() || a.ip().is_unspecified())
    {
        return Vec::new();
    }
    backend
        .container_addresses(container)
        .await
        .unwrap_or_default()
}

/// `host:port` by this agent's own resolver (its /etc/hosts and DNS).
async fn resolve_here(host: &str, port: u16) -> Result<Vec<SocketAddr>, ForwardError> {
    let target = || format!("{host}:{port}");
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addresses)) => Ok(addresses.collect()),
        Ok(Err(source)) => Err(ForwardError::Resolve {
            target: target(),
            source,
        }),
        Err(_) => Err(ForwardError::ResolveTimeout {
            target: target(),
            secs: RESOLVE_TIMEOUT.as_secs(),
        }),
    }
}

/// `ssh -R`: takes over a connection a Listen call accepted; it stops counting as
/// waiting, and goes on counting as one of the student's forwards.
pub fn attach(shared: &Shared, attach: pb::ForwardAttach) -> Result<Opened, ForwardError> {
    let accepted = shared
        .pending
        .take(attach.connection)
        .ok_or(ForwardError::Gone)?;
    if accepted.user != attach.user || accepted.environment != attach.environment {
        // Not theirs: close it rather than hand it to the wrong student.
        return Err(ForwardError::NotTheirs);
    }
    let Accepted {
        stream,
        container,
        peer,
        forward,
        waiting,
        ..
    } = accepted;
    drop(waiting);
    Ok(Opened {
        stream,
        container,
        address: peer.map_or_else(|| "a unix socket".to_owned(), |p| p.to_string()),
        counted: forward,
        active: shared.lifecycle.hold(&attach.user, &attach.environment),
    })
}
