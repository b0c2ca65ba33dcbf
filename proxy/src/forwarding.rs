//! Port forwarding: `direct-tcpip` channels (`ssh -L`, `ssh -D`) and `tcpip-forward`
//! requests (`ssh -R`), each forwarded connection one Forward stream to the agent
//! holding the student's container, all multiplexed on the proxy's one HTTP/2
//! connection to that agent.
//!
//! Flow control is end to end. Towards the client, bytes are written only as the
//! client's SSH window allows, and the next agent message is read only after that,
//! so HTTP/2's window holds the agent back and the agent stops reading the socket.
//! Towards the container, a full stream to the agent stops this task reading the
//! channel. (russh acknowledges SSH window space as packets arrive, so that last
//! stop holds back the client's whole connection, bounded by russh's channel buffer,
//! not the one channel.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component, Direction};
use pb::agent_client::AgentClient;
use pb::forward_input::Msg as In;
use pb::forward_output::Msg as Out;
use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelMsg, ChannelOpenFailure};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel as GrpcChannel;
use tracing::Instrument;

use crate::state::Context;
use crate::upstream::{first_answer, with_first, Placement, UpstreamError};

/// Messages queued towards the agent per forwarded connection, behind the byte
/// budget below.
const INPUT_QUEUE: usize = 16;
/// Client-to-container bytes one SSH connection may hold in the proxy, across its
/// forwards, in KiB: 64 MiB.
///
/// russh acknowledges a client's packets (grants SSH window) as they arrive, not as
/// they are consumed, and a channel whose buffer is full stops the connection's whole
/// loop, window adjustments for the other direction included. A full-duplex stream
/// (an echo, RDP) whose container side waits for its own output to drain would then
/// wait forever. So the proxy keeps reading into this budget while the agent is
/// slow, and only a connection that has this much in flight waits.
pub(crate) const CONNECTION_BUDGET_KIB: usize = 64 * 1024;
/// How long an `ssh -R` listener may take to come up (it may create the container).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the client may take to confirm a `forwarded-tcpip` channel. OpenSSH
/// answers at once (it only connects locally first); one that has not answered in
/// this long is not going to, and the connection accepted in the container would
/// hold an agent stream and socket for ever.
const CLIENT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// SSH's "administratively prohibited" with our own words, which OpenSSH prints.
fn prohibited(message: &str) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 1,
        reason: format!("labssh: {message}"),
    }
}

/// SSH's "connect failed" with our own words.
fn connect_failed(message: &str) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 2,
        reason: format!("labssh: {message}"),
    }
}

/// How a failure to open a forward reaches the client: policy refusals as
/// "administratively prohibited", everything else as "connect failed".
fn open_failure(error: &UpstreamError) -> ChannelOpenFailure {
    match error {
        UpstreamError::Refused {
            message,
            prohibited: true,
        } => prohibited(message),
        other => connect_failed(&other.to_string()),
    }
}

impl Context {
    /// The agent client for the user's container, placing them first.
    async fn agent(&self) -> Result<(Placement, AgentClient<GrpcChannel>), UpstreamError> {
        let upstream = &self.shared.upstream;
        let placement = upstream.place(&self.login.user, &self.environment()).await?;
        let agent = upstream.agent(&placement)?;
        Ok((placement, agent))
    }
}

/// An open Forward stream.
struct Stream {
    tx: mpsc::Sender<pb::ForwardInput>,
    outputs: tonic::Streaming<pb::ForwardOutput>,
}

/// Opens a Forward stream with `first` and waits for the agent's answer.
async fn open_stream(
    agent: &mut AgentClient<GrpcChannel>,
    first: In,
    timeout: Duration,
) -> Result<(Stream, pb::ForwardOpened), UpstreamError> {
    let (tx, inputs) = with_first(pb::ForwardInput { msg: Some(first) }, INPUT_QUEUE);
    let call = agent.forward(labssh_telemetry::grpc::request(inputs));
    let (outputs, opened) = first_answer(timeout, call).await?;
    Ok((Stream { tx, outputs }, opened))
}

