//! `labssh up`: an all-in-one cluster on this machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use labssh::cluster::{Cluster, ClusterConfig};
use tokio::net::TcpListener;

use crate::signals::shutdown_signal;

/// The agent needs a moment to reach the controller; past this something is
/// wrong (usually Docker).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Where `/metrics`, `/healthz` and `/readyz` are served: loopback, beside
/// the node exporter's 9100 convention, for a Prometheus on the same host.
const DEFAULT_HTTP: &str = "127.0.0.1:9100";

#[derive(clap::Args)]
pub struct UpArgs {
    /// State directory: host key, users file, configuration files.
    #[arg(long, default_value = "labssh-dev")]
    dir: PathBuf,
    /// SSH listen address.
    #[arg(long, default_value = labssh_proxy::config::DEFAULT_LISTEN)]
    listen: String,
    /// Image of the default environment (overrides controller.toml).
    #[arg(long)]
    image: Option<String>,
    /// Redis URL for the shared credential cache (default: in-process cache).
    #[arg(long)]
    redis: Option<String>,
    /// Plain HTTP/2 between the roles instead of mTLS with certificates
    /// from DIR/certs (made on first run).
    #[arg(long)]
    no_tls: bool,
    /// Export traces and metrics over OTLP/gRPC to this endpoint, e.g.
    /// http://127.0.0.1:4317 (default: OTEL_EXPORTER_OTLP_ENDPOINT, else off).
    #[arg(long)]
    pub otlp: Option<String>,
    /// Serve /metrics, /healthz and /readyz for the whole cluster here
    /// ("" for none).
    #[arg(long, default_value = DEFAULT_HTTP)]
    http: String,
    /// The HTTPS front door (students' services in the browser) on this address,
    /// for `https://lab.localhost:PORT/` with a self-signed certificate made in
    /// DIR ("" for none).
    #[arg(long, default_value = DEFAULT_WEB)]
    web: String,
}

/// Where `labssh up` serves the front door: `*.localhost` names loopback in
/// browsers, so `https://8888-alice.lab.localhost:8443/` needs no DNS.
const DEFAULT_WEB: &str = "127.0.0.1:8443";

const CONTROLLER_TOML: &str = r#"# labssh controller configuration (written by `labssh up`; edit freely).
default_environment = "default"

[environments.default]
image = "labssh/busybox:latest"
description = "Default lab shell"
memory_mb = 512
cpus = 1.0
pids_limit = 256
uid = 1000
gid = 1000
shell = "/bin/sh"
"#;

const AGENT_TOML: &str = r#"# labssh agent configuration (written by `labssh up`; edit freely).
# `labssh up` points the agent at its own controller on a free loopback port.
name = "local"
capacity = 300
container_prefix = "labssh"
"#;

fn proxy_toml(dir: &Path) -> String {
    format!(
        r#"# labssh proxy configuration (written by `labssh up`; edit freely).
host_keys = ["{dir}/host_ed25519_key"]
users_file = "{dir}/users.toml"
cache_key_file = "{dir}/cache.key"
"#,
        dir = dir.display()
    )
}

