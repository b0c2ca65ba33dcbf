//! Controller, agents and a proxy in one process, on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use labssh_proto::pb;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long shutdown waits for every role to stop before giving up on it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The configurations of an in-process cluster. Listen addresses of the
/// controller and agents are ignored: they get free loopback ports, and the
/// agents and proxy are pointed at them.
pub struct ClusterConfig {
    /// Controller configuration (catalogue, heartbeats, placement).
    pub controller: labssh_controller::Config,
    /// One configuration per agent.
    pub agents: Vec<labssh_agent::Config>,
    /// Proxy configuration.
    pub proxy: labssh_proxy::Config,
    /// When set, mTLS between the roles with certificates from this
    /// directory (issued by [`crate::certs::issue`] if missing): the
    /// controller's, proxy's and admin's named `local`, each agent's named
    /// after it.
    pub tls_dir: Option<std::path::PathBuf>,
}

/// A running cluster. Dropping it without [`Cluster::shutdown`] aborts the
/// roles.
pub struct Cluster {
    /// Where students connect with ssh.
    pub ssh_addr: SocketAddr,
    /// Controller gRPC address.
    pub controller_addr: SocketAddr,
    /// Agent gRPC addresses, in configuration order.
    pub agent_addrs: Vec<SocketAddr>,
    /// The proxy's configuration as it runs (pointed at this controller), for a
    /// further replica.
    pub proxy_config: labssh_proxy::Config,
    /// Flipping this to true stops every role.
    shutdown: watch::Sender<bool>,
    /// Role tasks with their names.
    tasks: Vec<(String, JoinHandle<anyhow::Result<()>>)>,
    /// Certificate used for admin calls to the controller (an admin's).
    admin_tls: labssh_proto::tls::TlsFiles,
    /// The SSH listener and the proxy's configuration, until [`Cluster::wait_ready`]
    /// starts the proxy on it.
    proxy_pending: Option<(TcpListener, labssh_proxy::Config)>,
}

fn shutdown_future(
    rx: &watch::Sender<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.subscribe();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

async fn loopback() -> anyhow::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")
}

impl Cluster {
    /// Starts controller and agents; the proxy serves `ssh_listener` from
    /// [`Cluster::wait_ready`] on. The port is bound meanwhile, so a student who
    /// connects while the agents register waits in its backlog rather than being
    /// told that no agent is available.
    pub async fn start(
        config: ClusterConfig,
        ssh_listener: TcpListener,
    ) -> anyhow::Result<Cluster> {
        let (shutdown, _) = watch::channel(false);
        let mut tasks = Vec::new();

        let mut config = config;
        let mut admin_tls = labssh_proto::tls::TlsFiles::default();
        if let Some(dir) = &config.tls_dir {
            use crate::certs::{issue, DEFAULT_NAME};
            use labssh_proto::roles::Role;
            config.controller.tls = issue(dir, Role::Controller, DEFAULT_NAME, &[])?.files;
            for agent in &mut config.agents {
                agent.tls = issue(dir, Role::Agent, &agent.name, &[])?.files;
            }
            config.proxy.tls = issue(dir, Role::Proxy, DEFAULT_NAME, &[])?.files;
            admin_tls = issue(dir, Role::Admin, DEFAULT_NAME, &[])?.files;
        }
        let scheme = config.proxy.tls.scheme();

        let controller_listener = loopback().await?;
        let controller_addr = controller_listener.local_addr()?;
        let controller_url = format!("{scheme}://{controller_addr}");
        tasks.push((
            "controller".to_string(),
            tokio::spawn(with_anyhow(labssh_controller::run(
                controller_listener,
                config.controller,
                shutdown_future(&shutdown),
            ))),
        ));

        let mut agent_addrs = Vec::new();
        for mut agent in config.agents {
            let listener = loopback().await?;
            let addr = listener.local_addr()?;
            agent.controller = controller_url.clone();
            agent.advertise = format!("{scheme}://{addr}");
            agent.listen = addr.to_string();
            agent_addrs.push(addr);
            tasks.push((
                format!("agent {}", agent.name),
                tokio::spawn(with_anyhow(labssh_agent::run(
                    listener,
                    agent,
                    shutdown_future(&shutdown),
                ))),
            ));
        }

        let ssh_addr = ssh_listener.local_addr()?;
        let mut proxy = config.proxy;
        proxy.controller = controller_url;
        proxy.listen = ssh_addr.to_string();
        let proxy_config = proxy.clone();

        Ok(Cluster {
            ssh_addr,
            controller_addr,
            agent_addrs,
            proxy_config,
            shutdown,
            tasks,
            admin_tls,
            proxy_pending: Some((ssh_listener, proxy)),
        })
    }

