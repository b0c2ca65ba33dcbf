//! `ssh -R`: listeners in the container, and each connection they accept
//! announced to the client as a `forwarded-tcpip` channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component};
use pb::agent_client::AgentClient;
use pb::forward_input::Msg as In;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel as GrpcChannel;

use super::open::{open_failure, open_stream, placed_agent};
use super::splice::splice;
use crate::state::Context;
use crate::upstream::{first_answer, UpstreamError};

/// How long an `ssh -R` listener may take to come up (it may create the container).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the client may take to confirm a `forwarded-tcpip` channel. OpenSSH
/// answers at once (it only connects locally first); one that has not answered in
/// this long is not going to, and the connection accepted in the container would
/// hold an agent stream and socket for ever.
const CLIENT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// The `ssh -R` listeners of one SSH connection, by the (address, port) the client
/// asked for; cancelled on `cancel-tcpip-forward` and when the connection ends.
#[derive(Default)]
pub(crate) struct RemoteForwards {
    listeners: Mutex<HashMap<(String, u32), CancellationToken>>,
}

impl RemoteForwards {
    /// How many listeners there are.
    fn len(&self) -> usize {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Keeps a listener's token, to cancel it by.
    fn insert(&self, address: String, port: u32, token: CancellationToken) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((address, port), token);
    }

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
    /// The login's certificate lacks `permit-port-forwarding`.
    #[error("the certificate does not permit port forwarding")]
    NotPermitted,
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
    if ctx.identity.restrictions.no_port_forwarding {
        return Err(ListenError::NotPermitted);
    }
    if forwards.len() >= RemoteForwards::MAX {
        return Err(ListenError::TooMany);
    }
    let (placement, mut agent) = placed_agent(&ctx).await?;
    let request = pb::ListenRequest {
        user: ctx.login.user.clone(),
        environment: placement.environment.clone(),
        host: address.clone(),
        port,
        identity: Some(crate::upstream::wire_identity(&ctx.identity)),
    };
    let call = agent.listen(labssh_telemetry::grpc::request(request));
    let (events, listening) = first_answer(LISTEN_TIMEOUT, call).await?;
    let bound = listening.port;
    let token = CancellationToken::new();
    // OpenSSH matches forwarded channels by the port it asked for, or the one it was
    // told when it asked for 0.
    let key_port = if port == 0 { bound } else { port };
    forwards.insert(address.clone(), key_port, token.clone());
    tracing::info!(conn = ctx.conn, user = %ctx.login.user, %address, port = bound, "remote forward listening");
    let listener = Listener {
        ctx,
        agent,
        environment: placement.environment,
        address,
        bound,
        key_port,
    };
    tokio::spawn(listener.announce(events, token));
    Ok(bound)
}

/// One `ssh -R` listener in the container, once it is up.
struct Listener {
    /// The connection's context.
    ctx: Context,
    /// The agent holding the container.
    agent: AgentClient<GrpcChannel>,
    /// The environment placed.
    environment: String,
    /// The address the client asked for.
    address: String,
    /// The port bound in the container.
    bound: u32,
    /// The port the client knows the listener by.
    key_port: u32,
}

impl Listener {
    /// Announces each accepted connection until the listener is cancelled or
    /// the agent ends it.
    async fn announce(
        self,
        mut events: tonic::Streaming<pb::ListenEvent>,
        token: CancellationToken,
    ) {
        let (ctx, address, bound) = (&self.ctx, &self.address, self.bound);
        // Logged once per listener, not per connection: a loop in the container
        // could otherwise fill the log.
        let mut full_logged = false;
        let mut accepted = 0u64;
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
            accepted += 1;
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
                environment: self.environment.clone(),
                connection: a.connection,
            });
            let (ctx, mut agent) = (ctx.clone(), self.agent.clone());
            let (address, port) = (address.clone(), self.key_port);
            tokio::spawn(async move {
                forwarded_tcpip(ctx, &mut agent, attach, address, port, a).await;
                drop(slot);
            });
        }
        tracing::debug!(accepted, "remote forward stopped");
    }
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
