//! `labssh`: one binary for every role.
//!
//! ```text
//! labssh up                          all-in-one cluster on this machine
//! labssh user add NAME ...           add or update a student
//! labssh prestart --env ENV ...      a class's containers ready before it begins
//! labssh replay FILE                 play a session recording
//! labssh sessions [--user U]         every proxy's open sessions; labssh kick USER
//! labssh containers [--user U]       every agent's containers; labssh container reset USER
//! labssh services [--user U]         the services listening in students' containers, by name
//! labssh proxy|controller|agent --config FILE
//! labssh web --config FILE          the HTTPS front door to services in containers
//! ```

mod admin;
mod containers;
mod prestart;
mod roles;
mod services;
mod sessions;
mod signals;
mod up;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "labssh",
    version,
    about = "SSH gateway that puts every lab student in their own container"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run controller, one agent on the local Docker and a proxy, in one process.
    Up(up::UpArgs),
    /// Create a cluster CA and certificates for mTLS between the roles.
    Certs(labssh::certs::CertsArgs),
    /// Manage the users file.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Create and start a class's containers before it begins.
    Prestart(prestart::PrestartArgs),
    /// Play a session recording (`[recording] dir`) in this terminal.
    Replay(labssh::replay::ReplayArgs),
    /// Every proxy replica's open sessions (operators; admin certificate with mTLS).
    Sessions(sessions::SessionsArgs),
    /// End a student's connections, or one session's, on whichever proxy holds them.
    Kick(sessions::KickArgs),
    /// Agents, proxy replicas, sessions and environments at a glance (operators).
    Status(sessions::StatusArgs),
    /// Every agent's student containers, with their state (operators).
    Containers(containers::ContainersArgs),
    /// Stop, start, reset (a fresh root, the home kept) or remove a student's container.
    Container(containers::ContainerArgs),
    /// The services listening in students' running containers, by name
    /// (PORT-USER[-ENV]), as their agents read them (operators).
    Services(services::ServicesArgs),
    /// Run an SSH proxy replica.
    Proxy {
        /// Proxy configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the HTTPS front door: students' services by name in the browser
    /// (a proxy config with a `[web]` section).
    Web {
        /// Proxy configuration (TOML) with `[web]`.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the controller.
    Controller {
        /// Controller configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a backend agent on this node (`--config`), or manage one.
    Agent {
        #[command(subcommand)]
        action: Option<admin::AgentAction>,
        /// Agent configuration (TOML), to run the agent.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Telemetry of a long-running command: its service name (unless
/// `OTEL_SERVICE_NAME` says otherwise) and `labssh up --otlp`.
fn telemetry_options(command: &Command) -> labssh_telemetry::Options {
    let (name, otlp) = match command {
        Command::Up(args) => ("labssh", args.otlp.clone()),
        Command::Proxy { .. } => ("labssh-proxy", None),
        Command::Web { .. } => ("labssh-web", None),
        Command::Controller { .. } => ("labssh-controller", None),
        Command::Agent { .. } => ("labssh-agent", None),
        Command::User { .. }
        | Command::Certs(_)
        | Command::Prestart(_)
        | Command::Replay(_)
        | Command::Sessions(_)
        | Command::Kick(_)
        | Command::Status(_)
        | Command::Containers(_)
        | Command::Container(_)
        | Command::Services(_) => ("labssh", None),
    };
    let mut options = labssh_telemetry::Options::new(name);
    options.otlp_endpoint = otlp;
    options
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Long-running commands start telemetry inside the runtime (OTLP needs it).
    let one_shot = matches!(cli.command, Command::User { .. } | Command::Certs(_));
    if one_shot {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,russh=warn,h2=warn,tower=warn,hyper=warn".into()),
            )
            .with_writer(std::io::stderr)
            // Colour only for people: log files and journald get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let result = match cli.command {
        Command::User { command } => user::run(command),
        Command::Certs(args) => labssh::certs::run(args),
        Command::Replay(args) => labssh::replay::run(args),
        command => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async move {
                    let telemetry = labssh_telemetry::init(telemetry_options(&command))?;
                    let result = match command {
                        Command::Up(args) => up::run(args).await,
                        Command::Prestart(args) => prestart::run(args).await,
                        Command::Sessions(args) => sessions::list(args).await,
                        Command::Kick(args) => sessions::kick(args).await,
                        Command::Status(args) => sessions::status(args).await,
                        Command::Containers(args) => containers::list(args).await,
                        Command::Container(args) => containers::act(args).await,
                        Command::Services(args) => services::list(args).await,
                        Command::Proxy { config } => roles::proxy(&config).await,
                        Command::Web { config } => roles::web(&config).await,
                        Command::Controller { config } => roles::controller(&config).await,
                        Command::Agent {
                            action: Some(action),
                            ..
                        } => admin::run(action).await,
                        Command::Agent {
                            config: Some(config),
                            ..
                        } => roles::agent(&config).await,
                        Command::Agent { .. } => Err(anyhow::anyhow!(
                            "give --config FILE to run an agent, or a command: drain NAME, resume NAME"
                        )),
                        Command::User { .. } | Command::Certs(_) | Command::Replay(_) => {
                            unreachable!("handled above")
                        }
                    };
                    telemetry.shutdown().await;
                    result
                })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("labssh: {e:#}");
            ExitCode::FAILURE
        }
    }
}