    /// Waits until `agents` agents are registered and live, or fails after
    /// `timeout` (naming any role that already stopped); then starts the proxy.
    pub async fn wait_ready(&mut self, agents: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait_agents(agents, timeout).await?;
        if let Some((listener, proxy)) = self.proxy_pending.take() {
            let stop = shutdown_future(&self.shutdown);
            let task = tokio::spawn(labssh_proxy::run(listener, proxy, stop));
            self.tasks.push(("proxy".to_string(), task));
        }
        Ok(())
    }

    async fn wait_agents(&mut self, agents: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let client = self.controller_client()?;
        loop {
            for (name, task) in &mut self.tasks {
                if task.is_finished() {
                    let result = (&mut *task).await;
                    match result {
                        Ok(Err(e)) => bail!("{name} failed: {e:#}"),
                        Ok(Ok(())) => bail!("{name} stopped unexpectedly"),
                        Err(e) => bail!("{name} crashed: {e}"),
                    }
                }
            }
            if let Ok(reply) = client.clone().list_agents(pb::ListAgentsRequest {}).await {
                let live = reply.into_inner().agents.iter().filter(|a| a.live).count();
                if live >= agents {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("fewer than {agents} agents registered within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A controller client for admin calls (mTLS with an admin certificate
    /// when the cluster uses TLS).
    pub fn controller_client(
        &self,
    ) -> anyhow::Result<pb::controller_client::ControllerClient<tonic::transport::Channel>> {
        let tls = &self.admin_tls;
        let endpoint = tonic::transport::Endpoint::from_shared(format!(
            "{}://{}",
            tls.scheme(),
            self.controller_addr
        ))?;
        let endpoint = tls
            .secure(endpoint, labssh_proto::tls::CONTROLLER_NAME)
            .map_err(|e| anyhow::anyhow!("tls: {e}"))?;
        Ok(pb::controller_client::ControllerClient::new(
            endpoint.connect_lazy(),
        ))
    }

    /// Resolves when any role stops on its own (an error, usually).
    pub async fn any_stopped(&mut self) -> (String, anyhow::Result<()>) {
        let (name, result) = {
            let futures = self.tasks.iter_mut().map(|(name, task)| {
                Box::pin(async move {
                    let r = task.await;
                    (name.clone(), r)
                })
            });
            futures::future::select_all(futures).await.0
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("task failed: {e}")),
        };
        (name, result)
    }

    /// Stops every role and waits for them (bounded by a grace period).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let mut first_error = None;
        for (name, task) in self.tasks.drain(..) {
            match tokio::time::timeout(SHUTDOWN_GRACE, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    first_error.get_or_insert(anyhow::anyhow!("{name}: {e:#}"));
                }
                Ok(Err(e)) if e.is_cancelled() => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(anyhow::anyhow!("{name} crashed: {e}"));
                }
                Err(_) => {
                    first_error.get_or_insert(anyhow::anyhow!(
                        "{name} did not stop within {SHUTDOWN_GRACE:?}"
                    ));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for (_, task) in &self.tasks {
            task.abort();
        }
    }
}

/// A role's run, its typed error kept as the cause of an `anyhow::Error`.
async fn with_anyhow<E>(run: impl std::future::Future<Output = Result<(), E>>) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    run.await.map_err(anyhow::Error::from)
}
