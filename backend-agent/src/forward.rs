//! Port forwarding: one Forward stream per forwarded TCP connection, and Listen calls
//! for `ssh -R`.
//!
//! The TCP sockets live in the student's container network namespace (opened by the
//! backend, normally through the container's helper) and are spliced to the gRPC
//! stream here; no process is started per forward. Flow control is end to end: the
//! agent reads from a socket only while the proxy takes what it sends (a bounded
//! channel on top of HTTP/2's windows), and writes what the proxy sends before it
//! reads the next message.

pub mod host_watch;
pub mod policy;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::{Stream, StreamExt};
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component};
use pb::forward_input::Msg as In;
use pb::forward_output::Msg as Out;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::Status;

use crate::backend::Duplex;
use crate::limits::caps::{Held, Kind, OverCap};
use crate::service::Shared;
use policy::{Policy, Refused};

/// Output messages buffered per forwarded connection: with [`READ_CHUNK`] bytes
/// each, at most this many chunks wait for the proxy.
pub const OUTPUT_BUFFER: usize = 8;
/// Largest read from a forwarded socket (one gRPC message).
const READ_CHUNK: usize = 64 * 1024;
/// An accepted `ssh -R` connection waits this long for the proxy to attach it.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(15);
/// Accepted connections waiting to be attached, across all listeners.
const MAX_PENDING: usize = 1024;
/// How long the agent's own resolver may take for a name an allow rule gives.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends forward output to the proxy.
pub type OutputSender = mpsc::Sender<Result<pb::ForwardOutput, Status>>;

/// Connections accepted for `ssh -R` that the proxy has not attached yet.
#[derive(Default)]
pub struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Accepted>>,
}

/// One accepted connection, and whose it is.
struct Accepted {
    user: String,
    environment: String,
    container: String,
    stream: TcpStream,
    peer: SocketAddr,
    /// Counts against the student's forwards, for as long as the connection lives.
    forward: Held,
    /// Counts against the student's waiting connections until attached.
    waiting: Held,
}

impl Pending {
    /// Parks `accepted`; `None` when too many wait already (it is then closed).
    fn park(self: &Arc<Self>, accepted: Accepted) -> Option<u64> {
        // Unpredictable ids: a proxy can only attach what it was told about.
        let id = self.next.fetch_add(1, Ordering::Relaxed) ^ (rand::random::<u64>() << 20);
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if waiting.len() >= MAX_PENDING {
                return None;
            }
            waiting.insert(id, accepted);
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ATTACH_TIMEOUT).await;
            if this.take(id).is_some() {
                tracing::warn!(
                    connection = id,
                    "accepted connection never attached; closed"
                );
            }
        });
        Some(id)
    }

    fn take(&self, id: u64) -> Option<Accepted> {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }

    /// How many wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none wait.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A forward refused or failed before any byte moved.
struct Failure {
    message: String,
    prohibited: bool,
}

impl From<OverCap> for Failure {
    fn from(over: OverCap) -> Self {
        Failure {
            message: over.to_string(),
            prohibited: true,
        }
    }
}

impl From<Refused> for Failure {
    fn from(r: Refused) -> Self {
        Failure {
            message: r.0,
            prohibited: true,
        }
    }
}

impl From<Failure> for pb::ForwardError {
    fn from(f: Failure) -> Self {
        pb::ForwardError {
            message: f.message,
            prohibited: f.prohibited,
        }
    }
}

fn failed(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        prohibited: false,
    }
}

