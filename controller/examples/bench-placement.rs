//! Placement benchmark (issue 23): the real [`Registry`] (and the `Placer` behind it)
//! driven by simulated agents, in one process, with no network.
//!
//! For each agent count it reports:
//! - `place()` p50/p99 while a class of users logs in (each a new container), the
//!   agents heartbeating their inventories once a simulated second;
//! - the same for re-logins of users whose container exists (sticky lookups);
//! - placements per second of new users with heartbeats arriving at their normal
//!   rate (one per agent per heartbeat interval) from another thread, in real time;
//! - the same while the heartbeats come flat out (one after another from another
//!   thread, as after a controller restart), and how many that thread got in;
//! - max/avg load (agents have equal capacities, so this is max/avg containers);
//! - users moved on ±1 agent: fresh (the whole class placed again on n−1 and n+1
//!   agents) and sticky (an agent joins, then one dies, everyone logs in again);
//! - users moved by login order alone: the class placed again on the same agents,
//!   last user first;
//! - how long a burst of pending placements takes (no heartbeat in between, so every
//!   placement is still pending when the next one comes).
//!
//! Every loop is bounded: when the class would take longer than `--budget` seconds at
//! one agent count (estimated from a pilot run), fewer users are placed there and the
//! output says so; the burst stops at `--burst-budget` seconds and says how far it got.
//!
//! ```sh
//! cargo run --release -p labssh-controller --example bench-placement -- \
//!     --agents 10,100,1000,5000 --users 100000
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labssh_controller::registry::{Registration, Registry};
use labssh_controller::Config;
use labssh_proto::pb;

/// The environment every simulated user logs in to.
const ENV: &str = "default";

/// What to run, from the command line.
#[derive(Debug, Clone)]
struct Args {
    /// Agent counts, one result row each.
    agents: Vec<usize>,
    /// Users in the class.
    users: usize,
    /// Logins per simulated second while the class fills (between heartbeats).
    login_rate: usize,
    /// Most seconds one agent count's class placements may take; fewer users beyond.
    budget: Duration,
    /// Pending placements in the burst.
    burst: usize,
    /// Most seconds the burst may take.
    burst_budget: Duration,
    /// Seconds of the real-time throughput run.
    throughput_secs: Duration,
    /// Where to write `metric<TAB>agents<TAB>value` lines too.
    tsv: Option<std::path::PathBuf>,
}

/// The usage text, shown for `--help` and after a bad argument.
const USAGE: &str = "usage: bench-placement [--agents 10,100,1000,5000] [--users 100000] \
[--login-rate 1000] [--budget SECS] [--burst 20000] [--burst-budget SECS] \
[--throughput SECS] [--tsv FILE]";

impl Args {
    /// Parses the command line; an error says which argument is wrong.
    fn parse(mut argv: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut args = Args {
            agents: vec![10, 100, 1_000, 5_000],
            users: 100_000,
            login_rate: 1_000,
            budget: Duration::from_secs(180),
            burst: 20_000,
            burst_budget: Duration::from_secs(60),
            throughput_secs: Duration::from_secs(2),
            tsv: None,
        };
        while let Some(flag) = argv.next() {
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.to_string());
            }
            let value = argv
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let number = |v: &str| -> Result<usize, String> {
                v.replace('_', "")
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{flag}: '{v}' is not a positive whole number"))
            };
            let seconds = |v: &str| -> Result<Duration, String> {
                v.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("{flag}: '{v}' is not a number of seconds"))
            };
            match flag.as_str() {
                "--agents" => {
                    args.agents = value.split(',').map(number).collect::<Result<_, _>>()?;
                }
                "--users" => args.users = number(&value)?,
                "--login-rate" => args.login_rate = number(&value)?,
                "--budget" => args.budget = seconds(&value)?,
                "--burst" => args.burst = number(&value)?,
                "--burst-budget" => args.burst_budget = seconds(&value)?,
                "--throughput" => args.throughput_secs = seconds(&value)?,
                "--tsv" => args.tsv = Some(value.into()),
                other => return Err(format!("unknown argument '{other}'\n{USAGE}")),
            }
        }
        Ok(args)
    }
}

