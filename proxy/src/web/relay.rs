//! A request to a student's service: an agent `Forward` stream into the container
//! (the path and policy of `ssh -L`), HTTP/1.1 over it, the response streamed back,
//! a WebSocket upgrade spliced both ways. labssh's cookies are taken out of the
//! request and out of what the service sets; `X-Forwarded-*` say where it came from.

use std::net::SocketAddr;

use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use labssh_proto::pb;
use labssh_telemetry::metrics as telemetry;
use pb::forward_input::Msg as In;
use pb::forward_output::Msg as Out;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::handle::{refuse, Body};
use super::session;
use super::Web;
use crate::auth::identity::Identity;
use crate::forward::open::{open_stream, Stream};

/// Bytes in flight between the HTTP client and the agent stream, each way.
const PIPE: usize = 64 * 1024;

/// Headers that concern one hop only, never passed on (but for an upgrade's).
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// On whose behalf a request reaches a service.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Grant<'a> {
    /// Its owner, placed as at a login (the container made or started if need be).
    Owner(&'a Identity),
    /// A reader (a TA of its environment): the running container, nothing made.
    Reader,
    /// Anyone, while its owner shares it as `shared_as`: the running container,
    /// nothing made, and cut off within [`SHARE_CHECK`] of an `unshare`.
    Stranger { shared_as: &'a str },
}

/// How often a stranger's open request (a WebSocket, a stream) checks that the
/// service is still shared.
pub(crate) const SHARE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Relays `request` to `service` as `grant` allows.
pub(crate) async fn relay(
    web: &Web,
    peer: SocketAddr,
    grant: Grant<'_>,
    service: &pb::ServiceInfo,
    host: &str,
    prefix: Option<String>,
    mut request: Request<Incoming>,
) -> Response<Body> {
    let shared = &web.shared;
    let owner = match grant {
        Grant::Owner(identity) => Some(identity),
        Grant::Reader | Grant::Stranger { .. } => None,
    };
    // The owner is placed as at an SSH login (the container made or started if need
    // be); a reader goes to the running container the registry listed, nothing made.
    let placement = if let Some(identity) = owner {
        match shared
            .upstream
            .place(&service.user, &service.environment, identity)
            .await
        {
            Ok(p) => p,
            Err(e) => return refuse(StatusCode::BAD_GATEWAY, &e.to_string()),
        }
    } else {
        crate::upstream::Placement {
            agent: service.agent.clone(),
            endpoint: service.agent_endpoint.clone(),
            environment: service.environment.clone(),
            notice: String::new(),
            record: String::new(),
        }
    };
    let mut agent = match shared.upstream.agent(&placement) {
        Ok(a) => a,
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    let target = if service.local {
        "localhost".to_owned()
    } else {
        service.addresses.first().cloned().unwrap_or_default()
    };
    let open = pb::ForwardOpen {
        user: service.user.clone(),
        environment: placement.environment.clone(),
        host: target,
        port: service.port,
        originator: peer.to_string(),
        identity: owner.map(crate::upstream::wire_identity),
        socket_path: String::new(),
        reader: owner.is_none(),
    };
    let timeout = shared.config.session_start_timeout();
    let (stream, _) = match open_stream(&mut agent, In::Open(open), timeout).await {
        Ok(opened) => opened,
        Err(e) => {
            shared
                .upstream
                .forget_placement(&service.user, &service.environment);
            return refuse(StatusCode::BAD_GATEWAY, &format!("{}: {e}", service.name));
        }
    };
    let (ours, theirs) = tokio::io::duplex(PIPE);
    match grant {
        Grant::Stranger { shared_as } => {
            let (redis, name) = (shared.redis.clone(), shared_as.to_owned());
            let owner = service.user.clone();
            tokio::spawn(while_shared(redis, name, owner, pump(theirs, stream)));
        }
        Grant::Owner(_) | Grant::Reader => {
            tokio::spawn(pump(theirs, stream));
        }
    }
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(ours)).await {
            Ok(pair) => pair,
            Err(e) => return refuse(StatusCode::BAD_GATEWAY, &format!("{}: {e}", service.name)),
        };
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });
    let upgrade = wants_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
    if let Err(message) = rewrite(
        &mut request,
        peer,
        host,
        prefix.as_deref(),
        upgrade.is_some(),
    ) {
        return refuse(StatusCode::BAD_REQUEST, message);
    }
    let mut response = match sender.send_request(request).await {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_GATEWAY,
                &format!("{} did not answer over HTTP: {e}", service.name),
            )
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client) = upgrade {
            let backend = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                if let (Ok(client), Ok(backend)) = tokio::join!(client, backend) {
                    let _open = telemetry::web_websocket();
                    let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                }
            });
        }
    }
    strip_our_cookies(response.headers_mut());
    response.map(|body| body.boxed())
}