/// Runs one Forward stream to its end.
pub async fn run<S>(shared: Arc<Shared>, mut inbound: S, tx: OutputSender)
where
    S: Stream<Item = Result<pb::ForwardInput, Status>> + Send + Unpin + 'static,
{
    let _counted = shared.inventory.open_session();
    let first = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        _ = tx.closed() => return,
        first = inbound.next() => first,
    };
    let opened = match first {
        Some(Ok(pb::ForwardInput {
            msg: Some(In::Open(open)),
        })) => open_connection(&shared, open).await,
        Some(Ok(pb::ForwardInput {
            msg: Some(In::Attach(attach)),
        })) => attach_connection(&shared, attach),
        Some(Ok(_)) => Err(failed(
            "the first message of a forward must be open or attach",
        )),
        Some(Err(_)) | None => return,
    };
    // `_counted` holds the student's forward count until the connection is gone.
    let (stream, container, address, _counted) = match opened {
        Ok(o) => o,
        Err(f) => {
            if !f.prohibited {
                telemetry::error(Component::Agent, "forward_failed");
            }
            let _ = tx
                .send(Ok(pb::ForwardOutput {
                    msg: Some(Out::Error(f.into())),
                }))
                .await;
            return;
        }
    };
    let opened = pb::ForwardOutput {
        msg: Some(Out::Opened(pb::ForwardOpened {
            container,
            address: address.clone(),
        })),
    };
    if tx.send(Ok(opened)).await.is_err() {
        return;
    }
    tokio::select! {
        _ = shared.shutdown.cancelled() => {}
        _ = splice(stream, inbound, &tx) => {}
    }
    tracing::debug!(%address, "forward closed");
}

/// A forwarded connection and what it holds: the stream, the container's name, the
/// address reached and the student's forward count.
type Opened = (Box<dyn Duplex>, String, String, Held);

/// `ssh -L` / `-D`: checks policy against every address the destination resolves to,
/// then connects to the first allowed one. A name an allow rule gives is resolved by
/// the agent; any other (localhost, the container's own names, names only `*`
/// allows) as the container resolves it.
async fn open_connection(shared: &Shared, open: pb::ForwardOpen) -> Result<Opened, Failure> {
    let counted = shared.limits.caps.acquire(&open.user, Kind::Forward)?;
    let (env, ensured) = shared
        .ensure(&open.user, &open.environment)
        .await
        .map_err(|f| failed(f.message))?;
    let policy = Policy::of(&env);
    policy.check_local_enabled()?;
    let port = u16::try_from(open.port)
        .map_err(|_| failed(format!("port {} is not a TCP port", open.port)))?;
    let host = open.host.trim_start_matches('[').trim_end_matches(']');
    let backend = &shared.backend;
    let container = &ensured.container_id;
    let by_agent = policy.names_host(host, port);
    let addresses = if by_agent {
        resolve_here(host, port).await?
    } else {
        backend
            .resolve(container, host, port)
            .await
            .map_err(|e| failed(e.to_string()))?
    };
    // The container's own addresses matter only for a destination that is not
    // loopback (`-L p:localhost:q`, the common case, needs no Docker call).
    let own = if addresses
        .iter()
        .all(|a| a.ip().is_loopback() || a.ip().is_unspecified())
    {
        Vec::new()
    } else {
        backend
            .container_addresses(container)
            .await
            .unwrap_or_default()
    };
    let guard = shared.guard.current();
    let mut refusal = None;
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
                return Ok((stream, ensured.name, addr.to_string(), counted));
            }
            Err(e) => last_error = Some(e.to_string()),
        }
    }
    if let Some(e) = last_error {
        return Err(failed(e));
    }
    match refusal {
        Some(r) => Err(r.into()),
        None => Err(failed(format!(
            "{host}:{port}: the name resolves to no address"
        ))),
    }
}

/// `host:port` by this agent's own resolver (its /etc/hosts and DNS).
async fn resolve_here(host: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addresses)) => Ok(addresses.collect()),
        Ok(Err(e)) => Err(failed(format!(
            "{host}:{port}: cannot resolve the name: {e}"
        ))),
        Err(_) => Err(failed(format!(
            "{host}:{port}: the name did not resolve within {} s",
            RESOLVE_TIMEOUT.as_secs()
        ))),
    }
}

