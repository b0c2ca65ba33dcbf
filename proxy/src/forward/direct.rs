//! `ssh -L` / `ssh -D`: one `direct-tcpip` (or, to a unix socket,
//! `direct-streamlocal@openssh.com`) channel, one Forward stream.

use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component};
use pb::forward_input::Msg as In;
use russh::server::{ChannelOpenHandle, Msg};
use russh::Channel;
use tracing::Instrument;

use super::open::{open_failure, open_stream, placed_agent};
use super::splice::splice;
use crate::state::Context;

/// Where a local forward goes, inside the student's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    /// `direct-tcpip`: a host and port as the client named them.
    Tcp {
        /// A name, an address or "localhost".
        host: String,
        /// The port there.
        port: u32,
    },
    /// `direct-streamlocal@openssh.com`: a unix socket's path.
    Socket(String),
}

impl Destination {
    /// The channel type, for spans and metrics.
    fn kind(&self) -> &'static str {
        match self {
            Destination::Tcp { .. } => "direct-tcpip",
            Destination::Socket(_) => "direct-streamlocal",
        }
    }

    /// The Forward stream's open message for `user` in `environment`.
    fn open(&self, user: String, environment: String, originator: String) -> pb::ForwardOpen {
        let (host, port, socket_path) = match self {
            Destination::Tcp { host, port } => (host.clone(), *port, String::new()),
            Destination::Socket(path) => (String::new(), 0, path.clone()),
        };
        pb::ForwardOpen {
            user,
            environment,
            host,
            port,
            originator,
            identity: None,
            socket_path,
            reader: false,
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Tcp { host, port } => write!(f, "{host}:{port}"),
            Destination::Socket(path) => f.write_str(path),
        }
    }
}

/// `ssh -L` / `ssh -D`: one direct channel. Accepts the channel only once the agent
/// connected, so a refusal reaches the client as the channel's open failure. A login
/// whose certificate lacks `permit-port-forwarding` is refused at once.
pub(crate) async fn direct(
    ctx: Context,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    destination: Destination,
    originator: String,
) {
    let kind = destination.kind();
    let target = destination.to_string();
    let span = tracing::info_span!(parent: &ctx.span, "forward", kind, target = %target);
    let user = ctx.login.user.clone();
    if ctx.identity.restrictions.no_port_forwarding {
        tracing::info!(conn = ctx.conn, %user, %target, "forward refused: the certificate does not permit port forwarding");
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    }
    let opened = async {
        let (placement, mut agent) = placed_agent(&ctx).await?;
        let mut open = destination.open(
            user.clone(),
            placement.environment.clone(),
            originator.clone(),
        );
        open.identity = Some(crate::upstream::wire_identity(&ctx.identity));
        let timeout = ctx.shared.config.session_start_timeout();
        let result = open_stream(&mut agent, In::Open(open), timeout)
            .await
            .map(|(stream, opened)| (stream, opened, placement));
        if result.is_err() {
            // A dead agent may be what failed; the next attempt asks the controller.
            ctx.shared
                .upstream
                .forget_placement(&user, &ctx.environment());
        }
        result
    }
    .instrument(span.clone())
    .await;
    let (stream, opened, placement) = match opened {
        Ok(o) => o,
        Err(error) => {
            let failure = open_failure(&error);
            tracing::info!(conn = ctx.conn, %user, %target, "forward refused: {}", failure.description());
            if failure.code() != 1 {
                telemetry::error(Component::Proxy, "forward_failed");
            }
            reply.reject(failure).await;
            return;
        }
    };
    reply.accept().await;
    tracing::info!(conn = ctx.conn, %user, %target, address = %opened.address, container = %opened.container, "forward opened");
    let fields = serde_json::json!({
        "conn": ctx.conn,
        "client": ctx.peer,
        "user": user,
        "environment": ctx.environment(),
        "kind": kind,
        "destination": target.to_string(),
        "address": opened.address,
        "container": opened.container,
    });
    ctx.shared.audit.record("forward_open", fields.clone());
    // Operators see it in `labssh sessions`, as long as it is open.
    let _listed = ctx.shared.live.session(
        ctx.conn,
        channel.id(),
        pb::SessionInfo {
            user: user.clone(),
            environment: placement.environment.clone(),
            client: ctx.peer.clone(),
            agent: placement.agent.clone(),
            kind: "forward".to_owned(),
            started_unix_ms: chrono::Utc::now().timestamp_millis(),
            container: opened.container.clone(),
            destination: target.clone(),
            ..Default::default()
        },
        None,
    );
    splice(channel, stream, kind, ctx.budget.clone())
        .instrument(span)
        .await;
    ctx.shared.audit.record("forward_close", fields);
}