/// Reads `dir/name`, writing `default` there first if it does not exist.
fn config_file(dir: &Path, name: &str, default: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if !path.exists() {
        std::fs::write(&path, default).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(path)
}

/// The three roles' configurations from DIR (written on first run), with the
/// command line's overrides applied and validated.
fn load_configs(
    args: &UpArgs,
    dir: &Path,
) -> anyhow::Result<(
    labssh_controller::Config,
    labssh_agent::Config,
    labssh_proxy::Config,
)> {
    let mut controller =
        labssh_controller::Config::load(config_file(dir, "controller.toml", CONTROLLER_TOML)?)?;
    if let Some(image) = &args.image {
        let default = controller.default_environment.clone();
        if let Some(env) = controller.environments.get_mut(&default) {
            env.image = image.clone();
        }
    }
    controller.validate()?;
    let agent = labssh_agent::Config::load(config_file(dir, "agent.toml", AGENT_TOML)?)?;
    let mut proxy = labssh_proxy::Config::load(&config_file(dir, "proxy.toml", &proxy_toml(dir))?)?;
    if let Some(redis) = &args.redis {
        proxy.redis_url = redis.clone();
    }
    proxy.listen = args.listen.clone();
    proxy.validate()?;
    // `labssh prestart --group` reads the groups of the proxy's own users file.
    if controller.users_file().is_none() {
        controller.users_file = proxy.users_file.clone();
    }
    Ok((controller, agent, proxy))
}

/// `/metrics`, `/healthz` and `/readyz` on `--http`, until `stop` fires; its address.
async fn serve_http(
    args: &UpArgs,
    health: &labssh_telemetry::Health,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if args.http.is_empty() {
        return Ok(None);
    }
    let http = TcpListener::bind(&args.http)
        .await
        .with_context(|| format!("--http: cannot listen on {}", args.http))?;
    let addr = http.local_addr()?;
    tokio::spawn(labssh_telemetry::http::serve(http, health.clone(), async {
        let _ = stop.await;
    }));
    Ok(Some(addr))
}

/// What an operator needs to start using the lab.
fn print_welcome(
    cluster: &Cluster,
    dir: &Path,
    environments: &[String],
    users_file: &Path,
    http: Option<std::net::SocketAddr>,
    tls: bool,
) {
    let addr = cluster.ssh_addr;
    println!("labssh is up: SSH on {addr}, state in {}", dir.display());
    println!("  environments: {}", environments.join(", "));
    println!(
        "  add a student:  labssh user add alice --users {}",
        users_file.display()
    );
    println!(
        "  log in:         ssh -p {} alice@{}     (alice+ENV@ for another environment)",
        addr.port(),
        addr.ip()
    );
    let scheme = if tls { "https" } else { "http" };
    println!("  controller:     {scheme}://{}", cluster.controller_addr);
    if let Some(addr) = http {
        println!("  metrics:        http://{addr}/metrics   (/healthz, /readyz)");
    }
    println!("Press Ctrl-C to stop.");
}

/// The front door on `--web`, with the proxy's configuration as it runs; its own
/// self-signed certificate for `DOMAIN` and `*.DOMAIN` made in `dir` on first run.
async fn start_web(
    args: &UpArgs,
    dir: &Path,
    cluster: &Cluster,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<Option<(std::net::SocketAddr, String)>> {
    if args.web.is_empty() {
        return Ok(None);
    }
    let mut config = cluster.proxy_config.clone();
    config.web.listen = args.web.clone();
    config.web.tls_cert = dir.join("web.crt");
    config.web.tls_key = dir.join("web.key");
    config.web.cookie_key_file = dir.join("web-cookie.key");
    let domain = config.web.domain.clone();
    if !config.web.tls_cert.exists() || !config.web.tls_key.exists() {
        let names = vec![domain.clone(), format!("*.{domain}")];
        let made = rcgen::generate_simple_self_signed(names)?;
        std::fs::write(&config.web.tls_cert, made.cert.pem())?;
        write_private(&config.web.tls_key, &made.signing_key.serialize_pem())?;
    }
    let listener = TcpListener::bind(&args.web)
        .await
        .with_context(|| format!("--web: cannot listen on {}", args.web))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.await;
        };
        if let Err(e) = labssh_proxy::web::run(listener, config, stopped).await {
            tracing::error!(error = %e, "the web front door stopped");
        }
    });
    Ok(Some((addr, domain)))
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| path.display().to_string())?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("--dir {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let (controller, agent, proxy) = load_configs(&args, &dir)?;

    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("--listen: cannot listen on {}", args.listen))?;
    let health = labssh_telemetry::Health::new();
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_addr = serve_http(&args, &health, http_stopped).await?;
    let users_file = proxy.users_file.clone();
    let environments: Vec<String> = controller
        .environments
        .iter()
        .map(|(name, env)| format!("{name} ({})", env.image))
        .collect();
    let mut cluster = Cluster::start(
        ClusterConfig {
            controller,
            agents: vec![agent],
            proxy,
            tls_dir: (!args.no_tls).then(|| dir.join("certs")),
        },
        listener,
    )
    .await?;
    cluster.wait_ready(1, READY_TIMEOUT).await?;
    let (web_stop, web_stopped) = tokio::sync::oneshot::channel::<()>();
    let web = start_web(&args, &dir, &cluster, web_stopped).await?;
    health.set_ready(true);
    print_welcome(
        &cluster,
        &dir,
        &environments,
        &users_file,
        http_addr,
        !args.no_tls,
    );
    if let Some((addr, domain)) = &web {
        println!(
            "  browser:        https://{domain}:{}/   (services at https://PORT-USER.{domain}:{}/; certificate {}/web.crt)",
            addr.port(),
            addr.port(),
            dir.display()
        );
    }

    tokio::select! {
        _ = shutdown_signal() => {}
        (name, result) = cluster.any_stopped() => {
            return Err(match result {
                Ok(()) => anyhow::anyhow!("{name} stopped unexpectedly"),
                Err(e) => e.context(format!("{name} failed")),
            });
        }
    }
    health.set_ready(false);
    let _ = web_stop.send(());
    cluster.shutdown().await?;
    let _ = http_stop.send(());
    println!("labssh stopped");
    Ok(())
}
