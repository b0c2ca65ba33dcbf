//! Discovery of the services students run: every few seconds the agent reads which
//! TCP ports listen in each running container, from the container's own socket tables
//! (labssh-init reads them, or the agent from inside the container's network; no
//! process in the container reports anything), and puts them in its heartbeat. The
//! controller names them `PORT-USER[-ENV]` (`labssh services`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use labssh_proto::pb;
use tokio_util::sync::CancellationToken;

use crate::backend::{ContainerState, SharedBackend};
use crate::inventory::Inventory;

/// Containers asked at once: each reading is a connection to its labssh-init (or a
/// thread in its network), quick unless the container is stuck.
const CONCURRENCY: usize = 16;
/// The longest one container's reading may take before it counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads every running container's listening ports every `every` until `shutdown`.
pub async fn discovery_loop(
    inventory: Arc<Inventory>,
    backend: SharedBackend,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let running: Vec<String> = inventory
            .list()
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| c.name)
            .collect();
        let readings = futures::stream::iter(running)
            .map(|name| {
                let backend = backend.clone();
                async move {
                    let reading =
                        tokio::time::timeout(READ_TIMEOUT, backend.listeners(&name)).await;
                    (name, reading)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut listening = HashMap::new();
        for (name, reading) in readings {
            match reading {
                Ok(Ok(sockets)) => {
                    listening.insert(name, ports(&sockets));
                }
                // A container stopping as it was read, or one whose tables cannot be
                // read: it lists nothing until a reading succeeds.
                Ok(Err(e)) => {
                    tracing::debug!(container = %name, error = %e, "cannot read its listening ports")
                }
                Err(_) => {
                    tracing::debug!(container = %name, "reading its listening ports timed out")
                }
            }
        }
        inventory.set_listening(listening);
    }
}

/// Sockets grouped by port, in port order, each port's addresses in order.
fn ports(sockets: &[SocketAddr]) -> Vec<pb::ListeningPort> {
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for socket in sockets {
        let addresses = by_port.entry(socket.port()).or_default();
        let address = socket.ip().to_string();
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    by_port
        .into_iter()
        .map(|(port, addresses)| pb::ListeningPort {
            port: port.into(),
            addresses,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_group_by_port() {
        let sockets: Vec<SocketAddr> =
            ["0.0.0.0:8080", "[::]:8080", "127.0.0.1:3000", "[::1]:3000"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        let got = ports(&sockets);
        assert_eq!(
            got,
            vec![
                pb::ListeningPort {
                    port: 3000,
                    addresses: vec!["127.0.0.1".into(), "::1".into()],
                },
                pb::ListeningPort {
                    port: 8080,
                    addresses: vec!["0.0.0.0".into(), "::".into()],
                },
            ]
        );
    }
}