/// The name of simulated agent `i`; the same `i` is the same agent in every run.
fn agent_name(i: usize) -> String {
    format!("agent{i:05}")
}

/// The name of simulated user `i`.
fn user_name(i: usize) -> String {
    format!("student{i:06}")
}

/// One container of `user` in an inventory.
fn container(user: &str) -> pb::ContainerInfo {
    pb::ContainerInfo {
        listening: Vec::new(),
        user: user.to_string(),
        environment: ENV.to_string(),
        state: pb::ContainerState::Running.into(),
        gpus: Vec::new(),
        outdated: false,
    }
}

/// An agent's status report with this inventory.
fn status(capacity: u32, inventory: &[pb::ContainerInfo]) -> pb::AgentStatus {
    pb::AgentStatus {
        capacity,
        containers: inventory.len() as u32,
        inventory: inventory.to_vec(),
        ..Default::default()
    }
}

/// A simulated cluster around one real registry, on a simulated clock.
struct Sim {
    /// The registry under test.
    registry: Arc<Registry>,
    /// Each agent's registration, by index; `None` once it disconnected.
    regs: Vec<Option<Registration>>,
    /// Each agent's containers, by index, as it reports them.
    inventories: Arc<Mutex<Vec<Vec<pb::ContainerInfo>>>>,
    /// Agent index by name.
    index: HashMap<String, usize>,
    /// Every agent's capacity.
    capacity: u32,
    /// The simulated clock.
    now: Instant,
    /// Placements since the last heartbeat round.
    since_heartbeat: usize,
    /// Placements per simulated second.
    login_rate: usize,
}

impl Sim {
    /// `agents` agents of `capacity`, registered with empty inventories.
    fn new(agents: usize, capacity: u32, login_rate: usize) -> Self {
        let mut sim = Sim {
            registry: Arc::new(Registry::new(&Config::default())),
            regs: Vec::new(),
            inventories: Arc::new(Mutex::new(Vec::new())),
            index: HashMap::new(),
            capacity,
            now: Instant::now(),
            since_heartbeat: 0,
            login_rate,
        };
        for _ in 0..agents {
            sim.add_agent();
        }
        sim
    }

    /// Registers one more agent, empty; returns its index.
    fn add_agent(&mut self) -> usize {
        let i = self.regs.len();
        let name = agent_name(i);
        let reg = self.registry.register(
            &name,
            &format!("http://{name}:7001"),
            status(self.capacity, &[]),
            self.now,
        );
        self.regs.push(Some(reg));
        lock(&self.inventories).push(Vec::new());
        self.index.insert(name, i);
        i
    }

    /// Ends agent `i`'s stream: it is dead from now on.
    fn kill_agent(&mut self, i: usize) {
        if let Some(reg) = self.regs[i].take() {
            self.registry.disconnect(&reg, "benchmark");
        }
    }

    /// Places `user`, timing the call; a new container goes into the chosen agent's
    /// inventory. After every `login_rate` placements a simulated second passes and
    /// every live agent heartbeats.
    fn place(&mut self, user: &str) -> Result<(usize, Duration), String> {
        let start = Instant::now();
        let placed = self
            .registry
            .place(user, ENV, self.now)
            .map_err(|e| format!("placing {user}: {e}"))?;
        let took = start.elapsed();
        let i = *self
            .index
            .get(&placed.agent)
            .ok_or_else(|| format!("placed on unknown agent {}", placed.agent))?;
        if !placed.existing {
            lock(&self.inventories)[i].push(container(user));
        }
        self.since_heartbeat += 1;
        if self.since_heartbeat >= self.login_rate {
            self.heartbeat_all();
        }
        Ok((i, took))
    }

    /// One simulated second passes and every live agent reports its inventory.
    fn heartbeat_all(&mut self) {
        self.since_heartbeat = 0;
        self.now += Duration::from_secs(1);
        let inventories = lock(&self.inventories);
        for (reg, inventory) in self.regs.iter().zip(inventories.iter()) {
            if let Some(reg) = reg {
                // Never superseded: only this simulation registers these names.
                let _ = self
                    .registry
                    .heartbeat(reg, status(self.capacity, inventory), self.now);
            }
        }
    }

