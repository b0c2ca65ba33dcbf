//! Port forwarding: one Forward stream per forwarded TCP connection, and Listen calls
//! for `ssh -R`.
//!
//! The TCP sockets live in the student's container network namespace (opened by the
//! backend, normally through the container's helper) and are spliced to the gRPC
//! stream; no process is started per forward. Where a connection may go is
//! [`policy`] (the environment's rules under the agent's own guard, [`host_watch`]
//! following this host's addresses); opening one is [`connect`], `ssh -R` listeners
//! are [`listen`] and the connections they accepted wait in [`pending`]; the bytes
//! move in [`splice`].

pub mod agent_peers;
pub mod connect;
pub mod host_watch;
pub mod listen;
pub mod pending;
pub mod policy;
pub mod refusal;
pub mod socket_path;
pub mod splice;

use std::sync::Arc;

use futures::Stream;
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component};
use pb::forward_input::Msg as In;
use pb::forward_output::Msg as Out;
use tonic::Status;

use crate::state::Shared;
use crate::stream;
use connect::Opened;
use refusal::ForwardError;
pub use splice::{OutputSender, OUTPUT_BUFFER};

/// Runs one Forward stream to its end.
pub async fn run<S>(shared: Arc<Shared>, mut inbound: S, tx: OutputSender)
where
    S: Stream<Item = Result<pb::ForwardInput, Status>> + Send + Unpin + 'static,
{
    let _counted = shared.inventory.open_session();
    let Some(first) = stream::first_message(&shared.shutdown, &mut inbound, &tx).await else {
        return;
    };
    let opened = match first.msg {
        Some(In::Open(open)) => {
            // A forward waiting in the start queue leaves it when the proxy's stream
            // is gone; an admitted ensure goes on.
            let left = tokio_util::sync::CancellationToken::new();
            let opening = connect::open(&shared, open, left.clone());
            tokio::pin!(opening);
            loop {
                tokio::select! {
                    _ = tx.closed(), if !left.is_cancelled() => left.cancel(),
                    opened = &mut opening => break opened,
                }
            }
        }
        Some(In::Attach(attach)) => connect::attach(&shared, attach),
        _ => Err(ForwardError::NotOpen),
    };
    // `counted` holds the student's forward count until the connection is gone.
    let Opened {
        stream,
        container,
        address,
        counted: _counted,
        active,
    } = match opened {
        Ok(opened) => opened,
        Err(e) => {
            if let Some(kind) = e.metric_kind() {
                telemetry::error(Component::Agent, kind);
            }
            let error = Out::Error(e.into());
            let _ = stream::answer(&tx, pb::ForwardOutput { msg: Some(error) }).await;
            return;
        }
    };
    let reply = Out::Opened(pb::ForwardOpened {
        container,
        address: address.clone(),
    });
    if !stream::answer(&tx, pb::ForwardOutput { msg: Some(reply) }).await {
        return;
    }
    tokio::select! {
        _ = shared.shutdown.cancelled() => {}
        _ = splice::splice(stream, inbound, &tx) => {}
        // The proxy reset the stream: it gave up waiting (e.g. on a write to a socket
        // nobody in the container reads, which the splice would never leave).
        _ = tx.closed() => {}
        // An operator's (or the student's own) action on the container: the
        // forward ends at once, saying why, instead of holding the action up.
        why = active.ending().ended() => {
            tracing::info!(%address, "forward ended: {why}");
            let error = Out::Error(pb::ForwardError {
                message: why.to_owned(),
                prohibited: false,
            });
            let _ = stream::answer(&tx, pb::ForwardOutput { msg: Some(error) }).await;
        }
    }
    tracing::debug!(%address, "forward closed");
}
