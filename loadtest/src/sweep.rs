//! `sweep`: levels of parallel connections, targets interleaved A B A B so
//! drift on the machine hits every target alike.

use std::sync::Arc;

use indicatif::ProgressBar;
use serde::Serialize;

use crate::args::SweepArgs;
use crate::client::Endpoint;
use crate::phases::LevelStats;
use crate::stop::Stop;
use crate::target::{Credential, Target, Users};

/// What was run, written beside the results as `run.json`.
#[derive(Serialize)]
struct RunInfo<'a> {
    tool: &'static str,
    version: &'static str,
    command: &'a str,
    levels: &'a [u32],
    targets: Vec<TargetInfo>,
    phase_timeout_s: f64,
    warm: bool,
    before_level: Option<&'a str>,
    /// Seconds since the Unix epoch.
    started_at: u64,
    /// Ctrl-C stopped the run; the level in progress is not in the results.
    interrupted: bool,
    /// Targets dropped because every connection of a level failed.
    dropped_targets: &'a [String],
}

/// A target without its secret.
#[derive(Serialize)]
struct TargetInfo {
    name: String,
    address: String,
    users: String,
    auth: &'static str,
}

impl<'a> RunInfo<'a> {
    fn new(
        args: &'a SweepArgs,
        started_at: u64,
        interrupted: bool,
        dropped_targets: &'a [String],
    ) -> RunInfo<'a> {
        RunInfo {
            tool: "labssh-loadtest sweep",
            version: env!("CARGO_PKG_VERSION"),
            command: &args.command,
            levels: &args.levels.0,
            targets: args.common.targets.iter().map(TargetInfo::of).collect(),
            phase_timeout_s: args.common.phase_timeout.as_secs_f64(),
            warm: args.warm,
            before_level: args.before_level.as_deref(),
            started_at,
            interrupted,
            dropped_targets,
        }
    }
}

impl TargetInfo {
    fn of(target: &Target) -> TargetInfo {
        TargetInfo {
            name: target.name.clone(),
            address: target.address(),
            users: match &target.users {
                Users::Single(user) => user.clone(),
                Users::Numbered { prefix, count } => format!("{prefix}:{count}"),
            },
            auth: match target.credential {
                Credential::Password(_) => "password",
                Credential::Key(_) => "key",
            },
        }
    }
}

pub async fn run(args: SweepArgs, stop: Stop) -> anyhow::Result<u8> {
    let common = &args.common;
    let endpoints = crate::setup::prepare(common).await?;
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let per_target: u64 = args.levels.0.iter().map(|l| u64::from(*l)).sum();
    let progress = crate::progress::bar(per_target * endpoints.len() as u64, "connections");
    let mut sweep = Sweep::new(endpoints.len());
    let fatal = sweep
        .levels(&args, &endpoints, started_at, &stop, &progress)
        .await
        .err();
    progress.finish_and_clear();

    let Sweep {
        results,
        dropped,
        interrupted,
        ..
    } = sweep;
    println!("{}", crate::table::sweep(&results, &common.targets[0].name));
    for message in &dropped {
        eprintln!("error: {message}");
    }
    if let Some(dir) = &common.out {
        let info = RunInfo::new(&args, started_at, interrupted, &dropped);
        crate::output::write_sweep(dir, &results, &info)?;
        println!("results in {}", dir.display());
    }
    if let Some(e) = fatal {
        return Err(e);
    }
    let failures: u64 = results.iter().map(LevelStats::failed_total).sum();
    Ok(crate::exit::exit_code(
        interrupted,
        failures + dropped.len() as u64,
    ))
}

/// A sweep under way: what it measured so far and which targets are left.
struct Sweep {
    /// Every finished level of every target, in the order they ran.
    results: Vec<LevelStats>,
    /// Per target: still measured (false once dropped as unusable).
    active: Vec<bool>,
    /// Per target: how many distinct users `--warm` has logged in so far.
    warmed: Vec<usize>,
    /// Why targets were dropped, one message each.
    dropped: Vec<String>,
    /// Ctrl-C stopped the run.
    interrupted: bool,
}