    /// Containers per agent now.
    fn loads(&self) -> Vec<usize> {
        lock(&self.inventories).iter().map(Vec::len).collect()
    }
}

/// Locks a mutex, ignoring poisoning (the data is plain).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The p-th percentile (nearest rank) of sorted durations, in µs.
fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1].as_secs_f64() * 1e6
}

/// In which order a class logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// User 0 first.
    Forward,
    /// The last user first.
    Reversed,
}

/// Places users `0..users` on a fresh cluster of `agents`, in `order`; returns the
/// sim, each user's agent index (by user number) and the sorted call times.
fn fill(
    agents: usize,
    capacity: u32,
    users: usize,
    login_rate: usize,
    order: Order,
) -> Result<(Sim, Vec<usize>, Vec<Duration>), String> {
    let mut sim = Sim::new(agents, capacity, login_rate);
    let mut owners = vec![0; users];
    let mut times = Vec::with_capacity(users);
    for k in 0..users {
        let u = match order {
            Order::Forward => k,
            Order::Reversed => users - 1 - k,
        };
        let (i, took) = sim.place(&user_name(u))?;
        owners[u] = i;
        times.push(took);
    }
    sim.heartbeat_all();
    times.sort();
    Ok((sim, owners, times))
}

/// Users whose agent differs between two runs, compared by agent name (index).
fn moved(a: &[usize], b: &[usize]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// Every user of `0..users` logs in again; returns their agents and sorted call times.
fn relogin(sim: &mut Sim, users: usize) -> Result<(Vec<usize>, Vec<Duration>), String> {
    let mut owners = Vec::with_capacity(users);
    let mut times = Vec::with_capacity(users);
    for u in 0..users {
        let (i, took) = sim.place(&user_name(u))?;
        owners.push(i);
        times.push(took);
    }
    sim.heartbeat_all();
    times.sort();
    Ok((owners, times))
}

/// New users placed per second, in real time, while another thread sends every live
/// agent's heartbeat once per heartbeat interval (or, `flat_out`, one after another
/// as fast as it can: a controller restart's storm of registrations and reports);
/// at most `most` of them, in at most `window`. Returns (placements/s, heartbeats/s
/// achieved, heartbeats/s due).
fn throughput(
    sim: &mut Sim,
    first_user: usize,
    most: usize,
    window: Duration,
    flat_out: bool,
) -> Result<(f64, f64, f64), String> {
    let interval = Config::default().heartbeat_interval();
    let base = sim.now;
    let start = Instant::now();
    let clock = move || base + start.elapsed();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let regs: Vec<Registration> = sim.regs.iter().flatten().cloned().collect();
    let due = regs.len() as f64 / interval.as_secs_f64();
    let heartbeats = {
        let (registry, inventories) = (sim.registry.clone(), sim.inventories.clone());
        let (stop, sent, capacity) = (stop.clone(), sent.clone(), sim.capacity);
        let index: Vec<usize> = sim
            .regs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|_| i))
            .collect();
        std::thread::spawn(move || {
            // Heartbeat k is due k·interval/agents after the start: each agent once
            // an interval, spread evenly.
            let gap = interval.as_secs_f64() / regs.len() as f64;
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = Duration::from_secs_f64(k as f64 * gap);
                if let Some(wait) = due.checked_sub(start.elapsed()).filter(|_| !flat_out) {
                    // Short sleeps, so the end of the window is noticed.
                    std::thread::sleep(wait.min(Duration::from_millis(10)));
                    continue;
                }
                let next = (k % regs.len() as u64) as usize;
                let report = status(capacity, &lock(&inventories)[index[next]]);
                let _ = registry.heartbeat(&regs[next], report, clock());
                sent.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
        })
    };
    let mut placed = 0usize;
    let mut result = Ok(());
    // Bounded by the window and by a count, whichever comes first.
    while start.elapsed() < window && placed < most {
        let user = user_name(first_user + placed);
        match sim.registry.place(&user, ENV, clock()) {
            Ok(p) => {
                if !p.existing {
                    if let Some(&i) = sim.index.get(&p.agent) {
                        lock(&sim.inventories)[i].push(container(&user));
                    }
                }
            }
            Err(e) => {
                result = Err(format!("placing {user}: {e}"));
                break;
            }
        }
        placed += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = heartbeats.join();
    result?;
    // Keep the simulated clock ahead of what the threads used.
    sim.now = clock();
    sim.heartbeat_all();
    let hb = sent.load(Ordering::Relaxed) as f64 / elapsed;
    Ok((placed as f64 / elapsed, hb, due))
}