/// `ssh -L` / `ssh -D`: one `direct-tcpip` channel. Accepts the channel only once the
/// agent connected, so a refusal reaches the client as the channel's open failure.
pub(crate) async fn direct_tcpip(
    ctx: Context,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    host: String,
    port: u32,
    originator: String,
) {
    let span = tracing::info_span!(
        parent: &ctx.span,
        "forward",
        kind = "direct-tcpip",
        target = %format!("{host}:{port}")
    );
    let user = ctx.login.user.clone();
    let opened = async {
        let (placement, mut agent) = ctx.agent().await?;
        let open = In::Open(pb::ForwardOpen {
            user: user.clone(),
            environment: placement.environment.clone(),
            host: host.clone(),
            port,
            originator: originator.clone(),
        });
        let timeout = ctx.shared.config.session_start_timeout();
        let result = open_stream(&mut agent, open, timeout).await;
        if result.is_err() {
            // A dead agent may be what failed; the next attempt asks the controller.
            ctx.shared
                .upstream
                .forget_placement(&user, &ctx.environment());
        }
        result
    }
    .instrument(span.clone())
    .await;
    let (stream, opened) = match opened {
        Ok(o) => o,
        Err(error) => {
            let failure = open_failure(&error);
            tracing::info!(conn = ctx.conn, %user, target = %format!("{host}:{port}"), "forward refused: {}", failure.description());
            if failure.code() != 1 {
                telemetry::error(Component::Proxy, "forward_failed");
            }
            reply.reject(failure).await;
            return;
        }
    };
    reply.accept().await;
    tracing::info!(conn = ctx.conn, %user, target = %format!("{host}:{port}"), address = %opened.address, container = %opened.container, "forward opened");
    splice(channel, stream, "direct-tcpip", ctx.budget.clone())
        .instrument(span)
        .await;
}

