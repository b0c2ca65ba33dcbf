//! Runs the real `labssh-loadtest` binary against a real OpenSSH `sshd`
//! started on a free loopback port by the test itself.

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SSHD: &str = "/usr/sbin/sshd";
/// No single run of the binary may take longer than this.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// An sshd of our own, killed when dropped.
struct Sshd {
    child: Child,
    port: u16,
    /// Holds the keys and the configuration.
    dir: tempfile::TempDir,
}

impl Sshd {
    fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: these tests need OpenSSH's server (apt-get install openssh-server)"
        );
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd (run the tests as root)");
        let dir = tempfile::tempdir().unwrap();
        for name in ["host_key", "client_key", "wrong_key"] {
            keygen(&dir.path().join(name));
        }
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        // Another process may take the port between probing and binding; try again then.
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            // sshd's own messages (every readiness probe makes one), shown if it fails.
            let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nUsePAM no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                     AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nPidFile none\n\
                     PermitRootLogin yes\nAllowUsers root\nMaxStartups 100\nMaxSessions 100\nLogLevel ERROR\n",
                    dir = dir.path().display()
                ),
            )
            .unwrap();
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.try_clone().unwrap())
                .spawn()
                .expect("starting sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default();
        panic!("sshd did not start listening:\n{log}");
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `--target` for root with the given options.
    fn target(&self, name: &str, options: &str) -> String {
        format!("{name}=127.0.0.1:{},user=root,{options}", self.port)
    }

    fn good(&self, name: &str) -> String {
        self.target(name, &format!("key={}", self.key("client_key").display()))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("running ssh-keygen (apt-get install openssh-client)");
    assert!(status.success(), "ssh-keygen failed");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the binary, never for longer than RUN_TIMEOUT.
fn loadtest(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_labssh-loadtest"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "labssh-loadtest {args:?} ran past {RUN_TIMEOUT:?}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    eprintln!(
        "$ labssh-loadtest {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs the binary with `args`, then `--target` the good sshd target and
/// `--out` a fresh directory, which it returns with the output.
fn against_good(sshd: &Sshd, args: &[&str]) -> (Output, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let target = sshd.good("sshd");
    let mut all = args.to_vec();
    all.extend(["--target", &target, "--out", out.path().to_str().unwrap()]);
    (loadtest(&all), out)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A CSV file's rows, each by column name.
fn read_csv(path: &Path) -> Vec<HashMap<String, String>> {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            header
                .iter()
                .map(String::from)
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn record<'a>(summary: &'a Value, target: &str, level: u64) -> &'a Value {
    summary
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == target && r["level"] == level)
        .unwrap_or_else(|| panic!("no record for {target} at level {level} in {summary:#}"))
}

fn failed_total(record: &Value) -> u64 {
    record["failed"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

#[test]
fn a_sweep_measures_every_level_and_writes_csv_json_and_svg() {
    let sshd = Sshd::start();
    let (output, out) = against_good(&sshd, &["sweep", "--levels", "1,3"]);
    assert_eq!(output.status.code(), Some(0), "the sweep failed");

    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary.as_array().unwrap().len(), 2);
    for (level, ok) in [(1, 1), (3, 3)] {
        let r = record(&summary, "sshd", level);
        assert_eq!(r["ok"], ok);
        assert_eq!(failed_total(r), 0, "{r:#}");
        for kind in [
            "refused",
            "timeout",
            "auth_failed",
            "channel_failed",
            "nonzero_exit",
        ] {
            assert_eq!(r["failed"][kind], 0, "{kind}");
        }
        let total = &r["total"];
        let (p50, p99, max) = (
            total["p50_ms"].as_f64().unwrap(),
            total["p99_ms"].as_f64().unwrap(),
            total["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{total}");
        for phase in [
            "tcp_connect",
            "kex",
            "auth",
            "channel_open",
            "exec_first_byte",
            "exec_exit",
        ] {
            let q = &r["phases"][phase];
            let phase_max = q["max_ms"].as_f64().unwrap();
            assert!(
                phase_max <= max,
                "{phase} max {phase_max} > total max {max}"
            );
        }
    }

    // The numbers add up: the sequential phases' means never exceed the mean total.
    let levels = read_json(&out.path().join("levels.json"));
    for level in levels.as_array().unwrap() {
        let mean = |phase: &str| level["phases"][phase]["mean_ms"].as_f64().unwrap();
        let sum: f64 = [
            "tcp_connect",
            "kex",
            "auth",
            "channel_open",
            "exec_exit",
            "close",
        ]
        .iter()
        .map(|p| mean(p))
        .sum();
        let total = level["total"]["mean_ms"].as_f64().unwrap();
        assert!(sum <= total + 0.001, "phases {sum} > total {total}");
        assert!(mean("exec_first_byte") <= mean("exec_exit") + 0.001);
    }

    let levels_csv = std::fs::read_to_string(out.path().join("levels.csv")).unwrap();
    assert_eq!(levels_csv.lines().count(), 3, "{levels_csv}");
    assert!(levels_csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("sshd,1,1,0,"));
    // Read by column name, the CSV says what summary.json says.
    for row in read_csv(&out.path().join("levels.csv")) {
        let level: u64 = row["level"].parse().unwrap();
        let r = record(&summary, &row["target"], level);
        assert_eq!(row["ok"], r["ok"].to_string(), "{row:?}");
        assert_eq!(row["failed"], "0", "{row:?}");
        let p50 = r["total"]["p50_ms"].as_f64().unwrap();
        assert_eq!(row["total_p50_ms"], format!("{p50:.3}"), "{row:?}");
    }
    let phases_csv = std::fs::read_to_string(out.path().join("phases.csv")).unwrap();
    assert_eq!(phases_csv.lines().count(), 1 + 2 * 8, "{phases_csv}");
    let phases = read_csv(&out.path().join("phases.csv"));
    let totals: Vec<&HashMap<String, String>> =
        phases.iter().filter(|r| r["phase"] == "total").collect();
    assert_eq!(totals.len(), 2);
    for row in totals {
        assert!(row["mean_ms"].parse::<f64>().unwrap() > 0.0, "{row:?}");
    }
    for svg in ["latency.svg", "phases.svg"] {
        let text = std::fs::read_to_string(out.path().join(svg)).unwrap();
        assert!(text.starts_with("<svg"), "{svg}");
        assert!(text.trim_end().ends_with("</svg>"), "{svg}");
        assert!(text.contains("sshd"), "{svg} names the target");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("p99/base"), "the table is printed");
}

#[test]
fn failures_are_classified_and_broken_targets_are_dropped() {
    let sshd = Sshd::start();
    let out = tempfile::tempdir().unwrap();
    // Accepts TCP (the kernel does) but never speaks SSH.
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled_port = stalled.local_addr().unwrap().port();
    let closed_port = free_port();
    let key = sshd.key("client_key");
    let targets = [
        sshd.good("good"),
        sshd.target(
            "wrongkey",
            &format!("key={}", sshd.key("wrong_key").display()),
        ),
        sshd.target("wrongpw", "password=not-the-password"),
        format!(
            "closed=127.0.0.1:{closed_port},user=root,key={}",
            key.display()
        ),
        format!(
            "stalled=127.0.0.1:{stalled_port},user=root,key={}",
            key.display()
        ),
    ];
    let mut args = vec!["sweep", "--levels", "1,3", "--phase-timeout", "2"];
    for t in &targets {
        args.extend(["--target", t.as_str()]);
    }
    args.extend(["--out", out.path().to_str().unwrap()]);
    let output = loadtest(&args);
    assert_eq!(output.status.code(), Some(1), "failures give exit status 1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("target wrongkey") && stderr.contains("auth_failed"),
        "a clear message names the target and the reason: {stderr}"
    );

    let summary = read_json(&out.path().join("summary.json"));
    // Interleaved: every target's level 1 comes before any level 3.
    let order: Vec<(String, u64)> = summary
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_string(),
                r["level"].as_u64().unwrap(),
            )
        })
        .collect();
    let names = ["good", "wrongkey", "wrongpw", "closed", "stalled"];
    let want: Vec<(String, u64)> = names
        .iter()
        .map(|n| (n.to_string(), 1))
        .chain([("good".to_string(), 3)])
        .collect();
    assert_eq!(order, want, "levels run A B A B, broken targets dropped");

    assert_eq!(record(&summary, "good", 3)["ok"], 3);
    for (target, kind) in [
        ("wrongkey", "auth_failed"),
        ("wrongpw", "auth_failed"),
        ("closed", "refused"),
        ("stalled", "timeout"),
    ] {
        let r = record(&summary, target, 1);
        assert_eq!(r["ok"], 0, "{target}");
        assert_eq!(r["failed"][kind], 1, "{target}: {r:#}");
        assert_eq!(failed_total(r), 1, "{target}: {r:#}");
        assert!(r["total"]["p50_ms"].is_null());
    }
    let run = read_json(&out.path().join("run.json"));
    assert_eq!(run["dropped_targets"].as_array().unwrap().len(), 4);
    drop(stalled);
}

#[test]
fn a_command_exiting_3_counts_as_nonzero_exit() {
    let sshd = Sshd::start();
    let (output, out) = against_good(&sshd, &["sweep", "--levels", "1,3", "--command", "exit 3"]);
    assert_eq!(output.status.code(), Some(1));
    let summary = read_json(&out.path().join("summary.json"));
    for level in [1, 3] {
        let r = record(&summary, "sshd", level);
        assert_eq!(r["ok"], 0);
        assert_eq!(r["failed"]["nonzero_exit"], level, "{r:#}");
        assert_eq!(failed_total(r), level);
    }
    let levels = read_json(&out.path().join("levels.json"));
    let example = levels[0]["failure_examples"]["nonzero_exit"][0]
        .as_str()
        .unwrap();
    assert!(example.contains("exit status 3"), "{example}");
}

#[test]
fn throughput_moves_every_byte_both_ways() {
    let sshd = Sshd::start();
    let (output, out) = against_good(&sshd, &["throughput", "--bytes", "4M", "--sessions", "2"]);
    assert_eq!(output.status.code(), Some(0));
    let report = read_json(&out.path().join("throughput.json"));
    let rows = report.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, direction) in rows.iter().zip(["push", "pull"]) {
        assert_eq!(row["direction"], direction);
        assert_eq!(row["ok"], 2, "{row:#}");
        assert_eq!(row["failed"], 0);
        assert_eq!(row["bytes"], 4_000_000);
        assert!(row["mb_per_s"].as_f64().unwrap() > 0.0);
    }
    let csv = read_csv(&out.path().join("throughput.csv"));
    assert_eq!(csv.len(), 2);
    for (row, direction) in csv.iter().zip(["push", "pull"]) {
        assert_eq!(row["direction"], direction);
        assert_eq!(row["ok"], "2", "{row:?}");
        assert!(row["mb_per_s"].parse::<f64>().unwrap() > 0.0, "{row:?}");
    }
    assert!(String::from_utf8_lossy(&output.stdout).contains("MB/s"));
}

#[test]
fn soak_holds_sessions_and_times_the_echo() {
    let sshd = Sshd::start();
    let started = Instant::now();
    let (output, out) = against_good(
        &sshd,
        &[
            "soak",
            "--sessions",
            "2",
            "--duration",
            "2",
            "--interval",
            "100",
        ],
    );
    assert_eq!(output.status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(20));
    let report = read_json(&out.path().join("soak.json"));
    let row = &report[0];
    assert_eq!(row["established"], 2, "{row:#}");
    assert_eq!(row["dropped"], 0, "{row:#}");
    assert!(row["keystrokes"].as_u64().unwrap() >= 4, "{row:#}");
    let p50 = row["echo"]["p50_ms"].as_f64().unwrap();
    let max = row["echo"]["max_ms"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= max, "{row:#}");
    let csv = read_csv(&out.path().join("soak.csv"));
    assert_eq!(csv.len(), 1);
    assert_eq!(csv[0]["established"], "2", "{csv:?}");
    assert_eq!(csv[0]["echo_p50_ms"], format!("{p50:.3}"), "{csv:?}");
}

#[test]
fn bad_input_gets_a_clear_message_and_a_nonzero_exit() {
    let output = loadtest(&[
        "sweep",
        "--levels",
        "1,0",
        "--target",
        "a=127.0.0.1:22,user=root,password=x",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("between 1 and"));

    let output = loadtest(&["sweep", "--target", "a=127.0.0.1:22,password=x"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("user=NAME"));

    let output = loadtest(&[
        "sweep",
        "--target",
        "a=127.0.0.1:22,user=root,key=/nonexistent/key",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/key"));
}
