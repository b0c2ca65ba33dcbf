//! Opening a Forward stream to the agent holding the student's container, and
//! how a failure to open one reaches the client.

use std::time::Duration;

use labssh_proto::pb;
use pb::agent_client::AgentClient;
use pb::forward_input::Msg as In;
use russh::ChannelOpenFailure;
use tokio::sync::mpsc;
use tonic::transport::Channel as GrpcChannel;

use crate::state::Context;
use crate::upstream::{first_answer, with_first, Placement, UpstreamError};

/// Messages queued towards the agent per forwarded connection, behind the byte
/// budget below.
const INPUT_QUEUE: usize = 16;
/// SSH's "administratively prohibited" with our own words, which OpenSSH prints.
fn prohibited(message: &str) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 1,
        reason: format!("labssh: {message}"),
    }
}

/// SSH's "connect failed" with our own words.
fn connect_failed(message: &str) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 2,
        reason: format!("labssh: {message}"),
    }
}

/// How a failure to open a forward reaches the client: policy refusals as
/// "administratively prohibited", everything else as "connect failed".
pub(crate) fn open_failure(error: &UpstreamError) -> ChannelOpenFailure {
    match error {
        UpstreamError::Refused {
            message,
            prohibited: true,
        } => prohibited(message),
        other => connect_failed(&other.to_string()),
    }
}

/// The agent client for the user's container, placing them first.
pub(crate) async fn placed_agent(
    ctx: &Context,
) -> Result<(Placement, AgentClient<GrpcChannel>), UpstreamError> {
    if ctx.login.helpdesk {
        return Err(UpstreamError::Refused {
            message: format!(
                "the self-service login {}+ has no container to forward to; log in as {} or {}+ENV",
                ctx.login.user, ctx.login.user, ctx.login.user
            ),
            prohibited: true,
        });
    }
    let upstream = &ctx.shared.upstream;
    let placement = upstream
        .place(&ctx.login.user, &ctx.environment(), &ctx.identity)
        .await?;
    let agent = upstream.agent(&placement)?;
    Ok((placement, agent))
}

/// An open Forward stream.
pub(crate) struct Stream {
    /// Towards the agent.
    pub tx: mpsc::Sender<pb::ForwardInput>,
    /// From the agent.
    pub outputs: tonic::Streaming<pb::ForwardOutput>,
}

/// Opens a Forward stream with `first` and waits for the agent's answer.
pub(crate) async fn open_stream(
    agent: &mut AgentClient<GrpcChannel>,
    first: In,
    timeout: Duration,
) -> Result<(Stream, pb::ForwardOpened), UpstreamError> {
    let (tx, inputs) = with_first(pb::ForwardInput { msg: Some(first) }, INPUT_QUEUE);
    let call = agent.forward(labssh_telemetry::grpc::request(inputs));
    let (outputs, opened) = first_answer(timeout, call).await?;
    Ok((Stream { tx, outputs }, opened))
}
