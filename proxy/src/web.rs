//! The HTTPS front door (`labssh web --config FILE`): the services listening in
//! students' containers, served to browsers by name, at
//! `https://8888-alice.DOMAIN/` (wildcard DNS and certificate) or
//! `https://DOMAIN/s/8888-alice/`, behind a login with the same authenticators,
//! credential cache and brute-force limits as SSH (the same config file's `[auth]`,
//! `redis_url` and `[rate_limit]`), and a small portal at `https://DOMAIN/`.
//!
//! Stateless like the SSH replicas: a browser's session is a cookie signed with the
//! key every replica shares (`web.cookie_key_file`, [`session`]). The bytes go
//! through the agent's `Forward` stream, the same path and policy as `ssh -L`
//! ([`relay`]): HTTP/1.1 and HTTP/2 from browsers, HTTP/1.1 into the container,
//! WebSocket upgrades passed through, responses streamed. A student reaches only
//! their own services; labssh's cookies never reach a container, and a container
//! cannot set them. Behind HAProxy, the `[proxy_protocol]` of the same file
//! names the balancers whose PROXY v2 header gives each browser's address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::proxy_protocol::{Peer, Policy};
use crate::state::Shared;

mod admission;
mod handle;
mod lookups;
mod pages;
mod relay;
pub(crate) mod session;

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an HTTP/1.1 client gets to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle HTTP/2 connection is pinged (closed if the ping goes unanswered).
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);

/// What every request of the front door shares.
pub(crate) struct Web {
    /// The replica's state: authenticators, limits, controller and agent clients.
    pub shared: Arc<Shared>,
    /// Signs and checks browser sessions.
    pub sealer: session::Sealer,
    /// `web.domain`.
    pub domain: String,
    /// How long a login lasts, in seconds.
    pub session_secs: u64,
    /// Service lookups by name, answered again for a moment.
    pub lookups: lookups::Lookups,
}

/// Serves HTTPS on an already-bound listener until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let acceptor = acceptor(&config)?;
    let policy = Policy::of(&config.proxy_protocol)?;
    let admission = admission::Admission::new(
        config.web.max_connections,
        config.web.max_connections_per_address,
        config.rate_limit.exempt_nets(),
    );
    let key = crate::credential_cache::load_or_create_key(&config.web.cookie_key_file)
        .map_err(|e| anyhow::anyhow!("web.cookie_key_file: {e}"))?;
    let local = listener.local_addr()?;
    let name = format!("{}-web", crate::server::replica_name(local.port()));
    let domain = config.web.domain.clone();
    let session_secs = config.web.session_hours * 3600;
    let shared = Arc::new(crate::server::replica(config, &name)?);
    let web = Arc::new(Web {
        shared,
        sealer: session::Sealer::new(key),
        domain,
        session_secs,
        lookups: Default::default(),
    });
    tracing::info!(listen = %local, domain = %web.domain, "web front door listening for HTTPS");
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (mut tcp, socket_peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "web accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        // A browser straight from the network takes its place here, in the order
        // connections came; one behind a balancer once its header names it.
        let admitted = if policy.trusts(&socket_peer) {
            None
        } else {
            match admit(&admission, socket_peer, Some(socket_peer.ip())) {
                Some(admitted) => Some(admitted),
                None => continue,
            }
        };
        let (web, acceptor, policy) = (web.clone(), acceptor.clone(), policy.clone());
        let admission = admission.clone();
        connections.spawn(async move {
            let _ = tcp.set_nodelay(true);
            // Behind a balancer, the browser's own address: what logins are
            // limited by, logged under and sent on as X-Forwarded-For.
            let peer = match policy.accept(&mut tcp, socket_peer).await {
                Ok(Peer::Client(peer)) => peer,
                Err(e) => return tracing::warn!("web connection refused: {e}"),
            };
            let _admitted = match admitted {
                Some(admitted) => admitted,
                // A balancer's own connection (no header) stands for clients unknown.
                None => match admit(
                    &admission,
                    peer,
                    Some(peer.ip()).filter(|_| !policy.trusts(&peer)),
                ) {
                    Some(admitted) => admitted,
                    None => return,
                },
            };
            let _open = labssh_telemetry::metrics::web_connection();
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            serve(web, peer, tls).await;
        });
    }
    tracing::info!(listen = %local, "web front door shutting down");
    connections.shutdown().await;
    Ok(())
}

/// A place for `peer`'s connection, capped by `capped`'s count; none (counted and
/// logged) when a limit is full, and the connection is to be closed.
fn admit(
    admission: &admission::Admission,
    peer: SocketAddr,
    capped: Option<std::net::IpAddr>,
) -> Option<admission::Admitted> {
    match admission.admit(capped) {
        Ok(admitted) => Some(admitted),
        Err(full) => {
            labssh_telemetry::metrics::web_refused(full.key());
            tracing::debug!(%peer, limit = full.key(), "web connection refused: web.{} is full", full.key());
            None
        }
    }
}

/// One connection: HTTP/1.1 or HTTP/2 as ALPN chose, upgrades allowed.
async fn serve(
    web: Arc<Web>,
    peer: SocketAddr,
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) {
    let service = hyper::service::service_fn(move |request| {
        let web = web.clone();
        async move { Ok::<_, std::convert::Infallible>(handle::handle(&web, peer, request).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A connection that trickles its request head is closed, and a dead HTTP/2
    // peer is noticed, so neither holds its place for ever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(HTTP2_KEEPALIVE));
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "web connection ended");
    }
}

/// The TLS configuration: `web.tls_cert` and `web.tls_key`, ALPN h2 and http/1.1.
fn acceptor(config: &Config) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let web = &config.web;
    let certs = CertificateDer::pem_file_iter(&web.tls_cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("web.tls_cert {}: {e}", web.tls_cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&web.tls_key)
        .map_err(|e| anyhow::anyhow!("web.tls_key {}: {e}", web.tls_key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("web.tls_cert and web.tls_key: {e}"))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}
