//! `labssh containers` and `labssh container stop|start|reset|remove`: every agent's
//! student containers, and an operator's action on one, relayed by the controller to
//! the agent that holds it.

use std::io::{BufRead, IsTerminal, Write};

use labssh_proto::pb;

use crate::admin::{connect, ControllerArgs};

#[derive(clap::Args)]
pub struct ContainersArgs {
    /// Only this student's.
    #[arg(long)]
    user: Option<String>,
    /// Only those on this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only those in this state: running, stopped, paused or creating.
    #[arg(long, value_parser = parse_state)]
    state: Option<pb::ContainerState>,
    /// One JSON object per container instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

#[derive(clap::Args)]
pub struct ContainerArgs {
    #[command(subcommand)]
    verb: ContainerVerb,
}

#[derive(clap::Subcommand)]
enum ContainerVerb {
    /// Stop it (its files kept); the student's next login starts it. Their
    /// sessions in it end, each told why.
    Stop(Target),
    /// Start (or thaw) it now.
    Start(Target),
    /// Make it anew from its environment's image: a fresh root, the home kept.
    Reset(Target),
    /// Remove it; the home is kept unless --home.
    Remove(RemoveArgs),
}

#[derive(clap::Args)]
struct Target {
    /// The student, or USER+ENV for one of their environments (the default one
    /// otherwise), as they log in.
    login: String,
    #[command(flatten)]
    controller: ControllerArgs,
}

#[derive(clap::Args)]
struct RemoveArgs {
    #[command(flatten)]
    target: Target,
    /// Delete the student's home on that node too (only when no other container of
    /// theirs there uses it). Asks for the student's name again unless --yes.
    #[arg(long)]
    home: bool,
    /// Do not ask before deleting the home.
    #[arg(long, requires = "home")]
    yes: bool,
}

fn parse_state(text: &str) -> Result<pb::ContainerState, String> {
    let name = format!("CONTAINER_STATE_{}", text.to_ascii_uppercase());
    match pb::ContainerState::from_str_name(&name) {
        Some(pb::ContainerState::Unspecified) | None => Err(format!(
            "unknown state {text:?}: use running, stopped, paused or creating"
        )),
        Some(state) => Ok(state),
    }
}

/// `labssh containers`.
pub async fn list(args: ContainersArgs) -> anyhow::Result<()> {
    let channel = connect(&args.controller).await?;
    let reply = pb::controller_client::ControllerClient::new(channel)
        .list_containers(pb::ListContainersRequest {
            user: args.user.unwrap_or_default(),
            agent: args.agent.unwrap_or_default(),
            state: args.state.unwrap_or_default().into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    if args.json {
        for placed in &reply.containers {
            println!("{}", json(placed));
        }
    } else {
        print!("{}", table(&reply));
    }
    Ok(())
}

fn json(placed: &pb::PlacedContainer) -> serde_json::Value {
    let c = placed.container.clone().unwrap_or_default();
    serde_json::json!({
        "user": c.user,
        "environment": c.environment,
        "state": c.state().word(),
        "agent": placed.agent,
        "agent_live": placed.live,
        "outdated": c.outdated,
        "gpus": c.gpus,
    })
}

/// One line per container, then how many.
fn table(reply: &pb::ListContainersReply) -> String {
    let mut text = format!(
        "{:<16} {:<12} {:<9} {:<16} {}\n",
        "USER", "ENVIRONMENT", "STATE", "AGENT", "NOTES"
    );
    for placed in &reply.containers {
        let c = placed.container.clone().unwrap_or_default();
        let mut notes = Vec::new();
        if !placed.live {
            notes.push("agent down".to_owned());
        }
        if c.outdated {
            notes.push("outdated: recreated at its next login".to_owned());
        }
        if !c.gpus.is_empty() {
            notes.push(format!("gpus {}", c.gpus.join(",")));
        }
        text += &format!(
            "{:<16} {:<12} {:<9} {:<16} {}\n",
            c.user,
            c.environment,
            c.state().word(),
            placed.agent,
            notes.join("; ")
        );
    }
    text += &format!("{} container(s)\n", reply.containers.len());
    text
}

/// `labssh container …`.
pub async fn act(args: ContainerArgs) -> anyhow::Result<()> {
    let (verb, target, remove_home, yes) = match args.verb {
        ContainerVerb::Stop(t) => (pb::ContainerVerb::Stop, t, false, false),
        ContainerVerb::Start(t) => (pb::ContainerVerb::Start, t, false, false),
        ContainerVerb::Reset(t) => (pb::ContainerVerb::Reset, t, false, false),
        ContainerVerb::Remove(r) => (pb::ContainerVerb::Remove, r.target, r.home, r.yes),
    };
    let (user, environment) = match target.login.split_once('+') {
        Some((user, env)) => (user.to_owned(), env.to_owned()),
        None => (target.login.clone(), String::new()),
    };
    if remove_home && !yes {
        confirm_home(&user)?;
    }
    let channel = connect(&target.controller).await?;
    let reply = pb::controller_client::ControllerClient::new(channel)
        .container_action(pb::ContainerActionRequest {
            user,
            environment,
            verb: verb.into(),
            remove_home,
            by: String::new(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    println!(
        "{} ({} session(s) ended)",
        reply.message, reply.sessions_ended
    );
    Ok(())
}

/// Deleting a home is asked twice: the operator types the student's name.
fn confirm_home(user: &str) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        anyhow::bail!(
            "--home deletes {user}'s files for good: add --yes to do it without a terminal"
        );
    }
    eprint!("This deletes {user}'s home directory on that node for good. Type {user} to go on: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != user {
        anyhow::bail!("not confirmed; nothing was removed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_by_their_short_names() {
        assert_eq!(parse_state("running"), Ok(pb::ContainerState::Running));
        assert_eq!(parse_state("Stopped"), Ok(pb::ContainerState::Stopped));
        assert!(parse_state("unspecified").is_err());
        assert!(parse_state("gone")
            .unwrap_err()
            .contains("running, stopped"));
    }

    #[test]
    fn the_table_notes_what_an_operator_must_know() {
        let placed = |user: &str, live: bool, outdated: bool| pb::PlacedContainer {
            agent: "node1".into(),
            live,
            container: Some(pb::ContainerInfo {
                listening: Vec::new(),
                user: user.into(),
                environment: "default".into(),
                state: pb::ContainerState::Running.into(),
                outdated,
                gpus: vec![],
            }),
        };
        let reply = pb::ListContainersReply {
            containers: vec![placed("alice", true, false), placed("bob", false, true)],
        };
        let text = table(&reply);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("alice") && lines[1].contains("running"));
        assert!(!lines[1].contains("down"), "{text}");
        assert!(lines[2].contains("agent down") && lines[2].contains("outdated"));
        assert_eq!(lines[3], "2 container(s)");
    }
}