/// Whether the request asks to switch protocols (a WebSocket).
pub(crate) fn wants_upgrade(request: &Request<Incoming>) -> bool {
    request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The request as the service gets it: HTTP/1.1 with its path (below the `/s/NAME`
/// prefix), its Host, no cookie of labssh's, and `X-Forwarded-*` of ours only.
fn rewrite(
    request: &mut Request<Incoming>,
    peer: SocketAddr,
    host: &str,
    prefix: Option<&str>,
    upgrade: bool,
) -> Result<(), &'static str> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let path = match prefix {
        Some(prefix) => path.strip_prefix(prefix).unwrap_or(path),
        None => path,
    };
    let path = if path.is_empty() || path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    *request.uri_mut() = path
        .parse()
        .map_err(|_| "a path the service cannot be sent")?;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    if !upgrade {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
    }
    let cookies: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(session::without_ours)
        .collect();
    headers.remove(header::COOKIE);
    if !cookies.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&cookies.join("; ")) {
            headers.insert(header::COOKIE, value);
        }
    }
    let forwarded: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-forwarded-") || k.as_str() == "forwarded")
        .cloned()
        .collect();
    for name in forwarded {
        headers.remove(name);
    }
    let set = |headers: &mut hyper::HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(headers, "host", host);
    set(headers, "x-forwarded-for", &peer.ip().to_string());
    set(headers, "x-forwarded-proto", "https");
    set(headers, "x-forwarded-host", host);
    if let Some(prefix) = prefix {
        set(headers, "x-forwarded-prefix", prefix);
    }
    Ok(())
}

/// Drops every `Set-Cookie` of a cookie named like labssh's: a service cannot set,
/// replace or clear the front door's session.
fn strip_our_cookies(headers: &mut hyper::HeaderMap) {
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            v.to_str()
                .map(|v| {
                    !v.trim_start()
                        .to_ascii_lowercase()
                        .starts_with(session::OURS)
                })
                .unwrap_or(false)
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
}

/// Runs `pumping` while `owner` still shares `name` (asked every [`SHARE_CHECK`]; a
/// Redis that does not answer shares nothing): an `unshare` ends a stranger's open
/// WebSocket or stream, as the agent's stream and the pipe go with it.
async fn while_shared(
    redis: Option<std::sync::Arc<crate::redis_link::RedisLink>>,
    name: String,
    owner: String,
    pumping: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(pumping);
    let mut every = tokio::time::interval(SHARE_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = &mut pumping => return,
            _ = every.tick() => {
                let now = crate::shares::owner(redis.as_deref(), &name).await;
                if now.as_deref() != Some(owner.as_str()) {
                    tracing::info!(service = %name, "web: no longer shared; a stranger's open connection is closed");
                    return;
                }
            }
        }
    }
}

/// Carries bytes between the HTTP client's end of the pipe and the agent's stream,
/// an end either way carried as an EOF.
async fn pump(pipe: DuplexStream, stream: Stream) {
    let (mut from_client, mut to_client) = tokio::io::split(pipe);
    let Stream { tx, mut outputs } = stream;
    let up = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let msg = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => In::Eof(pb::Eof {}),
                Ok(n) => {
                    telemetry::web_relayed(true, n);
                    In::Data(bytes::Bytes::copy_from_slice(&buf[..n]))
                }
            };
            let end = matches!(msg, In::Eof(_));
            if tx.send(pb::ForwardInput { msg: Some(msg) }).await.is_err() || end {
                return;
            }
        }
    };
    let down = async move {
        while let Some(Ok(output)) = outputs.next().await {
            let written = match output.msg {
                Some(Out::Data(data)) => {
                    telemetry::web_relayed(false, data.len());
                    to_client.write_all(&data).await.is_ok()
                }
                Some(Out::Eof(_)) | Some(Out::Error(_)) => false,
                _ => true,
            };
            if !written {
                break;
            }
        }
        let _ = to_client.shutdown().await;
    };
    tokio::join!(up, down);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_cannot_set_our_cookies() {
        let mut headers = hyper::HeaderMap::new();
        for v in [
            "labssh_session=forged; Domain=lab; Path=/",
            "theme=dark",
            " LABSSH_csrf=x",
            "_xsrf=1",
        ] {
            headers.append(header::SET_COOKIE, HeaderValue::from_str(v).unwrap());
        }
        strip_our_cookies(&mut headers);
        let left: Vec<&str> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["theme=dark", "_xsrf=1"]);
    }
}
