//! The container firewall of a running agent: planned from its configuration,
//! installed at start, repaired while it runs, removed at shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use labssh_proto::net::{parse_net, IpNet};
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Firewall, Plan};
use crate::config::Config;

/// Installs the rules `config` asks for (none when `firewall` is off), and keeps
/// them in place on a task of `tasks` until `stop`. Fails only if installing panicked.
pub async fn install(
    config: &Config,
    local: SocketAddr,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<Option<Arc<Firewall>>, JoinError> {
    if !config.firewall {
        return Ok(None);
    }
    let plan = plan(config, local).await;
    let firewall = Arc::new(tokio::task::spawn_blocking(move || Firewall::protect(plan)).await?);
    tasks.spawn(repair(firewall.clone(), stop.clone()));
    Ok(Some(firewall))
}

/// Takes the rules out again.
pub async fn remove(firewall: Arc<Firewall>) -> Result<(), JoinError> {
    tokio::task::spawn_blocking(move || firewall.remove()).await
}

/// What the container firewall refuses: this agent's port, the controller's
/// and `firewall_ports` on this host; `cluster_networks` and the controller's
/// addresses everywhere.
async fn plan(config: &Config, local: SocketAddr) -> Plan {
    let mut ports = vec![local.port()];
    ports.extend(&config.firewall_ports);
    let mut networks: Vec<IpNet> = config
        .cluster_networks
        .iter()
        .filter_map(|n| parse_net(n).ok())
        .collect();
    if let Some((host, port)) = url_host_port(&config.controller) {
        ports.extend(port);
        match tokio::net::lookup_host((host.as_str(), port.unwrap_or(0))).await {
            Ok(addrs) => networks.extend(
                addrs
                    .map(|a| a.ip().to_canonical())
                    // Containers cannot reach this host's loopback at all.
                    .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
                    .map(IpNet::from),
            ),
            Err(e) => tracing::warn!(
                controller = %config.controller,
                "cannot resolve the controller's address to firewall it from containers: {e}"
            ),
        }
    }
    Plan::new(
        &config.name,
        local,
        &config.container_bridge,
        &ports,
        &networks,
    )
    .with_resolvers(&resolvers(
        &std::fs::read_to_string(RESOLV_CONF).unwrap_or_default(),
    ))
}

/// The host's resolver configuration, whose servers Docker's embedded DNS
/// forwards containers' queries to.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The name servers of a `resolv.conf`, but loopback ones (Docker's resolver
/// does not use those for containers).
fn resolvers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect()
}

/// How often the firewall rules are checked for having been flushed.
const FIREWALL_REPAIR_INTERVAL: Duration = Duration::from_secs(30);

/// Puts back firewall rules that vanished (a firewall reload, an operator's flush).
async fn repair(firewall: Arc<Firewall>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(FIREWALL_REPAIR_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {
                let firewall = firewall.clone();
                let _ = tokio::task::spawn_blocking(move || firewall.repair()).await;
            }
        }
    }
}

/// The host and port of an `http(s)://host[:port]/...` URL; IPv6 hosts
/// without their brackets.
fn url_host_port(url: &str) -> Option<(String, Option<u16>)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok())),
        None => Some((authority.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::{resolvers, url_host_port};

    #[test]
    fn name_servers() {
        let conf = "# x\nnameserver 10.255.255.53\nnameserver 127.0.0.53\nsearch lab\nnameserver fe80::1%eth0\n";
        let ips: Vec<String> = resolvers(conf).iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.255.255.53", "fe80::1"]);
    }

    #[test]
    fn controller_urls() {
        let hp = |u: &str| url_host_port(u).unwrap();
        assert_eq!(hp("http://10.0.0.2:7000"), ("10.0.0.2".into(), Some(7000)));
        assert_eq!(
            hp("https://[fd00::2]:7000/"),
            ("fd00::2".into(), Some(7000))
        );
        assert_eq!(hp("https://ctl.lab/x"), ("ctl.lab".into(), None));
        assert!(url_host_port("nonsense").is_none());
    }
}
