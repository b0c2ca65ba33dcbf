//! Starting a Docker exec on a connection we own.
//!
//! bollard's `start_exec` guesses per read whether bytes are multiplexed frames or raw
//! terminal output, and a terminal chunk that starts with byte 0, 1 or 2 (binary output,
//! some escape sequences) is taken for a frame header and the stream stalls. Here the
//! hijacked unix socket is ours: terminal output is passed through untouched, other
//! output is demultiplexed by frame, and `shutdown()` on the write half half-closes the
//! socket, which Docker turns into EOF on the process's stdin.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::backend::{BackendError, Output};

/// Docker answers the upgrade before it starts the process, so this only covers a
/// daemon that is badly overloaded.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);
/// A response head larger than this is not Docker talking.
const MAX_HEAD_LEN: usize = 64 * 1024;
/// Size of one read of terminal output, and so the largest chunk sent on.
const READ_CHUNK: usize = 16 * 1024;
/// Docker's frame header: stream type, three zero bytes, big-endian payload length.
const FRAME_HEADER_LEN: usize = 8;

/// An exec whose start request was accepted: its output and its stdin.
pub struct Hijacked {
    /// Output chunks until the process closes its output.
    pub output: BoxStream<'static, Output>,
    /// The process's stdin; shutdown (or drop) half-closes the connection.
    pub stdin: OwnedWriteHalf,
}

/// Sends `POST /exec/{id}/start` with an upgrade and returns the raw stream.
pub async fn start_exec(
    socket: &str,
    api_version: &str,
    exec_id: &str,
    tty: bool,
    console_size: Option<(u16, u16)>,
) -> Result<Hijacked, BackendError> {
    let failed = |message: String| BackendError::SpawnFailed(message);
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| failed(format!("cannot connect to {socket}: {e}")))?;
    let (mut read, mut write) = stream.into_split();

    let mut body = serde_json::json!({ "Detach": false, "Tty": tty });
    if let Some((rows, cols)) = console_size {
        // Honoured from API 1.42 on; older daemons ignore it and get a resize instead.
        body["ConsoleSize"] = serde_json::json!([rows, cols]);
    }
    let body = body.to_string();
    let request = format!(
        "POST /v{api_version}/exec/{exec_id}/start HTTP/1.1\r\n\
         Host: docker\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {}\r\n\
         Connection: Upgrade\r\n\
         Upgrade: tcp\r\n\r\n{body}",
        body.len()
    );
    write
        .write_all(request.as_bytes())
        .await
        .map_err(|e| failed(format!("cannot send exec start: {e}")))?;

    let (status, mut buf, content_length) =
        tokio::time::timeout(UPGRADE_TIMEOUT, read_head(&mut read))
            .await
            .map_err(|_| failed("Docker did not answer the exec start".to_owned()))??;
    if status != 101 && status != 200 {
        let message = read_error_body(&mut read, &mut buf, content_length).await;
        return Err(failed(format!("Docker answered {status}: {message}")));
    }
    Ok(Hijacked {
        output: output_stream(buf, read, tty),
        stdin: write,
    })
}

/// Reads the response head; returns the status code, bytes read past the head and the
/// Content-Length if there was one.
async fn read_head(
    read: &mut OwnedReadHalf,
) -> Result<(u16, BytesMut, Option<usize>), BackendError> {
    let bad = |m: String| BackendError::SpawnFailed(m);
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.advance(end + 4);
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| bad(format!("unexpected answer from Docker: {head:?}")))?;
            let content_length = lines.find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            });
            return Ok((status, buf, content_length));
        }
        if buf.len() > MAX_HEAD_LEN {
            return Err(bad("oversized answer from Docker".to_owned()));
        }
        let n = read
            .read_buf(&mut buf)
            .await
            .map_err(|e| bad(format!("reading Docker's answer: {e}")))?;
        if n == 0 {
            return Err(bad("Docker closed the connection".to_owned()));
        }
    }
}

/// Best-effort read of an error response's `{"message": ...}`.
async fn read_error_body(
    read: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    content_length: Option<usize>,
) -> String {
    let want = content_length.unwrap_or(MAX_HEAD_LEN).min(MAX_HEAD_LEN);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while buf.len() < want {
            match read.read_buf(buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(buf).trim().to_owned();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .unwrap_or(text)
}

/// Turns the raw connection into output chunks: passed through for a terminal,
/// demultiplexed by frame header otherwise.
fn output_stream(buf: BytesMut, read: OwnedReadHalf, tty: bool) -> BoxStream<'static, Output> {
    stream::unfold((buf, read), move |(mut buf, mut read)| async move {
        loop {
            if tty {
                if !buf.is_empty() {
                    let chunk = buf.split().freeze();
                    return Some((Output::Stdout(chunk), (buf, read)));
                }
            } else if let Some(frame) = take_frame(&mut buf) {
                match frame {
                    Some(output) => return Some((output, (buf, read))),
                    None => continue,
                }
            }
            buf.reserve(READ_CHUNK);
            match read.read_buf(&mut buf).await {
                Ok(0) => {
                    if !buf.is_empty() && !tty {
                        tracing::debug!(bytes = buf.len(), "exec stream ended inside a frame");
                    }
                    return None;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "exec stream read failed");
                    return None;
                }
            }
        }
    })
    .boxed()
}

/// Takes one complete frame off `buf`: `None` when more bytes are needed,
/// `Some(None)` for a frame that carries nothing to pass on.
fn take_frame(buf: &mut BytesMut) -> Option<Option<Output>> {
    if buf.len() < FRAME_HEADER_LEN {
        return None;
    }
    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if buf.len() < FRAME_HEADER_LEN + len {
        buf.reserve(FRAME_HEADER_LEN + len - buf.len());
        return None;
    }
    let kind = buf[0];
    buf.advance(FRAME_HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    Some(match kind {
        _ if payload.is_empty() => None,
        1 => Some(Output::Stdout(payload)),
        2 => Some(Output::Stderr(payload)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_by_stream() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 2]);
        buf.extend_from_slice(b"hi");
        buf.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 3]);
        buf.extend_from_slice(b"er");
        assert_eq!(
            take_frame(&mut buf),
            Some(Some(Output::Stdout("hi".into())))
        );
        assert_eq!(take_frame(&mut buf), None, "incomplete frame");
        buf.extend_from_slice(b"r");
        assert_eq!(
            take_frame(&mut buf),
            Some(Some(Output::Stderr("err".into())))
        );
        assert!(buf.is_empty());
    }
}