/// A burst of `count` new users placed at one instant (all pending); returns how many
/// were placed and the time taken, stopping at `budget`.
fn burst(
    agents: usize,
    capacity: u32,
    count: usize,
    budget: Duration,
) -> Result<(usize, Duration), String> {
    let sim = Sim::new(agents, capacity, usize::MAX);
    let start = Instant::now();
    let mut done = 0;
    while done < count && start.elapsed() < budget {
        sim.registry
            .place(&user_name(done), ENV, sim.now)
            .map_err(|e| format!("burst placement {done}: {e}"))?;
        done += 1;
    }
    Ok((done, start.elapsed()))
}

/// One agent count's results, as (metric, value) in print order.
type Row = Vec<(&'static str, String)>;

/// Runs every measurement for one agent count.
fn run(args: &Args, agents: usize, notes: &mut Vec<String>) -> Result<Row, String> {
    if agents < 2 {
        return Err("--agents: every count must be at least 2 (a −1 run needs one left)".into());
    }
    let capacity_for = |users: usize| -> u32 {
        // Twice the fair share of the larger of the class with the throughput run's
        // new users and the burst: capacity never binds, the load bound does.
        let need = 2 * (users + users / 2).max(args.burst).div_ceil(agents);
        u32::try_from(need.max(1)).unwrap_or(u32::MAX)
    };

    // Pilot: the cost of a placement at this size, to keep within the budget. The
    // class is placed about five times over (four fills, two re-logins at ~½).
    let pilot_users = args.users.min(2_000);
    let started = Instant::now();
    fill(
        agents,
        capacity_for(args.users),
        pilot_users,
        args.login_rate,
        Order::Forward,
    )?;
    let per_place = started.elapsed().as_secs_f64() / pilot_users as f64;
    let mut users = args.users;
    let estimate = per_place * 5.0 * users as f64;
    if estimate > args.budget.as_secs_f64() {
        let fit = (args.budget.as_secs_f64() / (5.0 * per_place)) as usize;
        users = (fit / 1_000 * 1_000).max(1_000).min(args.users);
        notes.push(format!(
            "{agents} agents: {users} users instead of {} (the class would take ~{estimate:.0} s, over the {:.0} s budget)",
            args.users,
            args.budget.as_secs_f64()
        ));
    }
    let capacity = capacity_for(users);

    let (mut sim, owners, fill_times) =
        fill(agents, capacity, users, args.login_rate, Order::Forward)?;
    let loads = sim.loads();
    let max = *loads.iter().max().unwrap_or(&0) as f64;
    let avg = users as f64 / agents as f64;

    let (_, fewer, _) = fill(agents - 1, capacity, users, args.login_rate, Order::Forward)?;
    let (_, more, _) = fill(agents + 1, capacity, users, args.login_rate, Order::Forward)?;
    let (fresh_minus, fresh_plus) = (moved(&fewer, &owners), moved(&more, &owners));
    let (_, reversed, _) = fill(agents, capacity, users, args.login_rate, Order::Reversed)?;
    let order_moved = moved(&reversed, &owners);

    let (per_sec, hb_rate, hb_due) =
        throughput(&mut sim, users, users / 4, args.throughput_secs, false)?;
    let (storm_per_sec, storm_hb, _) = throughput(
        &mut sim,
        users + users / 4,
        users / 4,
        args.throughput_secs,
        true,
    )?;

    // Sticky: one agent joins, everyone logs in again; then agent 0 dies, again.
    sim.add_agent();
    let (after_join, relogin_times) = relogin(&mut sim, users)?;
    let sticky_plus = moved(&after_join, &owners);
    let dead_held = after_join.iter().filter(|&&i| i == 0).count();
    sim.kill_agent(0);
    let (after_death, _) = relogin(&mut sim, users)?;
    let sticky_minus = moved(&after_death, &after_join);
    let strays = after_join
        .iter()
        .zip(&after_death)
        .filter(|(b, a)| b != a && **b != 0)
        .count();

    let (burst_done, burst_took) = burst(agents, capacity, args.burst, args.burst_budget)?;
    if burst_done < args.burst {
        notes.push(format!(
            "{agents} agents: the burst stopped at {burst_done} of {} pending placements after {:.1} s (budget)",
            args.burst,
            burst_took.as_secs_f64()
        ));
    }

    let frac = |n: usize| {
        let f = n as f64 / users as f64;
        format!("{:.3}% ({:.2}/n)", 100.0 * f, f * agents as f64)
    };
    Ok(vec![
        ("users", users.to_string()),
        ("capacity", capacity.to_string()),
        (
            "place_p50_us",
            format!("{:.1}", percentile_us(&fill_times, 50.0)),
        ),
        (
            "place_p99_us",
            format!("{:.1}", percentile_us(&fill_times, 99.0)),
        ),
        (
            "relogin_p50_us",
            format!("{:.1}", percentile_us(&relogin_times, 50.0)),
        ),
        (
            "relogin_p99_us",
            format!("{:.1}", percentile_us(&relogin_times, 99.0)),
        ),
        ("placements_per_s", format!("{per_sec:.0}")),
        ("heartbeats_per_s", format!("{hb_rate:.0} of {hb_due:.0}")),
        ("storm_placements_per_s", format!("{storm_per_sec:.0}")),
        ("storm_heartbeats_per_s", format!("{storm_hb:.0}")),
        ("max_over_avg", format!("{:.3}", max / avg)),
        ("fresh_moved_minus1", frac(fresh_minus)),
        ("fresh_moved_plus1", frac(fresh_plus)),
        ("order_moved", frac(order_moved)),
        ("sticky_moved_plus1", frac(sticky_plus)),
        (
            "sticky_moved_minus1",
            format!(
                "{} (dead held {}, others {strays})",
                frac(sticky_minus),
                frac(dead_held)
            ),
        ),
        (
            "burst_ms",
            format!(
                "{:.1} ({burst_done} placed)",
                burst_took.as_secs_f64() * 1e3
            ),
        ),
    ])
}

fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench-placement: {e}");
            std::process::exit(2);
        }
    };
    let mut notes = Vec::new();
    let mut rows = Vec::new();
    for &agents in &args.agents {
        eprintln!("bench-placement: {agents} agents …");
        let started = Instant::now();
        match run(&args, agents, &mut notes) {
            Ok(row) => rows.push((agents, row)),
            Err(e) => {
                eprintln!("bench-placement: {agents} agents: {e}");
                std::process::exit(1);
            }
        }
        eprintln!(
            "bench-placement: {agents} agents done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    // One column per agent count, one line per metric.
    let mut out = String::new();
    let _ = write!(out, "| metric |");
    for (agents, _) in &rows {
        let _ = write!(out, " {agents} agents |");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "|---|{}", "---:|".repeat(rows.len()));
    let mut tsv = String::new();
    if let Some((_, first)) = rows.first() {
        for (m, (metric, _)) in first.iter().enumerate() {
            let _ = write!(out, "| {metric} |");
            for (agents, row) in &rows {
                let _ = write!(out, " {} |", row[m].1);
                let _ = writeln!(tsv, "{metric}\t{agents}\t{}", row[m].1);
            }
            let _ = writeln!(out);
        }
    }
    print!("{out}");
    println!(
        "login rate {} per simulated second between heartbeat rounds; burst {}; throughput window {:.1} s",
        args.login_rate,
        args.burst,
        args.throughput_secs.as_secs_f64()
    );
    for note in &notes {
        println!("note: {note}");
    }
    if let Some(path) = &args.tsv {
        if let Err(e) = std::fs::write(path, tsv) {
            eprintln!("bench-placement: writing {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
