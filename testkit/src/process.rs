//! Real role processes (`labssh proxy|controller|agent`, haproxy) started by
//! tests, with their output kept in a log file and killed on drop.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where tests' servers get their ports: outside the range the kernel picks outgoing
/// connections' local ports from (`ip_local_port_range`), so no connection of any test
/// (ssh clients, gRPC) can take one between the check here and the server's bind, as a
/// port from `bind(0)` can be taken.
fn test_ports() -> std::ops::Range<u16> {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = range
        .split_whitespace()
        .filter_map(|n| n.parse::<u16>().ok());
    let (low, high) = (
        bounds.next().unwrap_or(32768),
        bounds.next().unwrap_or(60999),
    );
    if low >= 11024 {
        low - 10000..low
    } else {
        high.saturating_add(1)..u16::MAX
    }
}

/// A loopback port free now, never handed out before in this process, and outside the
/// ephemeral range (see [`test_ports`]), so the server a test starts on it finds it
/// still free.
pub fn free_port() -> u16 {
    use rand::Rng;
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let ports = test_ports();
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(ports.clone());
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port in {ports:?}")
}

/// A child process whose stdout and stderr go to `log`.
pub struct Proc {
    /// Name, for messages.
    pub name: String,
    /// The process.
    child: Child,
    /// Its combined output.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd`, logging to `dir/NAME.log`.
    pub fn start(name: &str, mut cmd: Command, dir: &Path) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log)?;
        cmd.stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .stdin(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Waits until `port` on loopback accepts connections.
    pub fn wait_port(&mut self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited with {status}: {}", self.name, self.log_text());
            }
            if Instant::now() > deadline {
                anyhow::bail!("{} not listening on {port}: {}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Its output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks it to stop (SIGTERM), as systemd would.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Compiles the C file `source` into a static binary with gcc and returns its
/// bytes, for a probe a test copies into a container whatever its image holds.
pub fn static_c_binary(source: &str) -> Vec<u8> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static BUILT: AtomicU32 = AtomicU32::new(0);
    let out = std::env::temp_dir().join(format!(
        "labssh-probe-{}-{}",
        std::process::id(),
        BUILT.fetch_add(1, Ordering::Relaxed)
    ));
    let status = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(source)
        .status()
        .expect("run gcc");
    assert!(status.success(), "gcc -static {source} failed (libc6-dev?)");
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    bytes
}
