//! A real `ssh-agent` for agent-forwarding tests: its own socket, holding one fresh
//! ed25519 key, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `ssh-agent -D -a SOCKET` with one key added.
pub struct TestAgent {
    /// The agent's socket on the host: give it to `ssh -A` as `SSH_AUTH_SOCK`.
    pub socket: PathBuf,
    /// The key's SHA256 fingerprint, as `ssh-add -l` prints it.
    pub fingerprint: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TestAgent {
    /// Starts the agent and adds a key made for it.
    pub fn start() -> anyhow::Result<TestAgent> {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("id_ed25519");
        let made = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "labssh-agent-test",
                "-f",
            ])
            .arg(&key)
            .output()?;
        anyhow::ensure!(made.status.success(), "ssh-keygen: {made:?}");
        let listed = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(key.with_extension("pub"))
            .output()?;
        let fingerprint = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .nth(1)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no fingerprint in {listed:?}"))?;
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let agent = TestAgent {
            socket,
            fingerprint,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !agent.socket.exists() {
            anyhow::ensure!(Instant::now() < deadline, "ssh-agent never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        let added = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .output()?;
        anyhow::ensure!(added.status.success(), "ssh-add: {added:?}");
        Ok(agent)
    }

    /// `ssh-add -l` against the agent socket at `socket` (the test's own, or one
    /// forwarded to it).
    pub fn list(socket: &Path) -> anyhow::Result<Output> {
        Ok(Command::new("ssh-add")
            .args(["-l", "-E", "sha256"])
            .env("SSH_AUTH_SOCK", socket)
            .stdin(Stdio::null())
            .output()?)
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
