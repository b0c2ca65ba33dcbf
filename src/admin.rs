//! Operator commands against a running controller: `labssh agent drain`, `resume`
//! and `list` (each agent's containers by state, and how many are outdated).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use labssh_proto::pb;
use labssh_proto::roles::Role;
use labssh_proto::tls::{TlsFiles, CONTROLLER_NAME};
use tonic::transport::Endpoint;

#[derive(clap::Subcommand)]
pub enum AgentAction {
    /// Stop new placements on an agent; its containers and sessions go on.
    Drain(DrainArgs),
    /// Let new placements reach a drained agent again.
    Resume(DrainArgs),
    /// Every agent with its containers by state, and how many are on an old version
    /// of their environment (recreated at their next login with no open session).
    List(ListArgs),
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// One JSON object per agent instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

#[derive(clap::Args)]
pub struct DrainArgs {
    /// The agent's name.
    name: String,
    #[command(flatten)]
    controller: ControllerArgs,
}

#[derive(clap::Args)]
pub(crate) struct ControllerArgs {
    /// Controller gRPC endpoint (https:// when the cluster uses mTLS).
    #[arg(long, default_value = "http://127.0.0.1:7000")]
    controller: String,
    /// Directory from `labssh certs`, for mTLS: an admin certificate in it is
    /// used (`labssh certs --role admin --name NAME` issues one).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Which admin certificate in --tls-dir: admin-NAME.pem (default: the
    /// only one there).
    #[arg(long, requires = "tls_dir")]
    tls_name: Option<String>,
}

/// The admin certificate to present from `dir`.
fn admin_files(dir: &Path, name: Option<&str>) -> anyhow::Result<TlsFiles> {
    if let Some(name) = name {
        let files = labssh::certs::files(dir, Role::Admin, name);
        if !files.cert.is_file() {
            bail!(
                "--tls-name {name}: {} does not exist; issue it with `labssh certs --dir {} --role admin --name {name}`",
                files.cert.display(),
                dir.display()
            );
        }
        return Ok(files);
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("--tls-dir {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            Some(
                file.strip_prefix("admin-")?
                    .strip_suffix(".pem")?
                    .to_string(),
            )
        })
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(labssh::certs::files(dir, Role::Admin, one)),
        [] => bail!(
            "--tls-dir {}: no admin certificate there; issue one with `labssh certs --dir {} --role admin --name NAME`",
            dir.display(),
            dir.display()
        ),
        several => bail!(
            "--tls-dir {} has several admin certificates ({}); choose one with --tls-name",
            dir.display(),
            several.join(", ")
        ),
    }
}

pub async fn run(action: AgentAction) -> anyhow::Result<()> {
    let (args, drain) = match action {
        AgentAction::Drain(a) => (a, true),
        AgentAction::Resume(a) => (a, false),
        AgentAction::List(l) => return list(&l).await,
    };
    let channel = connect(&args.controller).await?;
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

/// `labssh agent list`.
async fn list(args: &ListArgs) -> anyhow::Result<()> {
    let channel = connect(&args.controller).await?;
    let reply = pb::controller_client::ControllerClient::new(channel)
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    if args.json {
        for agent in &reply.agents {
            println!("{}", agent_json(agent));
        }
    } else {
        print!("{}", agents_table(&reply.agents));
    }
    Ok(())
}

/// An agent's word for whether it takes placements: drain, yes or no.
fn live_word(agent: &pb::AgentInfo) -> &'static str {
    if agent.draining {
        "drain"
    } else if agent.live {
        "yes"
    } else {
        "no"
    }
}

/// An agent's containers by state, and how many are on an old version of their
/// environment: what `agent list` and `status` show of its inventory.
pub(crate) struct Counts {
    pub running: usize,
    pub paused: usize,
    pub stopped: usize,
    pub outdated: usize,
}

impl Counts {
    pub(crate) fn of(agent: &pb::AgentInfo) -> Counts {
        use pb::ContainerState as S;
        let inventory = agent
            .status
            .as_ref()
            .map(|s| s.inventory.as_slice())
            .unwrap_or_default();
        let count = |state: S| inventory.iter().filter(|c| c.state() == state).count();
        Counts {
            running: count(S::Running),
            paused: count(S::Paused),
            stopped: count(S::Stopped),
            outdated: inventory.iter().filter(|c| c.outdated).count(),
        }
    }
}

/// `labssh agent list --json`: what a table row says, as an object.
fn agent_json(agent: &pb::AgentInfo) -> serde_json::Value {
    let counts = Counts::of(agent);
    serde_json::json!({
        "name": agent.name,
        "endpoint": agent.endpoint,
        "live": agent.live,
        "draining": agent.draining,
        "running": counts.running,
        "paused": counts.paused,
        "stopped": counts.stopped,
        "outdated": counts.outdated,
    })
}

/// One line per agent, then the outdated total.
fn agents_table(agents: &[pb::AgentInfo]) -> String {
    let mut text = format!(
        "{:<20} {:<5} {:>8} {:>7} {:>7} {:>8}\n",
        "AGENT", "LIVE", "RUNNING", "PAUSED", "STOPPED", "OUTDATED"
    );
    let mut outdated_total = 0;
    for agent in agents {
        let counts = Counts::of(agent);
        outdated_total += counts.outdated;
        text += &format!(
            "{:<20} {:<5} {:>8} {:>7} {:>7} {:>8}\n",
            agent.name,
            live_word(agent),
            counts.running,
            counts.paused,
            counts.stopped,
            counts.outdated
        );
    }
    text += &format!(
        "{outdated_total} container(s) on an old version of their environment; each is recreated at its next login with no open session\n"
    );
    text
}

/// A channel to the controller `args` name, with the admin certificate if asked.
pub(crate) async fn connect(args: &ControllerArgs) -> anyhow::Result<tonic::transport::Channel> {
    let mut endpoint = Endpoint::from_shared(args.controller.clone())
        .with_context(|| format!("--controller {:?}", args.controller))?;
    if let Some(dir) = &args.tls_dir {
        endpoint = admin_files(dir, args.tls_name.as_deref())?
            .secure(endpoint, CONTROLLER_NAME)
            .map_err(|e| anyhow::anyhow!("--tls-dir: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the controller at {}", args.controller))?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_counts_outdated_containers() {
        let container = |state: pb::ContainerState, outdated| pb::ContainerInfo {
            listening: Vec::new(),
            user: "alice".into(),
            environment: "default".into(),
            state: state as i32,
            outdated,
            gpus: Vec::new(),
        };
        let agents = [pb::AgentInfo {
            name: "node1".into(),
            live: true,
            status: Some(pb::AgentStatus {
                inventory: vec![
                    container(pb::ContainerState::Running, true),
                    container(pb::ContainerState::Paused, false),
                    container(pb::ContainerState::Stopped, true),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }];
        let table = agents_table(&agents);
        let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row, ["node1", "yes", "1", "1", "1", "2"]);
        let json = agent_json(&agents[0]);
        assert_eq!(
            (&json["name"], &json["live"], &json["draining"]),
            (&"node1".into(), &true.into(), &false.into())
        );
        assert_eq!(
            (
                &json["running"],
                &json["paused"],
                &json["stopped"],
                &json["outdated"]
            ),
            (&1.into(), &1.into(), &1.into(), &2.into())
        );
        assert!(
            table.contains("2 container(s) on an old version"),
            "{table}"
        );
    }
}
