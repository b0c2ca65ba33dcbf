//! `labssh-loadtest`: the operators' load generator.
//!
//! `sweep` opens 1…300 parallel SSH connections per level and times every
//! phase; `soak` holds interactive pty sessions and measures echo latency;
//! `throughput` pushes and pulls bytes through sessions. Any SSH server can
//! be a target, so labssh can be measured beside plain OpenSSH or another
//! gateway in the same run. `arrivals` plots the per-login CSV files of
//! `scripts/bench-class-start.sh` in arrival order.
//!
//! Modules depend one way, downwards, never in a circle: `cli` parses the
//! command line and hands it to `sweep`, `soak` or `throughput`; those use
//! `level` and `attempt` (one sweep level, one connection), `setup`,
//! `output`, `plot`, `table` and `summary`; everything builds on `args`,
//! `client`, `phases`, `target`, `exit` and `stop`, which import none of
//! the modules above them.

mod args;
mod arrivals;
mod attempt;
mod cli;
mod client;
mod csv_file;
mod exit;
mod level;
mod levels;
mod output;
mod phases;
mod plot;
mod progress;
mod setup;
mod size;
mod soak;
mod stop;
mod summary;
mod sweep;
mod table;
mod target;
mod throughput;
mod together;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(exit::EXIT_SETUP);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::EXIT_SETUP)
        }
    }
}
