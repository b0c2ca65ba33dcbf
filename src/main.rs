//! `labssh`: one binary for every role.
//!
//! ```text
//! labssh up                          all-in-one cluster on this machine
//! labssh user add NAME ...           add or update a student
//! labssh proxy|controller|agent --config FILE
//! ```

mod roles;
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
    /// Manage the users file.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Run an SSH proxy replica.
    Proxy {
        /// Proxy configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the controller.
    Controller {
        /// Controller configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run a backend agent on this node.
    Agent {
        /// Agent configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,russh=warn,h2=warn,tower=warn,hyper=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for people: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::User { command } => user::run(command),
        command => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async move {
                    match command {
                        Command::Up(args) => up::run(args).await,
                        Command::Proxy { config } => roles::proxy(&config).await,
                        Command::Controller { config } => roles::controller(&config).await,
                        Command::Agent { config } => roles::agent(&config).await,
                        Command::User { .. } => unreachable!("handled above"),
                    }
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