impl Sweep {
    fn new(targets: usize) -> Sweep {
        Sweep {
            results: Vec::new(),
            active: vec![true; targets],
            warmed: vec![0; targets],
            dropped: Vec::new(),
            interrupted: false,
        }
    }

    /// Runs every level against every target still active, interleaved.
    /// An error (a failed `--before-level`, unwritable results) ends it.
    async fn levels(
        &mut self,
        args: &SweepArgs,
        endpoints: &[Arc<Endpoint>],
        started_at: u64,
        stop: &Stop,
        progress: &ProgressBar,
    ) -> anyhow::Result<()> {
        let levels = &args.levels.0;
        let command: Arc<str> = Arc::from(args.command.as_str());
        for (step, &level) in levels.iter().enumerate() {
            for (t, endpoint) in endpoints.iter().enumerate() {
                if !self.active[t] {
                    continue;
                }
                if stop.is_stopped() {
                    self.interrupted = true;
                    return Ok(());
                }
                let warmed = &mut self.warmed[t];
                prepare_level(args, endpoint, level, warmed, &command, stop, progress).await?;
                let run = crate::level::run(endpoint, level, &command, stop, progress).await;
                if run.interrupted {
                    self.interrupted = true;
                    let name = &endpoint.target.name;
                    crate::progress::say(
                        progress,
                        format!("level {level} of {name} was in progress; its partial figures are left out"),
                    );
                    return Ok(());
                }
                crate::progress::say(progress, crate::table::level_line(&run.stats));
                if !args.keep_going {
                    if let Some(message) = unusable(endpoint, &run.stats) {
                        self.active[t] = false;
                        crate::progress::say(progress, format!("error: {message}"));
                        self.dropped.push(message);
                        let remaining: u64 = levels[step + 1..].iter().map(|l| u64::from(*l)).sum();
                        progress
                            .set_length(progress.length().unwrap_or(0).saturating_sub(remaining));
                    }
                }
                self.results.push(run.stats);
                if let Some(dir) = &args.common.out {
                    let info = RunInfo::new(args, started_at, false, &self.dropped);
                    crate::output::write_sweep(dir, &self.results, &info)?;
                }
            }
        }
        Ok(())
    }
}

/// `--before-level`, then `--warm`, for one target at one level.
async fn prepare_level(
    args: &SweepArgs,
    endpoint: &Arc<Endpoint>,
    level: u32,
    warmed: &mut usize,
    command: &Arc<str>,
    stop: &Stop,
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    let name = &endpoint.target.name;
    let users = &endpoint.target.users;
    let wanted = users.distinct(level as usize);
    if let Some(before) = &args.before_level {
        let names: Vec<String> = (0..wanted).map(|i| users.for_client(i)).collect();
        progress.set_message(format!("level {level} · {name} (before-level)"));
        crate::level::before_level(before, name, level, &names.join(" ")).await?;
    }
    if args.warm {
        // Each user once per run; after --before-level (which may have undone
        // the warming) every user of the level again.
        let from = if args.before_level.is_some() {
            0
        } else {
            (*warmed).min(wanted)
        };
        *warmed = (*warmed).max(wanted);
        progress.set_message(format!("level {level} · {name} (warming)"));
        let (failed, example) = crate::level::warm(endpoint, from..wanted, command, stop).await;
        if failed > 0 {
            crate::progress::say(
                progress,
                format!(
                    "warning: warming {name} for level {level}: {failed} logins failed (e.g. {})",
                    example.unwrap_or_default()
                ),
            );
        }
    }
    progress.set_message(format!("level {level} · {name}"));
    Ok(())
}

/// Says why a target should get no more levels: every connection failed,
/// and not because of load.
fn unusable(endpoint: &Endpoint, stats: &LevelStats) -> Option<String> {
    let kind = stats.target_unusable()?;
    let example = stats
        .examples
        .get(&kind)
        .and_then(|e| e.first().cloned())
        .unwrap_or_default();
    Some(format!(
        "target {} ({}): every connection at level {} failed with {} ({example}); skipping its other levels (--keep-going to insist)",
        endpoint.target.name,
        endpoint.target.address(),
        stats.level,
        kind.name()
    ))
}
