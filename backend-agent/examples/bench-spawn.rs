//! Session start through the in-container helper vs through Docker exec, on one
//! container in one run (BENCHMARKS.md, "Session start: helper vs docker exec").
//!
//! Each sample spawns `true` and reads its exit status, through the agent's own
//! backend code (what a session does). Prints p50/p99/max sequentially and with many
//! in parallel, the ratios, and the helper's RSS idle and with sessions open.
//!
//!     bash scripts/bench-spawn.sh            # builds labssh-init and this, runs it
//!     cargo run --release -p labssh-agent --example bench-spawn -- --help

use std::time::{Duration, Instant};

use futures::StreamExt;
use labssh_agent::backend::{Backend, ExitStatus, Process, PtySpec, SpawnPath, SpawnSpec};
use labssh_agent::{Config, DockerBackend};
use labssh_proto::pb;

/// What to measure; every value can be set on the command line.
struct Settings {
    /// Sequential spawns per path.
    sequential: usize,
    /// Spawns started at once.
    parallel: usize,
    /// Parallel batches per path.
    rounds: usize,
    /// Sessions held open for the loaded RSS figure.
    sessions: usize,
    /// The container's image.
    image: String,
}

const USAGE: &str = "usage: bench-spawn [--sequential N] [--parallel N] [--rounds N] [--sessions N] [--image IMAGE]";

