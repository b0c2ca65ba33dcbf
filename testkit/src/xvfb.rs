//! A real X server for X11-forwarding tests: `Xvfb` on a display it picks itself
//! (`-displayfd`), unix socket only, killed when dropped. It stands for the
//! student's laptop screen: `ssh -X` forwards to it, and `xwininfo` reads what
//! appeared on it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Xvfb may take to say its display.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `Xvfb`.
pub struct Xvfb {
    /// Its display, e.g. `:3`: give it to the ssh client as `DISPLAY`.
    pub display: String,
    child: Child,
}

impl Xvfb {
    /// Starts Xvfb on a display nobody holds and waits until it serves.
    pub fn start() -> anyhow::Result<Xvfb> {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-nolisten",
                "tcp",
                "-screen",
                "0",
                "800x600x24",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("Xvfb (apt-get install xvfb): {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        // Xvfb writes the display number once it accepts connections.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if !line.trim().is_empty() => line,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("Xvfb did not say its display within {START_TIMEOUT:?}");
            }
        };
        let xvfb = Xvfb {
            display: format!(":{}", line.trim()),
            child,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !xvfb.tree()?.contains("Root window") {
            anyhow::ensure!(
                Instant::now() < deadline,
                "Xvfb {} never answered",
                xvfb.display
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(xvfb)
    }

    /// `xwininfo -root -tree`: every window on the display, with its name.
    pub fn tree(&self) -> anyhow::Result<String> {
        let out = Command::new("xwininfo")
            .args(["-root", "-tree", "-display", &self.display])
            .output()
            .map_err(|e| anyhow::anyhow!("xwininfo (apt-get install x11-utils): {e}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
