//! A tiny HTTP server recording what webhooks send it: plain HTTP on loopback, one
//! request per connection, each answered `204 No Content`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Largest request kept; a webhook's JSON is a few hundred bytes.
const MAX_REQUEST: usize = 64 << 10;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request line and headers.
    pub head: String,
    /// The body, as long as Content-Length said.
    pub body: String,
}

/// The server; stops when dropped (with the test's runtime).
pub struct WebhookServer {
    /// `http://127.0.0.1:PORT/PATH`.
    pub url: String,
    received: mpsc::UnboundedReceiver<Request>,
}

impl WebhookServer {
    /// Listens on a free loopback port; `path` is the path part of [`Self::url`].
    pub async fn start(path: &str) -> WebhookServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}{path}", listener.local_addr().expect("address"));
        let (tx, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(request) = read_request(&mut conn).await {
                        let _ = conn
                            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                        let _ = tx.send(request);
                    }
                });
            }
        });
        WebhookServer { url, received }
    }

    /// The next request, or `None` if none comes `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Request> {
        tokio::time::timeout(within, self.received.recv())
            .await
            .ok()
            .flatten()
    }
}

/// Reads one request: headers, then Content-Length bytes of body.
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 || got.len() > MAX_REQUEST {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return Some(Request {
                    head: head.to_owned(),
                    body: body.to_owned(),
                });
            }
        }
    }
}