fn settings() -> Result<Settings, String> {
    let mut s = Settings {
        sequential: 100,
        parallel: 50,
        rounds: 3,
        sessions: 50,
        image: "labssh/busybox:latest".to_owned(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match arg.as_str() {
            "--sequential" => s.sequential = number(value()?)?,
            "--parallel" => s.parallel = number(value()?)?,
            "--rounds" => s.rounds = number(value()?)?,
            "--sessions" => s.sessions = number(value()?)?,
            "--image" => s.image = value()?,
            _ => return Err(USAGE.to_owned()),
        }
    }
    Ok(s)
}

#[tokio::main]
async fn main() {
    let settings = match settings() {
        Ok(s) => s,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let prefix = format!("labsshbench{:06x}", rand::random::<u32>() & 0xff_ffff);
    let config = Config {
        name: format!("bench-{prefix}"),
        container_prefix: prefix.clone(),
        ..Config::default()
    };
    let backend = DockerBackend::connect(&config)
        .await
        .expect("connect to Docker");
    let env = pb::Environment {
        name: "bench".into(),
        image: settings.image.clone(),
        uid: 1000,
        gid: 1000,
        shell: "/bin/sh".into(),
        ..Default::default()
    };
    let result = run(&backend, &env, &settings).await;
    cleanup(&prefix);
    if let Err(message) = result {
        eprintln!("bench-spawn: {message}");
        std::process::exit(1);
    }
}

async fn run(backend: &DockerBackend, env: &pb::Environment, s: &Settings) -> Result<(), String> {
    let c = backend
        .ensure("bench", env)
        .await
        .map_err(|e| e.to_string())?;
    if backend
        .spawn_path(&c.container_id)
        .await
        .map_err(|e| e.to_string())?
        != SpawnPath::Helper
    {
        return Err(
            "the container has no helper: is labssh-init built? (see the agent's warning)".into(),
        );
    }
    let id = c.container_id.as_str();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "container {} ({}), {cpus} CPUs, {}",
        c.name,
        env.image,
        docker_version()
    );
    // Warm both paths up (page cache, Docker's connection pool).
    for path in [SpawnPath::Helper, SpawnPath::Exec] {
        for _ in 0..3 {
            spawn_true(backend, id, path).await?;
        }
    }

    println!("\nspawn `true` and read its exit status (milliseconds)");
    println!(
        "{:<28} {:>6} {:>9} {:>9} {:>9} {:>11}",
        "", "n", "p50", "p99", "max", "spawns/s"
    );
    let mut rows = Vec::new();
    for path in [SpawnPath::Helper, SpawnPath::Exec] {
        let started = Instant::now();
        let mut samples = Vec::with_capacity(s.sequential);
        for _ in 0..s.sequential {
            samples.push(spawn_true(backend, id, path).await?);
        }
        let row = Row::new(
            format!("{} sequential", path.name()),
            samples,
            started.elapsed(),
        );
        row.print();
        rows.push(row);
    }
    for path in [SpawnPath::Helper, SpawnPath::Exec] {
        let mut samples = Vec::new();
        let mut wall = Duration::ZERO;
        for _ in 0..s.rounds {
            let started = Instant::now();
            let batch = (0..s.parallel).map(|_| spawn_true(backend, id, path));
            for result in futures::future::join_all(batch).await {
                samples.push(result?);
            }
            wall += started.elapsed();
        }
        let label = format!("{} {} in parallel", path.name(), s.parallel);
        let row = Row::new(label, samples, wall);
        row.print();
        rows.push(row);
    }
    println!("\nexec / helper");
    for (name, helper, exec) in [
        ("sequential", &rows[0], &rows[1]),
        ("parallel", &rows[2], &rows[3]),
    ] {
        println!(
            "  {name:<11} p50 {:>6.1}x   p99 {:>6.1}x   max {:>6.1}x   throughput {:>6.1}x",
            exec.p50 / helper.p50,
            exec.p99 / helper.p99,
            exec.max / helper.max,
            helper.rate / exec.rate,
        );
    }

    let pid = init_pid(id)?;
    println!("\nlabssh-init (host pid {pid}) resident memory");
    let base_kb = rss_kb(pid)?;
    println!("  idle                        {:>6} kB", base_kb);
    let mut open = Vec::new();
    for _ in 0..s.sessions {
        open.push(open_shell(backend, id).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open_kb = rss_kb(pid)?;
    println!(
        "  {:>3} pty shells just opened  {:>6} kB",
        s.sessions, open_kb
    );
    // Quiet sessions give their buffers back after a second.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let idle_kb = rss_kb(pid)?;
    println!(
        "  {:>3} pty shells idle 2 s     {:>6} kB   ({:.1} kB per session over idle)",
        s.sessions,
        idle_kb,
        idle_kb.saturating_sub(base_kb) as f64 / s.sessions.max(1) as f64
    );
    drop(open);
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!("  after they closed           {:>6} kB", rss_kb(pid)?);
    Ok(())
}

/// Spawns `true`, drains it and waits for its status; returns the time taken.
async fn spawn_true(
    backend: &DockerBackend,
    id: &str,
    path: SpawnPath,
) -> Result<Duration, String> {
    let env = pb::Environment {
        uid: 1000,
        gid: 1000,
        ..Default::default()
    };
    let spec = SpawnSpec::for_user("bench", &env, vec!["true".into()], Vec::new(), None);
    let started = Instant::now();
    let Process {
        stdin,
        mut output,
        control,
        ..
    } = backend
        .spawn_via(id, spec, path)
        .await
        .map_err(|e| e.to_string())?;
    drop(stdin);
    while output.next().await.is_some() {}
    let status = control.wait().await.map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if status != ExitStatus::Code(0) {
        return Err(format!(
            "`true` through {} ended with {status:?}",
            path.name()
        ));
    }
    Ok(took)
}

/// An interactive shell with a terminal, as `ssh host` opens.
async fn open_shell(backend: &DockerBackend, id: &str) -> Result<Process, String> {
    let env = pb::Environment {
        uid: 1000,
        gid: 1000,
        ..Default::default()
    };
    let pty = PtySpec {
        term: "xterm".into(),
        cols: 80,
        rows: 24,
    };
    let spec = SpawnSpec::for_user("bench", &env, vec!["/bin/sh".into()], Vec::new(), Some(pty));
    backend
        .spawn_via(id, spec, SpawnPath::Helper)
        .await
        .map_err(|e| e.to_string())
}

/// One line of the table.
struct Row {
    /// What was measured.
    label: String,
    /// Number of samples.
    n: usize,
    /// Median, ms.
    p50: f64,
    /// 99th percentile, ms.
    p99: f64,
    /// Slowest, ms.
    max: f64,
    /// Completed spawns per second of wall time.
    rate: f64,
}

impl Row {
    fn new(label: String, mut samples: Vec<Duration>, wall: Duration) -> Row {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |q: f64| {
            ms(samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1])
        };
        Row {
            label,
            n: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: ms(*samples.last().expect("samples")),
            rate: samples.len() as f64 / wall.as_secs_f64(),
        }
    }

    fn print(&self) {
        println!(
            "{:<28} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>11.1}",
            self.label, self.n, self.p50, self.p99, self.max, self.rate
        );
    }
}

fn init_pid(id: &str) -> Result<u32, String> {
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", id])
        .output()
        .map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("container pid: {e}"))
}

fn rss_kb(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".to_owned())
}

fn docker_version() -> String {
    std::process::Command::new("docker")
        .args([
            "version",
            "-f",
            "Docker {{.Server.Version}} (API {{.Server.APIVersion}})",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Removes the benchmark's container and volume.
fn cleanup(prefix: &str) {
    let sh = format!(
        "docker ps -aq --filter label=labssh.prefix={prefix} | xargs -r docker rm -f >/dev/null; \
         docker volume ls -q --filter label=labssh.prefix={prefix} | xargs -r docker volume rm -f >/dev/null"
    );
    let _ = std::process::Command::new("sh").args(["-c", &sh]).status();
}
