//! Command line: parses `sweep`, `soak` or `throughput` and hands the
//! arguments to that subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::args::{SoakArgs, SweepArgs, ThroughputArgs};

#[derive(Parser)]
#[command(
    name = "labssh-loadtest",
    version,
    about = "Load generator for SSH gateways"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Open N parallel connections per level (connect, auth, exec, exit) and time each phase.
    Sweep(SweepArgs),
    /// Hold N interactive pty sessions for a while, typing and timing the echo.
    Soak(SoakArgs),
    /// Push bytes into `cat > /dev/null` and pull them from `head -c`, in MB/s.
    Throughput(ThroughputArgs),
    /// Plot time to shell per login in arrival order from CSV files (bench-class-start.sh).
    Arrivals(crate::arrivals::ArrivalsArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let stop = crate::stop::Stop::on_ctrl_c();
    let code = match cli.command {
        Command::Sweep(args) => crate::sweep::run(args, stop).await?,
        Command::Soak(args) => crate::soak::run(args, stop).await?,
        Command::Throughput(args) => crate::throughput::run(args, stop).await?,
        Command::Arrivals(args) => crate::arrivals::run(args)?,
    };
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn sweep_defaults_parse() {
        let cli = Cli::try_parse_from([
            "labssh-loadtest",
            "sweep",
            "--target",
            "a=127.0.0.1:22,user=root,password=x",
        ])
        .unwrap();
        let Command::Sweep(args) = cli.command else {
            panic!("not a sweep")
        };
        assert_eq!(args.levels.0.len(), 31);
        assert_eq!(args.command, "true");
        assert_eq!(args.common.phase_timeout, Duration::from_secs(60));
    }
}
