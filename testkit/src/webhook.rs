//! A tiny HTTP server recording what webhooks send it: on loopback, one request
//! per connection. [`WebhookServer::start`] answers each `204 No Content` (the
//! agent's hooks); [`WebhookServer::scripted`] answers what a test's script says,
//! after the delay it says, optionally over https with a CA made for the test
//! (the proxy's webhook authenticator).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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

impl Request {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What a scripted server answers one request with.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Body, sent as `application/json`.
    pub body: String,
    /// How long to wait before answering (a webhook that hangs).
    pub delay: Duration,
}

impl Reply {
    /// `200` with `body`, at once.
    pub fn json(body: serde_json::Value) -> Reply {
        Reply {
            status: 200,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
}

/// Decides each request's reply.
pub type Script = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// The server; stops when dropped (with the test's runtime).
pub struct WebhookServer {
    /// `http://127.0.0.1:PORT/PATH` (`https://` when scripted with TLS).
    pub url: String,
    /// With TLS: the PEM of the CA that signed the server's certificate.
    pub ca_pem: Option<String>,
    received: mpsc::UnboundedReceiver<Request>,
}

impl WebhookServer {
    /// Listens on a free loopback port; `path` is the path part of [`Self::url`].
    pub async fn start(path: &str) -> WebhookServer {
        let no_content = Arc::new(|_: &Request| Reply {
            status: 204,
            body: String::new(),
            delay: Duration::ZERO,
        });
        WebhookServer::serve(path, no_content, None).await
    }

    /// Like [`WebhookServer::start`], answering with `script`; with `tls`, over
    /// https for 127.0.0.1 with a certificate from a CA made here ([`Self::ca_pem`]).
    pub async fn scripted(path: &str, script: Script, tls: bool) -> WebhookServer {
        let tls = tls.then(test_tls);
        WebhookServer::serve(path, script, tls).await
    }

    async fn serve(
        path: &str,
        script: Script,
        tls: Option<(tokio_rustls::TlsAcceptor, String)>,
    ) -> WebhookServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!(
            "{scheme}://{}{path}",
            listener.local_addr().expect("address")
        );
        let (acceptor, ca_pem) = match tls {
            Some((a, pem)) => (Some(a), Some(pem)),
            None => (None, None),
        };
        let (tx, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (tx, script, acceptor) = (tx.clone(), script.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(conn) = acceptor.accept(conn).await {
                                answer(conn, &script, &tx).await;
                            }
                        }
                        None => answer(conn, &script, &tx).await,
                    }
                });
            }
        });
        WebhookServer {
            url,
            ca_pem,
            received,
        }
    }

    /// The next request, or `None` if none comes `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Request> {
        tokio::time::timeout(within, self.received.recv())
            .await
            .ok()
            .flatten()
    }

    /// The requests received so far and not yet taken, without waiting.
    pub fn taken_now(&mut self) -> Vec<Request> {
        let mut all = Vec::new();
        while let Ok(request) = self.received.try_recv() {
            all.push(request);
        }
        all
    }
}

/// Reads one request, records it, and answers what `script` says.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: S,
    script: &Script,
    tx: &mpsc::UnboundedSender<Request>,
) {
    let Some(request) = read_request(&mut conn).await else {
        return;
    };
    let reply = script(&request);
    let _ = tx.send(request);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let head = format!(
        "HTTP/1.1 {} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.body.len()
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(reply.body.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// A CA and a certificate it signed for 127.0.0.1: the acceptor, and the CA's PEM.
fn test_tls() -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server TLS config");
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_cert.pem(),
    )
}

/// Reads one request: headers, then Content-Length bytes of body.
async fn read_request<S: AsyncRead + Unpin>(conn: &mut S) -> Option<Request> {
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
