//! Moving a forwarded connection's bytes both ways, within the connection's
//! byte budget (see [`super::CONNECTION_BUDGET_KIB`]).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Direction};
use pb::forward_input::Msg as In;
use pb::forward_output::Msg as Out;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::open::Stream;

/// How long a forward the client closed waits for the agent to end its stream
/// (to write what the client sent last to the socket) before it is reset.
const AGENT_LINGER: Duration = Duration::from_secs(30);

/// A message for the agent, holding its share of the connection's budget
/// until it is sent.
type Queued = (In, Option<OwnedSemaphorePermit>);

/// Moves bytes both ways until the agent ends the stream (both sides done, or
/// either gone), and after the client closed the channel, at most [`AGENT_LINGER`]
/// longer.
pub(crate) async fn splice(
    channel: Channel<Msg>,
    stream: Stream,
    kind: &'static str,
    budget: Arc<Semaphore>,
) {
    let _active = telemetry::forwarding_started(kind);
    let Stream { tx, mut outputs } = stream;
    let (read, write) = channel.split();
    // Client → agent, in two steps: the channel is read as long as the connection's
    // budget lasts (see CONNECTION_BUDGET_KIB); the queue is sent on as the agent
    // takes it, each message giving its budget back once sent.
    let (queue, queued) = mpsc::unbounded_channel();
    let upstream = async {
        tokio::join!(read_client(read, queue, budget), send_to_agent(queued, tx));
    };
    let downstream = write_to_client(&write, &mut outputs);
    tokio::pin!(upstream);
    tokio::pin!(downstream);
    tokio::select! {
        // The client closed the channel (after its EOF, often at once: OpenSSH closes
        // as soon as both directions saw EOF) and all it sent is queued to the
        // agent, the stream's input ended behind it. The agent may not have written
        // it to the socket yet: dropping the stream now would reset it, and a reset
        // stream loses what was still on its way (the tail of an answer that only
        // came after the container side's EOF, ssh -R's lost replies). So the stream
        // ends the normal way, when the agent ends it; only one that takes longer
        // than AGENT_LINGER is reset.
        _ = &mut upstream => {
            if tokio::time::timeout(AGENT_LINGER, &mut downstream).await.is_err() {
                tracing::debug!(kind, "the agent did not end a forward the client closed; reset it");
            }
        }
        // The agent ended the stream: the socket is done both ways, or failed.
        _ = &mut downstream => {}
    }
    let _ = write.close().await;
}

/// Reads the client's channel into `queue`, within the connection's budget.
async fn read_client(
    mut read: ChannelReadHalf,
    queue: mpsc::UnboundedSender<Queued>,
    budget: Arc<Semaphore>,
) {
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
}

/// Sends what was read on to the agent as it takes it.
async fn send_to_agent(
    mut queued: mpsc::UnboundedReceiver<Queued>,
    tx: mpsc::Sender<pb::ForwardInput>,
) {
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
}

/// Writes the agent's bytes to the client within its SSH window, reading the
/// next message only after that, until the agent ends the stream. Once the client
/// can take no more (it closed the channel), the rest is read and dropped, so the
/// stream still ends the normal way.
async fn write_to_client(
    write: &ChannelWriteHalf<Msg>,
    outputs: &mut tonic::Streaming<pb::ForwardOutput>,
) {
    let mut client_open = true;
    while let Some(item) = outputs.next().await {
        match item {
            Ok(pb::ForwardOutput {
                msg: Some(Out::Data(data)),
            }) if client_open => {
                let n = data.len();
                if write.data_bytes(data).await.is_err() {
                    client_open = false;
                    continue;
                }
                telemetry::forwarded_bytes(Direction::ToClient, n);
            }
            Ok(pb::ForwardOutput {
                msg: Some(Out::Eof(_)),
            }) if client_open => {
                let _ = write.eof().await;
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}
