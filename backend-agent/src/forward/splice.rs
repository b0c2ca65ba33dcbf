//! Moving bytes between a forwarded connection and its Forward stream, both ways, with
//! half-closes kept. The agent reads from the socket only while the proxy takes what
//! it sends (a bounded channel on top of HTTP/2's windows), and writes what the proxy
//! sends before it reads the next message.

use bytes::BytesMut;
use futures::{Stream, StreamExt};
use labssh_proto::pb;
use pb::forward_input::Msg as In;
use pb::forward_output::Msg as Out;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tonic::Status;

use crate::backend::Duplex;

/// Output messages buffered per forwarded connection: with [`READ_CHUNK`] bytes
/// each, at most this many chunks wait for the proxy.
pub const OUTPUT_BUFFER: usize = 8;
/// Largest read from a forwarded socket (one gRPC message).
const READ_CHUNK: usize = 64 * 1024;

/// Sends forward output to the proxy.
pub type OutputSender = crate::stream::Sender<pb::ForwardOutput>;

/// Copies both ways until both directions are finished or either side goes away.
pub async fn splice<S>(stream: Box<dyn Duplex>, mut inbound: S, tx: &OutputSender)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc;

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
}
