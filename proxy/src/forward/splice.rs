//! Moving a forwarded connection's bytes both ways, within the connection's
//! byte budget (see [`super::CONNECTION_BUDGET_KIB`]).

use std::sync::Arc;

use futures::StreamExt;
use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Direction};
use pb::forward_input::Msg as In;
use pb::forward_output::Msg as Out;
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::open::Stream;

/// A message for the agent, holding its share of the connection's budget
/// until it is sent.
type Queued = (In, Option<OwnedSemaphorePermit>);

/// Moves bytes both ways until both sides are done or either goes away.
pub(crate) async fn splice(
    channel: Channel<Msg>,
    stream: Stream,
    kind: &'static str,
    budget: Arc<Semaphore>,
) {
    let _active = telemetry::forwarding_started(kind);
    let Stream { tx, outputs } = stream;
    let (read, write) = channel.split();
    // Client → agent, in two steps: the channel is read as long as the connection's
    // budget lasts (see CONNECTION_BUDGET_KIB); the queue is sent on as the agent
    // takes it, each message giving its budget back once sent.
    let (queue, queued) = mpsc::unbounded_channel();
    let upstream = async {
        tokio::join!(read_client(read, queue, budget), send_to_agent(queued, tx));
    };
    // Either the client closed the channel (upstream ends), or the agent ended the
    // stream (socket closed both ways, or it failed): then the channel closes.
    tokio::select! {
        _ = upstream => {}
        _ = write_to_client(&write, outputs) => {}
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
/// next message only after that.
async fn write_to_client(
    write: &ChannelWriteHalf<Msg>,
    mut outputs: tonic::Streaming<pb::ForwardOutput>,
) {
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
}
