//! `labssh services`: the TCP services listening in students' running containers,
//! by name (`PORT-USER[-ENV]`), from the agents' reports to the controller.

use labssh_proto::pb;

use crate::admin::{connect, ControllerArgs};

#[derive(clap::Args)]
pub struct ServicesArgs {
    /// Only this student's.
    #[arg(long)]
    user: Option<String>,
    /// Only those on this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only the service of this name (`8888-alice`, `jupyter-alice`).
    #[arg(long)]
    name: Option<String>,
    /// One JSON object per service instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// `labssh services`.
pub async fn list(args: ServicesArgs) -> anyhow::Result<()> {
    let channel = connect(&args.controller).await?;
    let reply = pb::controller_client::ControllerClient::new(channel)
        .list_services(pb::ListServicesRequest {
            user: args.user.unwrap_or_default(),
            agent: args.agent.unwrap_or_default(),
            name: args.name.unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    if args.json {
        for service in &reply.services {
            println!("{}", json(service));
        }
    } else {
        print!("{}", table(&reply.services));
    }
    Ok(())
}

fn json(s: &pb::ServiceInfo) -> serde_json::Value {
    serde_json::json!({
        "name": s.name,
        "user": s.user,
        "environment": s.environment,
        "port": s.port,
        "label": s.label,
        "agent": s.agent,
        "addresses": s.addresses,
        "local": s.local,
    })
}

/// One line per service, then how many.
pub fn table(services: &[pb::ServiceInfo]) -> String {
    let mut text = format!(
        "{:<28} {:<16} {:<12} {:<6} {:<10} {:<16} {}\n",
        "NAME", "USER", "ENVIRONMENT", "PORT", "LABEL", "AGENT", "LISTENS ON"
    );
    for s in services {
        text += &format!(
            "{:<28} {:<16} {:<12} {:<6} {:<10} {:<16} {}\n",
            s.name,
            s.user,
            s.environment,
            s.port,
            s.label,
            s.agent,
            s.addresses.join(",")
        );
    }
    let n = services.len();
    text += &format!("{n} service{}\n", if n == 1 { "" } else { "s" });
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_service_and_counts_them() {
        let service = pb::ServiceInfo {
            name: "8888-alice".into(),
            user: "alice".into(),
            environment: "default".into(),
            port: 8888,
            label: "jupyter".into(),
            agent: "node1".into(),
            live: true,
            addresses: vec!["0.0.0.0".into(), "::".into()],
            local: true,
            ..Default::default()
        };
        let text = table(&[service]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAME"), "{text}");
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "8888-alice",
                "alice",
                "default",
                "8888",
                "jupyter",
                "node1",
                "0.0.0.0,::"
            ]
        );
        assert_eq!(lines[2], "1 service");
        assert_eq!(table(&[]).lines().last(), Some("0 services"));
    }
}
