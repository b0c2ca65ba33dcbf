//! `labssh prestart`: a class's containers created and started before it
//! begins, through the controller's Prestart, with a progress bar and a
//! summary. Exits non-zero when any student's container failed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use chrono::{DateTime, Local};
use indicatif::{ProgressBar, ProgressStyle};
use labssh_controller::members::read_names;
use labssh_controller::prestart::Summary;
use labssh_controller::schedule::when::parse_moment;
use labssh_proto::pb;

use crate::admin::{connect, ControllerArgs};

/// A long `--at` wait re-reads the wall clock this often, so a suspended
/// laptop or a clock step still starts on time.
const WAIT_STEP: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct PrestartArgs {
    /// The environment to prestart (default: the controller's default one).
    #[arg(long, value_name = "ENV")]
    env: Option<String>,
    /// A file of login names, one per line (blank lines and `#` comments skipped).
    #[arg(long, value_name = "FILE", required_unless_present = "group")]
    users: Option<PathBuf>,
    /// The members of this group in the controller's users file.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Start then, not now: "09:00" or "Mon 09:00" (local time, the next such
    /// time) or an RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Ensures in flight at once per agent (default: the controller's
    /// prestart_concurrency).
    #[arg(long, default_value_t = 0)]
    concurrency: u32,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    controller: ControllerArgs,
}

/// Runs `labssh prestart`.
pub async fn run(args: PrestartArgs) -> anyhow::Result<()> {
    let users = match &args.users {
        Some(path) => {
            let names = read_names(path).map_err(|e| anyhow::anyhow!("--users: {e}"))?;
            if names.is_empty() && args.group.is_none() {
                bail!("--users {}: no login names in it", path.display());
            }
            names
        }
        None => Vec::new(),
    };
    if let Some(at) = &args.at {
        let when = parse_moment(at, Local::now()).map_err(|e| anyhow::anyhow!("--at {e}"))?;
        wait_until(when).await;
    }
    let channel = connect(&args.controller).await?;
    let mut events = pb::controller_client::ControllerClient::new(channel)
        .prestart(pb::PrestartRequest {
            environment: args.env.clone().unwrap_or_default(),
            users,
            group: args.group.clone().unwrap_or_default(),
            concurrency: args.concurrency,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();

    let mut summary = Summary::default();
    let mut environment = String::new();
    let mut bar = ProgressBar::hidden();
    let ended = loop {
        match events.message().await {
            Ok(Some(event)) => match event.event {
                Some(pb::prestart_event::Event::Planned(planned)) => {
                    summary.planned = planned.total;
                    environment = planned.environment;
                    bar = progress(planned.total.into(), &environment);
                }
                Some(pb::prestart_event::Event::Result(result)) => {
                    summary.add(&result);
                    bar.inc(1);
                    if result.outcome() == pb::PrestartOutcome::Failed {
                        bar.set_message(format!("{} failed", summary.failed_count()));
                    }
                }
                None => {}
            },
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    bar.finish_and_clear();
    if args.json {
        let json = serde_json::json!({ "environment": environment, "summary": summary });
        println!("{json:#}");
    } else {
        println!("prestart of {environment}: {summary}");
    }
    if let Some(status) = ended {
        bail!(
            "the controller ended the prestart early: {}",
            status.message()
        );
    }
    match summary.failed_count() {
        0 => Ok(()),
        n => bail!("{n} of {} containers failed", summary.planned),
    }
}

/// The bar on standard error (drawn only on a terminal).
fn progress(total: u64, environment: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let template = format!(
        "{{elapsed_precise}} [{{bar:40.cyan/blue}}] {{pos}}/{{len}} {environment} containers {{msg}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Says when the prestart will start, then sleeps until then.
async fn wait_until(when: DateTime<Local>) {
    let now = Local::now();
    if when <= now {
        eprintln!(
            "labssh: {} has passed; starting now",
            when.format("%a %Y-%m-%d %H:%M:%S %Z")
        );
        return;
    }
    let wait = (when - now).to_std().unwrap_or_default();
    eprintln!(
        "labssh: prestart starts at {} (in {})",
        when.format("%a %Y-%m-%d %H:%M:%S"),
        humantime::format_duration(Duration::from_secs(wait.as_secs()))
    );
    loop {
        let left = (when - Local::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(WAIT_STEP)).await;
    }
}