/// Moves bytes both ways until both sides are done or either goes away.
async fn splice(channel: Channel<Msg>, stream: Stream, kind: &'static str, budget: Arc<Semaphore>) {
    let _active = telemetry::forwarding_started(kind);
    let Stream { tx, mut outputs } = stream;
    let (mut read, write) = channel.split();
    // Client → agent, in two steps: the channel is read as long as the connection's
    // budget lasts (see CONNECTION_BUDGET_KIB); the queue is sent on as the agent
    // takes it, each message giving its budget back once sent.
    let (queue, mut queued) = mpsc::unbounded_channel();
    let reader = async move {
        while let Some(msg) = read.wait().await {
            let (input, kib) = match msg {
                ChannelMsg::Data { data } => {
                    telemetry::forwarded_bytes(Direction::ToContainer, data.len());
                    let kib = data.len().div_ceil(1024).max(1);
                    (In::Data(data), kib)
                }
                ChannelMsg::Eof => (In::Eof(pb::Eof {}), 0),
                ChannelMsg::Close => return,
                _ => continue,
            };
            let permit = match u32::try_from(kib) {
                Ok(0) => None,
                Ok(n) => match budget.clone().acquire_many_owned(n).await {
                    Ok(p) => Some(p),
                    Err(_) => return,
                },
                Err(_) => return,
            };
            if queue.send((input, permit)).is_err() {
                return;
            }
        }
    };
    let sender = async move {
        while let Some((input, permit)) = queued.recv().await {
            if tx
                .send(pb::ForwardInput { msg: Some(input) })
                .await
                .is_err()
            {
                return;
            }
            drop(permit);
        }
        // The client closed the channel and everything queued went out; dropping
        // `tx` now ends the stream (after an EOF it was kept open for the other
        // direction).
    };
    let upstream = async {
        tokio::join!(reader, sender);
    };
    let write = &write;
    let downstream = async {
        while let Some(item) = outputs.next().await {
            match item {
                Ok(pb::ForwardOutput {
                    msg: Some(Out::Data(data)),
                }) => {
                    let n = data.len();
                    if write.data_bytes(data).await.is_err() {
                        return;
                    }
                    telemetry::forwarded_bytes(Direction::ToClient, n);
                }
                Ok(pb::ForwardOutput {
                    msg: Some(Out::Eof(_)),
                }) => {
                    let _ = write.eof().await;
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    };
    // Either the client closed the channel (upstream ends), or the agent ended the
    // stream (socket closed both ways, or it failed): then the channel closes.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
    let _ = write.close().await;
}

/// The `ssh -R` listeners of one SSH connection, by the (address, port) the client
/// asked for; cancelled on `cancel-tcpip-forward` and when the connection ends.
#[derive(Default)]
pub(crate) struct RemoteForwards {
    listeners: Mutex<HashMap<(String, u32), CancellationToken>>,
}

impl RemoteForwards {
    /// Stops one listener; false when there was none.
    pub fn cancel(&self, address: &str, port: u32) -> bool {
        let token = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(address.to_owned(), port));
        token.map(|t| t.cancel()).is_some()
    }

    /// How many listeners one connection may hold.
    const MAX: usize = 32;
}

impl Drop for RemoteForwards {
    fn drop(&mut self) {
        for token in self
            .listeners
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            token.cancel();
        }
    }
}

/// Why an `ssh -R` listener was not opened; logged, the client hears only "no".
#[derive(Debug, thiserror::Error)]
pub(crate) enum ListenError {
    /// The connection holds [`RemoteForwards::MAX`] listeners already.
    #[error("too many remote forwards on one connection")]
    TooMany,
    /// Placing the student or asking the agent failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// `ssh -R`: asks the agent to listen in the container; on success returns the port
/// bound and keeps announcing accepted connections as `forwarded-tcpip` channels.
pub(crate) async fn tcpip_forward(
    ctx: Context,
    forwards: Arc<RemoteForwards>,
    address: String,
    port: u32,
) -> Result<u32, ListenError> {
    if forwards
        .listeners
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len()
        >= RemoteForwards::MAX
    {
        return Err(ListenError::TooMany);
    }
    let (placement, mut agent) = ctx.agent().await?;
    let request = pb::ListenRequest {
        user: ctx.login.user.clone(),
        environment: placement.environment.clone(),
        host: address.clone(),
        port,
    };
    let call = agent.listen(labssh_telemetry::grpc::request(request));
    let (mut events, listening) = first_answer(LISTEN_TIMEOUT, call).await?;
    let bound = listening.port;
    let token = CancellationToken::new();
    // OpenSSH matches forwarded channels by the port it asked for, or the one it was
    // told when it asked for 0.
    let key_port = if port == 0 { bound } else { port };
    forwards
        .listeners
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((address.clone(), key_port), token.clone());
    tracing::info!(conn = ctx.conn, user = %ctx.login.user, %address, port = bound, "remote forward listening");
    let accepted = AtomicU64::new(0);
    tokio::spawn(async move {
        // Logged once per listener, not per connection: a loop in the container
        // could otherwise fill the log.
        let mut full_logged = false;
        loop {
            let event = tokio::select! {
                _ = token.cancelled() => break,
                e = events.next() => e,
            };
            let Some(Ok(pb::ListenEvent {
                msg: Some(pb::listen_event::Msg::Accepted(a)),
            })) = event
            else {
                tracing::info!(conn = ctx.conn, %address, port = bound, "remote forward ended by the container's node");
                break;
            };
            accepted.fetch_add(1, Ordering::Relaxed);
            // Not attached, the agent closes it after its attach timeout.
            let Ok(slot) = ctx.slots.clone().try_acquire_owned() else {
                telemetry::error(Component::Proxy, "forward_limit");
                if !std::mem::replace(&mut full_logged, true) {
                    tracing::warn!(conn = ctx.conn, %address, port = bound, "too many forwarded connections; accepted ones are closed until some end");
                }
                continue;
            };
            let attach = In::Attach(pb::ForwardAttach {
                user: ctx.login.user.clone(),
                environment: placement.environment.clone(),
                connection: a.connection,
            });
            let ctx = ctx.clone();
            let mut agent = agent.clone();
            let address = address.clone();
            tokio::spawn(async move {
                forwarded_tcpip(ctx, &mut agent, attach, address, key_port, a).await;
                drop(slot);
            });
        }
        tracing::debug!(
            accepted = accepted.load(Ordering::Relaxed),
            "remote forward stopped"
        );
    });
    Ok(bound)
}

/// One connection accepted in the container for `ssh -R`: attached to a Forward
/// stream, then announced to the client as a `forwarded-tcpip` channel.
async fn forwarded_tcpip(
    ctx: Context,
    agent: &mut AgentClient<GrpcChannel>,
    attach: In,
    address: String,
    port: u32,
    accepted: pb::Accepted,
) {
    let timeout = ctx.shared.config.session_start_timeout();
    let stream = match open_stream(agent, attach, timeout).await {
        Ok((stream, _)) => stream,
        Err(e) => {
            tracing::warn!(
                conn = ctx.conn,
                "accepted connection lost: {}",
                open_failure(&e).description()
            );
            return;
        }
    };
    let channel = tokio::time::timeout(
        CLIENT_CONFIRM_TIMEOUT,
        ctx.handle.channel_open_forwarded_tcpip(
            address,
            port,
            accepted.originator_address,
            accepted.originator_port,
        ),
    )
    .await;
    // Dropping the stream closes the container's side.
    match channel {
        Err(_) => {
            telemetry::error(Component::Proxy, "forward_open_timeout");
            tracing::warn!(
                conn = ctx.conn,
                port,
                "the client did not confirm a forwarded connection within {CLIENT_CONFIRM_TIMEOUT:?}; closed it"
            );
        }
        Ok(Err(e)) => tracing::info!(
            conn = ctx.conn,
            "client refused a forwarded connection: {e}"
        ),
        Ok(Ok(channel)) => splice(channel, stream, "forwarded-tcpip", ctx.budget.clone()).await,
    }
}