/// `ssh -R`: takes over a connection a Listen call accepted; it stops counting as
/// waiting, and goes on counting as one of the student's forwards.
fn attach_connection(shared: &Shared, attach: pb::ForwardAttach) -> Result<Opened, Failure> {
    let accepted = shared
        .pending
        .take(attach.connection)
        .ok_or_else(|| failed("that connection is gone (closed, or not attached in time)"))?;
    if accepted.user != attach.user || accepted.environment != attach.environment {
        // Not theirs: close it rather than hand it to the wrong student.
        return Err(failed("that connection belongs to another session"));
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
    Ok((Box::new(stream), container, peer.to_string(), forward))
}

/// Copies both ways until both directions are finished or either side goes away.
async fn splice<S>(stream: Box<dyn Duplex>, mut inbound: S, tx: &OutputSender)
where
    S: Stream<Item = Result<pb::ForwardInput, Status>> + Send + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    // Proxy → socket. Ends at EOF (write side shut down) or when the proxy goes away.
    let upstream = async {
        while let Some(item) = inbound.next().await {
            match item {
                Ok(pb::ForwardInput {
                    msg: Some(In::Data(bytes)),
                }) => {
                    if writer.write_all(&bytes).await.is_err() {
                        return false;
                    }
                }
                Ok(pb::ForwardInput {
                    msg: Some(In::Eof(_)),
                }) => {
                    let _ = writer.shutdown().await;
                    return true;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    };
    let downstream = copy_out(&mut reader, tx);
    tokio::pin!(upstream);
    tokio::pin!(downstream);
    // Half-closes are kept: each direction may end on its own. Anything abnormal on
    // either side ends both.
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            clean = &mut upstream, if !up_done => {
                if !clean { return; }
                up_done = true;
            }
            clean = &mut downstream, if !down_done => {
                if !clean { return; }
                down_done = true;
                // The socket said EOF; the proxy still decides when the stream ends.
            }
        }
    }
}

/// Socket → proxy, in chunks as they arrive; sends EOF at the socket's end. False when
/// the socket failed or the proxy went away.
async fn copy_out<R: AsyncRead + Unpin>(reader: &mut R, tx: &OutputSender) -> bool {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if buf.capacity() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        match reader.read_buf(&mut buf).await {
            Ok(0) => {
                let eof = pb::ForwardOutput {
                    msg: Some(Out::Eof(pb::Eof {})),
                };
                return tx.send(Ok(eof)).await.is_ok();
            }
            Ok(_) => {
                let data = pb::ForwardOutput {
                    msg: Some(Out::Data(buf.split().freeze())),
                };
                if tx.send(Ok(data)).await.is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

/// Sends listen events to the proxy.
pub type EventSender = mpsc::Sender<Result<pb::ListenEvent, Status>>;

/// Runs one Listen call: binds inside the container, then announces every accepted
/// connection until the proxy ends the call.
pub async fn listen(shared: Arc<Shared>, request: pb::ListenRequest, tx: EventSender) {
    let refuse = |f: Failure| {
        let tx = &tx;
        async move {
            let _ = tx
                .send(Ok(pb::ListenEvent {
                    msg: Some(pb::listen_event::Msg::Error(f.into())),
                }))
                .await;
        }
    };
    // Held for as long as the listener is.
    let _listening = match shared.limits.caps.acquire(&request.user, Kind::Listener) {
        Ok(held) => held,
        Err(over) => {
            tracing::info!(user = %request.user, cap = over.cap, "remote forward refused: {}", over.kind.key());
            return refuse(over.into()).await;
        }
    };
    let (env, ensured) = match shared.ensure(&request.user, &request.environment).await {
        Ok(ok) => ok,
        Err(f) => return refuse(failed(f.message)).await,
    };
    let policy = Policy::of(&env);
    let own: Vec<IpAddr> = shared
        .backend
        .container_addresses(&ensured.container_id)
        .await
        .unwrap_or_default();
    let addr = match policy.listen_address(&own, &request.host, request.port) {
        Ok(a) => a,
        Err(r) => return refuse(r.into()).await,
    };
    let listener = match shared.backend.listen_tcp(&ensured.container_id, addr).await {
        Ok(l) => l,
        Err(e) => return refuse(failed(e.to_string())).await,
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    tracing::info!(user = %request.user, container = %ensured.name, %addr, port, "remote forward listening");
    let listening = pb::ListenEvent {
        msg: Some(pb::listen_event::Msg::Listening(pb::Listening {
            port: port.into(),
            container: ensured.name.clone(),
        })),
    };
    if tx.send(Ok(listening)).await.is_err() {
        return;
    }
    // Set while connections are being refused over a cap, so one burst logs once.
    let mut over_cap = false;
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tx.closed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(container = %ensured.name, error = %e, "accept failed");
                // EMFILE and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let caps = &shared.limits.caps;
        let counted = caps
            .acquire(&request.user, Kind::Forward)
            .and_then(|f| Ok((f, caps.acquire(&request.user, Kind::PendingRemote)?)));
        let (forward, waiting) = match counted {
            Ok(held) => {
                over_cap = false;
                held
            }
            Err(over) => {
                // Closing it tells the client in the container at once.
                if !over_cap {
                    tracing::warn!(user = %request.user, container = %ensured.name, port, "closing accepted connections: {over}");
                    over_cap = true;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let parked = shared.pending.park(Accepted {
            user: request.user.clone(),
            environment: request.environment.clone(),
            container: ensured.name.clone(),
            stream,
            peer,
            forward,
            waiting,
        });
        let Some(connection) = parked else {
            tracing::warn!(container = %ensured.name, "too many connections waiting to be attached; closed one");
            continue;
        };
        let event = pb::ListenEvent {
            msg: Some(pb::listen_event::Msg::Accepted(pb::Accepted {
                connection,
                originator_address: peer.ip().to_string(),
                originator_port: peer.port().into(),
            })),
        };
        if tx.send(Ok(event)).await.is_err() {
            shared.pending.take(connection);
            break;
        }
    }
    tracing::info!(user = %request.user, container = %ensured.name, port, "remote forward closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::caps::{CapConfig, Caps};

    #[tokio::test]
    async fn copy_out_sends_chunks_then_eof_and_stops_when_the_proxy_leaves() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (tx, mut rx) = mpsc::channel(OUTPUT_BUFFER);
        let task = tokio::spawn(async move { copy_out(&mut b, &tx).await });
        a.write_all(b"hello").await.unwrap();
        drop(a);
        let mut got = Vec::new();
        let mut eof = false;
        while let Some(Ok(out)) = rx.recv().await {
            match out.msg {
                Some(Out::Data(d)) => got.extend_from_slice(&d),
                Some(Out::Eof(_)) => eof = true,
                _ => {}
            }
        }
        assert_eq!(got, b"hello");
        assert!(eof);
        assert!(task.await.unwrap());

        // A proxy that stops taking output holds the reader back: nothing beyond the
        // channel's few messages is read.
        let (mut a, mut b) = tokio::io::duplex(READ_CHUNK);
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(async move { copy_out(&mut b, &tx).await });
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; READ_CHUNK];
            let mut written = 0usize;
            while tokio::time::timeout(Duration::from_millis(300), a.write_all(&chunk))
                .await
                .is_ok()
            {
                written += chunk.len();
                if written > 64 * READ_CHUNK {
                    break;
                }
            }
            written
        });
        let written = writer.await.unwrap();
        assert!(
            written <= 4 * READ_CHUNK,
            "read ahead without bound: {written}"
        );
        drop(rx);
        let _ = task.await;
    }

    #[test]
    fn pending_connections_are_taken_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = TcpStream::connect(addr).await.unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            let pending = Arc::new(Pending::default());
            let config = crate::config::Config {
                max_pending_remote_per_user: 1,
                ..Default::default()
            };
            let caps = Arc::new(Caps::new(CapConfig::from(&config)));
            let id = pending
                .park(Accepted {
                    user: "alice".into(),
                    environment: "default".into(),
                    container: "c".into(),
                    stream: server,
                    peer,
                    forward: caps.acquire("alice", Kind::Forward).unwrap(),
                    waiting: caps.acquire("alice", Kind::PendingRemote).unwrap(),
                })
                .unwrap();
            assert_eq!(pending.len(), 1);
            assert!(caps.acquire("alice", Kind::PendingRemote).is_err());
            let taken = pending.take(id).unwrap();
            assert!(pending.take(id).is_none());
            assert!(pending.is_empty());
            drop(taken);
            assert_eq!(
                caps.count("alice", Kind::Forward),
                0,
                "released with the connection"
            );
            assert_eq!(caps.count("alice", Kind::PendingRemote), 0);
            drop(client);
        });
    }
}
