//! Operator commands against a running controller: `labssh agent drain`.

use std::path::PathBuf;

use anyhow::Context;
use labssh_proto::pb;
use labssh_proto::tls::CONTROLLER_NAME;
use tonic::transport::Endpoint;

#[derive(clap::Subcommand)]
pub enum AgentAction {
    /// Stop new placements on an agent; its containers and sessions go on.
    Drain(DrainArgs),
    /// Let new placements reach a drained agent again.
    Resume(DrainArgs),
}

#[derive(clap::Args)]
pub struct DrainArgs {
    /// The agent's name.
    name: String,
    /// Controller gRPC endpoint (https:// when the cluster uses mTLS).
    #[arg(long, default_value = "http://127.0.0.1:7000")]
    controller: String,
    /// Directory from `labssh certs`, for mTLS (its proxy certificate is used).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
}

pub async fn run(action: AgentAction) -> anyhow::Result<()> {
    let (args, drain) = match action {
        AgentAction::Drain(a) => (a, true),
        AgentAction::Resume(a) => (a, false),
    };
    let mut endpoint = Endpoint::from_shared(args.controller.clone())
        .with_context(|| format!("--controller {:?}", args.controller))?;
    if let Some(dir) = &args.tls_dir {
        endpoint = labssh::certs::files(dir, "proxy")
            .secure(endpoint, CONTROLLER_NAME)
            .map_err(|e| anyhow::anyhow!("--tls-dir: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the controller at {}", args.controller))?;
    let reply = pb::controller_client::ControllerClient::new(channel)
        .drain(pb::DrainRequest {
            agent: args.name.clone(),
            drain,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    if reply.draining {
        println!(
            "agent {} is draining: no new containers are placed on it; existing sessions go on",
            reply.agent
        );
    } else {
        println!("agent {} takes new placements again", reply.agent);
    }
    Ok(())
}
