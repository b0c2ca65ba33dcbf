//! What a Session and a Forward stream from a proxy have in common: the stream counts
//! as one of the agent's sessions while it lives, its first message asks for
//! something, and exactly one answer to it (started, or why not) comes back before
//! anything else.

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Sends a stream's output to the proxy; bounded, so a slow proxy slows the sender.
pub type Sender<T> = mpsc::Sender<Result<T, Status>>;

/// The first message of a stream. `None` when the agent shuts down, or the proxy stops
/// reading or leaves before it sent one: there is nobody to answer then.
pub async fn first_message<M, S, O>(
    shutdown: &CancellationToken,
    inbound: &mut S,
    tx: &Sender<O>,
) -> Option<M>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
{
    tokio::select! {
        _ = shutdown.cancelled() => None,
        _ = tx.closed() => None,
        first = inbound.next() => first?.ok(),
    }
}

/// Sends the one answer to the first message; false when the proxy is gone.
pub async fn answer<O>(tx: &Sender<O>, answer: O) -> bool {
    tx.send(Ok(answer)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_message_or_nobody_to_answer() {
        let stop = CancellationToken::new();
        let (tx, _rx) = mpsc::channel::<Result<u8, Status>>(1);
        let mut inbound = futures::stream::iter([Ok(7u8), Ok(8)]);
        assert_eq!(first_message(&stop, &mut inbound, &tx).await, Some(7));
        // A proxy that left with an error, or said nothing at all.
        let mut failed = futures::stream::iter([Err::<u8, _>(Status::cancelled("gone"))]);
        assert_eq!(first_message(&stop, &mut failed, &tx).await, None);
        let mut silent = futures::stream::iter(Vec::<Result<u8, Status>>::new());
        assert_eq!(first_message(&stop, &mut silent, &tx).await, None);
        // Shutdown wins over a proxy that has not spoken yet.
        stop.cancel();
        let mut pending = futures::stream::pending::<Result<u8, Status>>();
        assert_eq!(first_message(&stop, &mut pending, &tx).await, None);
        // So does a proxy that stopped reading.
        let (tx, rx) = mpsc::channel::<Result<u8, Status>>(1);
        drop(rx);
        assert!(!answer(&tx, 1).await);
        let mut pending = futures::stream::pending::<Result<u8, Status>>();
        let stop = CancellationToken::new();
        assert_eq!(first_message(&stop, &mut pending, &tx).await, None);
    }
}
