//! `labssh sessions` and `labssh kick`: every proxy replica's open sessions, from
//! the controller's list of what the proxies report, and ending a student's
//! connections (or one session's) on whichever replica holds them.
//! `labssh sessions --watch ID` follows one terminal session's output live,
//! read-only: nothing typed here reaches the student.

use labssh_proto::pb;

use crate::admin::{connect, ControllerArgs, Counts};

#[derive(clap::Args)]
pub struct SessionsArgs {
    /// Only this student's.
    #[arg(long)]
    user: Option<String>,
    /// Only those on this agent.
    #[arg(long)]
    agent: Option<String>,
    /// One JSON object per session instead of the table.
    #[arg(long)]
    json: bool,
    /// Follow this terminal session's output live, read-only (its id, as the
    /// list gives it), until it ends or Ctrl-C. The student is told.
    #[arg(long, value_name = "SESSION", conflicts_with_all = ["user", "agent", "json"])]
    watch: Option<String>,
    #[command(flatten)]
    controller: ControllerArgs,
}

#[derive(clap::Args)]
pub struct KickArgs {
    /// The student whose connections end, on every proxy (or give --session).
    #[arg(required_unless_present = "session", conflicts_with = "session")]
    user: Option<String>,
    /// One session's id, as `labssh sessions` lists it: its connection ends.
    #[arg(long)]
    session: Option<String>,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// `labssh sessions`.
pub async fn list(args: SessionsArgs) -> anyhow::Result<()> {
    let channel = connect(&args.controller).await?;
    if let Some(session) = args.watch {
        return watch(channel, session).await;
    }
    let reply = pb::controller_client::ControllerClient::new(channel)
        .list_sessions(pb::ListSessionsRequest {
            user: args.user.unwrap_or_default(),
            agent: args.agent.unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    if args.json {
        for s in &reply.sessions {
            println!("{}", json(s));
        }
    } else {
        print!("{}", table(&reply, chrono::Utc::now().timestamp_millis()));
    }
    Ok(())
}

/// `labssh sessions --watch`: the session's output to stdout as it comes, what
/// the watch is about to stderr.
async fn watch(channel: tonic::transport::Channel, session: String) -> anyhow::Result<()> {
    use pb::watch_frame::Frame;
    use std::io::Write;
    let mut frames = pb::controller_client::ControllerClient::new(channel)
        .watch(pb::WatchRequest {
            session: session.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    loop {
        let frame = frames
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        match frame.and_then(|f| f.frame) {
            Some(Frame::Start(start)) => eprintln!(
                "labssh: watching {}'s session {session} in {} ({}x{}, {}), read-only; Ctrl-C stops",
                start.user, start.environment, start.cols, start.rows, start.term
            ),
            Some(Frame::Output(data)) => {
                out.write_all(&data)?;
                out.flush()?;
            }
            Some(Frame::Resize(size)) => {
                eprint!("\r\nlabssh: the student's terminal is now {}x{}\r\n", size.cols, size.rows)
            }
            Some(Frame::Lagged(n)) => {
                eprint!("\r\nlabssh: {n} chunk(s) of output skipped: this terminal fell behind\r\n")
            }
            Some(Frame::Ended(why)) => {
                eprint!("\r\nlabssh: {why}\r\n");
                return Ok(());
            }
            None => anyhow::bail!("the controller ended the watch without a reason"),
        }
    }
}

/// `labssh kick`.
pub async fn kick(args: KickArgs) -> anyhow::Result<()> {
    let channel = connect(&args.controller).await?;
    let reply = pb::controller_client::ControllerClient::new(channel)
        .kick(pb::KickRequest {
            user: args.user.clone().unwrap_or_default(),
            session: args.session.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let what = match (&args.user, &args.session) {
        (Some(user), _) => format!("{user}'s connections"),
        (_, Some(session)) => format!("session {session}"),
        _ => unreachable!("clap requires one"),
    };
    println!(
        "{what}: {} open session(s) listed, {} proxy replica(s) told to end them",
        reply.sessions, reply.proxies
    );
    if reply.proxies == 0 {
        anyhow::bail!("no proxy replica holds {what}");
    }
    Ok(())
}

fn json(s: &pb::SessionInfo) -> serde_json::Value {
    serde_json::json!({
        "id": s.id,
        "user": s.user,
        "environment": s.environment,
        "client": s.client,
        "proxy": s.proxy,
        "agent": s.agent,
        "container": s.container,
        "kind": s.kind,
        "started_unix_ms": s.started_unix_ms,
        "bytes_to_container": s.bytes_to_container,
        "bytes_to_client": s.bytes_to_client,
        "destination": s.destination,
        "watchable": s.watchable,
    })
}

/// One line per session, then how many on how many proxies.
fn table(reply: &pb::ListSessionsReply, now_ms: i64) -> String {
    let mut text = format!(
        "{:<16} {:<12} {:<9} {:<22} {:<16} {:<12} {:>7} {:>15}  {}\n",
        "USER", "ENVIRONMENT", "KIND", "CLIENT", "PROXY", "AGENT", "AGE", "IN/OUT", "ID"
    );
    for s in &reply.sessions {
        let age = humantime::format_duration(std::time::Duration::from_secs(
            ((now_ms - s.started_unix_ms).max(0) / 1000) as u64,
        ));
        let bytes = format!("{}/{}", size(s.bytes_to_container), size(s.bytes_to_client));
        // A forward says where to.
        let id = match s.destination.as_str() {
            "" => s.id.clone(),
            to => format!("{} -> {to}", s.id),
        };
        text += &format!(
            "{:<16} {:<12} {:<9} {:<22} {:<16} {:<12} {:>7} {:>15}  {}\n",
            s.user,
            s.environment,
            s.kind,
            s.client,
            s.proxy,
            s.agent,
            age.to_string(),
            bytes,
            id
        );
    }
    text += &format!(
        "{} session(s) on {} proxy replica(s)\n",
        reply.sessions.len(),
        reply.proxies.len()
    );
    text
}

/// A byte count in the table: `512B`, `12.0K`, `3.4M`, `1.2G`.
fn size(n: u64) -> String {
    const UNITS: [&str; 3] = ["K", "M", "G"];
    if n < 1024 {
        return format!("{n}B");
    }
    let (mut value, mut unit) = (n as f64 / 1024.0, 0);
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_short() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(1023), "1023B");
        assert_eq!(size(12 * 1024), "12.0K");
        assert_eq!(size(3_565_158), "3.4M");
        assert_eq!(size(5 << 40), "5120.0G");
    }

    #[test]
    fn the_table_names_each_session_and_counts_them() {
        let reply = pb::ListSessionsReply {
            sessions: vec![pb::SessionInfo {
                id: "p1:22/3/0".into(),
                user: "alice".into(),
                environment: "default".into(),
                client: "192.0.2.7:50000".into(),
                agent: "node-1".into(),
                kind: "shell".into(),
                started_unix_ms: 1_000,
                proxy: "p1:22".into(),
                bytes_to_container: 300,
                bytes_to_client: 2048,
                ..Default::default()
            }],
            proxies: vec!["p1:22".into(), "p2:22".into()],
        };
        let text = table(&reply, 91_000);
        let line = text.lines().nth(1).unwrap();
        for field in [
            "alice",
            "default",
            "shell",
            "192.0.2.7:50000",
            "p1:22",
            "node-1",
            "1m 30s",
            "300B/2.0K",
            "p1:22/3/0",
        ] {
            assert!(line.contains(field), "{field} in {line:?}");
        }
        assert!(
            text.ends_with("1 session(s) on 2 proxy replica(s)\n"),
            "{text}"
        );
        assert_eq!(json(&reply.sessions[0])["id"], "p1:22/3/0");
    }
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// One JSON object instead of the tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// `labssh status`: the agents (with their containers by state), the proxy
/// replicas reporting and their sessions, and the catalogue's environments.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let channel = connect(&args.controller).await?;
    let mut client = pb::controller_client::ControllerClient::new(channel);
    let words = |s: tonic::Status| anyhow::anyhow!("{}", s.message());
    let agents = client
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(words)?
        .into_inner();
    let sessions = client
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .map_err(words)?
        .into_inner();
    let environments = client
        .list_environments(pb::ListEnvironmentsRequest {})
        .await
        .map_err(words)?
        .into_inner();
    if args.json {
        println!("{}", status_json(&agents, &sessions, &environments));
    } else {
        print!("{}", status_text(&agents, &sessions, &environments));
    }
    Ok(())
}

/// An agent's word for its state: draining, live or down.
fn agent_state(agent: &pb::AgentInfo) -> &'static str {
    if agent.draining {
        "drain"
    } else if agent.live {
        "live"
    } else {
        "down"
    }
}

/// How many of the listed sessions `proxy` holds.
fn sessions_on(sessions: &pb::ListSessionsReply, proxy: &str) -> usize {
    sessions
        .sessions
        .iter()
        .filter(|s| s.proxy == proxy)
        .count()
}

/// `labssh status --json`: what the tables say, as one object.
fn status_json(
    agents: &pb::ListAgentsReply,
    sessions: &pb::ListSessionsReply,
    environments: &pb::ListEnvironmentsReply,
) -> serde_json::Value {
    let none = pb::AgentStatus::default();
    let agents: Vec<serde_json::Value> = agents
        .agents
        .iter()
        .map(|agent| {
            let status = agent.status.as_ref().unwrap_or(&none);
            let counts = Counts::of(agent);
            serde_json::json!({
                "name": agent.name,
                "endpoint": agent.endpoint,
                "state": agent_state(agent),
                "capacity": status.capacity,
                "containers": status.containers,
                "running": counts.running,
                "paused": counts.paused,
                "stopped": counts.stopped,
                "gpus": status.gpus,
                "last_seen_ms": agent.last_seen_ms,
            })
        })
        .collect();
    let proxies: Vec<serde_json::Value> = sessions
        .proxies
        .iter()
        .map(|proxy| serde_json::json!({"name": proxy, "sessions": sessions_on(sessions, proxy)}))
        .collect();
    let names: Vec<&str> = environments
        .environments
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    serde_json::json!({
        "agents": agents,
        "proxies": proxies,
        "sessions": sessions.sessions.len(),
        "environments": names,
        "default_environment": environments.default_environment,
    })
}

fn status_text(
    agents: &pb::ListAgentsReply,
    sessions: &pb::ListSessionsReply,
    environments: &pb::ListEnvironmentsReply,
) -> String {
    let mut text = format!(
        "{:<20} {:<6} {:>8} {:>10} {:>8} {:>7} {:>8} {:>5}\n",
        "AGENT", "STATE", "CAPACITY", "CONTAINERS", "RUNNING", "PAUSED", "STOPPED", "GPUS"
    );
    let none = pb::AgentStatus::default();
    for agent in &agents.agents {
        let status = agent.status.as_ref().unwrap_or(&none);
        let counts = Counts::of(agent);
        text += &format!(
            "{:<20} {:<6} {:>8} {:>10} {:>8} {:>7} {:>8} {:>5}\n",
            agent.name,
            agent_state(agent),
            status.capacity,
            status.containers,
            counts.running,
            counts.paused,
            counts.stopped,
            status.gpus.len()
        );
    }
    text += &format!("\n{:<24} {:>8}\n", "PROXY", "SESSIONS");
    for proxy in &sessions.proxies {
        text += &format!("{proxy:<24} {:>8}\n", sessions_on(sessions, proxy));
    }
    let names: Vec<String> = environments
        .environments
        .iter()
        .map(|e| {
            if e.name == environments.default_environment {
                format!("{} (default)", e.name)
            } else {
                e.name.clone()
            }
        })
        .collect();
    text += &format!(
        "\n{} agent(s), {} proxy replica(s), {} session(s); environments: {}\n",
        agents.agents.len(),
        sessions.proxies.len(),
        sessions.sessions.len(),
        names.join(", ")
    );
    text
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn status_counts_agents_proxies_sessions_and_names_the_default() {
        let agents = pb::ListAgentsReply {
            agents: vec![pb::AgentInfo {
                name: "node-1".into(),
                live: true,
                status: Some(pb::AgentStatus {
                    capacity: 100,
                    containers: 2,
                    inventory: vec![
                        pb::ContainerInfo {
                            state: pb::ContainerState::Running as i32,
                            ..Default::default()
                        },
                        pb::ContainerInfo {
                            state: pb::ContainerState::Stopped as i32,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        };
        let sessions = pb::ListSessionsReply {
            sessions: vec![pb::SessionInfo {
                proxy: "p1:22".into(),
                ..Default::default()
            }],
            proxies: vec!["p1:22".into(), "p2:22".into()],
        };
        let environments = pb::ListEnvironmentsReply {
            environments: vec![
                pb::Environment {
                    name: "default".into(),
                    ..Default::default()
                },
                pb::Environment {
                    name: "gpu".into(),
                    ..Default::default()
                },
            ],
            default_environment: "default".into(),
        };
        let text = status_text(&agents, &sessions, &environments);
        let agent_line = text.lines().nth(1).unwrap();
        let fields: Vec<&str> = agent_line.split_whitespace().collect();
        assert_eq!(fields, ["node-1", "live", "100", "2", "1", "0", "1", "0"]);
        assert!(text.contains("p1:22                           1"), "{text}");
        assert!(text.contains("p2:22                           0"), "{text}");
        assert!(text.ends_with(
            "1 agent(s), 2 proxy replica(s), 1 session(s); environments: default (default), gpu\n"
        ), "{text}");
        // The same figures as JSON.
        let json = status_json(&agents, &sessions, &environments);
        let agent = &json["agents"][0];
        assert_eq!(
            (&agent["name"], &agent["state"], &agent["capacity"]),
            (&"node-1".into(), &"live".into(), &100.into())
        );
        assert_eq!(
            (&agent["running"], &agent["stopped"]),
            (&1.into(), &1.into())
        );
        assert_eq!(
            json["proxies"][0],
            serde_json::json!({"name": "p1:22", "sessions": 1})
        );
        assert_eq!(json["proxies"][1]["sessions"], 0);
        assert_eq!(json["sessions"], 1);
        assert_eq!(json["environments"], serde_json::json!(["default", "gpu"]));
        assert_eq!(json["default_environment"], "default");
    }
}
