//! A throwaway `redis-server` on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server, killed on drop.
pub struct RedisServer {
    /// The server process.
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Working directory (no persistence is configured, but Redis wants one).
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts redis-server without persistence and waits until it answers.
    pub fn start() -> anyhow::Result<RedisServer> {
        // Outside the ephemeral range: a port from bind(0) could be taken by any
        // test's outgoing connection before redis-server binds it.
        Self::start_on(crate::process::free_port())
    }

    /// Starts redis-server on a given port (e.g. to bring one back after
    /// [`RedisServer::stop`]).
    pub fn start_on(port: u16) -> anyhow::Result<RedisServer> {
        let dir = tempfile::tempdir()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("redis-server not startable (apt-get install redis-server): {e}")
            })?;
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("redis-server did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Runs `redis-cli` against this server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the server (to test behaviour with Redis down).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
