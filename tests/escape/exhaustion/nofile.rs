//! The agent raises its open-file limit at start: a real `labssh agent` process,
//! started with the usual soft limit of 1024, runs with its soft limit at the hard
//! one; with `nofile` at that; above the hard limit, at that with CAP_SYS_RESOURCE
//! and with a clear start-up error without it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use labssh_testkit::process::{free_port, Proc};

/// The soft limit most distributions give a process.
const USUAL_SOFT_LIMIT: u64 = 1024;

/// (soft, hard) open-file limits of process `pid`, from /proc.
fn nofile_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Starts `labssh agent` with `extra` config lines under a soft limit of 1024.
fn spawn_agent(dir: &Path, name: &str, extra: &str) -> (Proc, u16) {
    let port = free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "name = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\ncontroller = \"http://127.0.0.1:1\"\nfirewall = false\ncontainer_prefix = \"{}\"\n{extra}\n",
            labssh_testkit::unique("nf")
        ),
    )
    .unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -Sn {USUAL_SOFT_LIMIT} && exec \"$0\" agent --config \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_labssh"))
        .arg(&config);
    (Proc::start(name, cmd, dir).unwrap(), port)
}

/// [`spawn_agent`], returned once it listens (after its start-up, limits included).
fn start_agent(dir: &Path, name: &str, extra: &str) -> Proc {
    let (mut agent, port) = spawn_agent(dir, name, extra);
    agent.wait_port(port, Duration::from_secs(60)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent.log_text().contains("agent listening") {
        assert!(agent.running(), "agent stopped: {}", agent.log_text());
        assert!(
            Instant::now() < deadline,
            "agent never listened: {}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

/// Whether this process may raise hard limits (CAP_SYS_RESOURCE, bit 24).
fn may_raise_hard_limits() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    effective & (1 << 24) != 0
}

#[test]
fn the_agent_raises_its_open_file_limit_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (_, hard) = nofile_of(std::process::id());
    assert!(hard > 8192, "this test needs a hard limit above 8192");

    // By default: the soft limit up to the hard one.
    let agent = start_agent(dir.path(), "nofile-default", "");
    let (soft, agent_hard) = nofile_of(agent.pid());
    assert_eq!(
        (soft, agent_hard),
        (hard, hard),
        "the soft limit was not raised to the hard one: {}",
        agent.log_text()
    );
    assert!(
        agent.log_text().contains("open-file limit"),
        "{}",
        agent.log_text()
    );
    drop(agent);

    // A configured target within the hard limit.
    let agent = start_agent(dir.path(), "nofile-8192", "nofile = 8192");
    assert_eq!(nofile_of(agent.pid()), (8192, hard), "{}", agent.log_text());
    drop(agent);

    // Above the hard limit: raised with CAP_SYS_RESOURCE, else a clear start-up error.
    let target = hard + 4096;
    let extra = format!("nofile = {target}");
    if may_raise_hard_limits() {
        let agent = start_agent(dir.path(), "nofile-above", &extra);
        assert_eq!(
            nofile_of(agent.pid()),
            (target, target),
            "{}",
            agent.log_text()
        );
    } else {
        let (mut agent, _) = spawn_agent(dir.path(), "nofile-above", &extra);
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent.running() {
            assert!(
                Instant::now() < deadline,
                "the agent started anyway: {}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = agent.log_text();
        assert!(
            log.contains(&format!(
                "nofile: cannot raise the open-file limit to {target} (it is {hard}, hard limit {hard}"
            )) && log.contains("CAP_SYS_RESOURCE"),
            "{log}"
        );
    }
}
