//! `ssh -L` / `ssh -D`: one `direct-tcpip` channel, one Forward stream.

use labssh_proto::pb;
use labssh_telemetry::metrics::{self as telemetry, Component};
use pb::forward_input::Msg as In;
use russh::server::{ChannelOpenHandle, Msg};
use russh::Channel;
use tracing::Instrument;

use super::open::{open_failure, open_stream, placed_agent};
use super::splice::splice;
use crate::state::Context;

/// `ssh -L` / `ssh -D`: one `direct-tcpip` channel. Accepts the channel only once the
/// agent connected, so a refusal reaches the client as the channel's open failure.
/// A login whose certificate lacks `permit-port-forwarding` is refused at once.
pub(crate) async fn direct_tcpip(
    ctx: Context,
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    host: String,
    port: u32,
    originator: String,
) {
    let span = tracing::info_span!(
        parent: &ctx.span,
        "forward",
        kind = "direct-tcpip",
        target = %format!("{host}:{port}")
    );
    let user = ctx.login.user.clone();
    if ctx.identity.restrictions.no_port_forwarding {
        tracing::info!(conn = ctx.conn, %user, target = %format!("{host}:{port}"), "forward refused: the certificate does not permit port forwarding");
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    }
    let opened = async {
        let (placement, mut agent) = placed_agent(&ctx).await?;
        let open = In::Open(pb::ForwardOpen {
            user: user.clone(),
            environment: placement.environment.clone(),
            host: host.clone(),
            port,
            originator: originator.clone(),
            identity: Some(crate::upstream::wire_identity(&ctx.identity)),
        });
        let timeout = ctx.shared.config.session_start_timeout();
        let result = open_stream(&mut agent, open, timeout).await;
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
    let (stream, opened) = match opened {
        Ok(o) => o,
        Err(error) => {
            let failure = open_failure(&error);
            tracing::info!(conn = ctx.conn, %user, target = %format!("{host}:{port}"), "forward refused: {}", failure.description());
            if failure.code() != 1 {
                telemetry::error(Component::Proxy, "forward_failed");
            }
            reply.reject(failure).await;
            return;
        }
    };
    reply.accept().await;
    tracing::info!(conn = ctx.conn, %user, target = %format!("{host}:{port}"), address = %opened.address, container = %opened.container, "forward opened");
    splice(channel, stream, "direct-tcpip", ctx.budget.clone())
        .instrument(span)
        .await;
}
