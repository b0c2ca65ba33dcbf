//! Test images and cleanup of the containers a test created.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The small image the tests run; built locally since no registry is reachable.
pub const TEST_IMAGE: &str = "labssh/busybox:latest";

fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// Builds `labssh/busybox:latest` if it is missing (serialised across tests).
pub fn ensure_test_image() -> anyhow::Result<()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let status = Command::new("bash")
        .arg(scripts_dir().join("build-busybox-image.sh"))
        .arg(TEST_IMAGE)
        .status()?;
    anyhow::ensure!(status.success(), "building {TEST_IMAGE} failed");
    Ok(())
}

/// The Debian image with OpenSSH's sftp-server, scp and rsync.
pub const DEBIAN_IMAGE: &str = "labssh/debian:bookworm";

/// Builds [`DEBIAN_IMAGE`] with debootstrap (about a minute) if it is missing or
/// older than the script; serialised across tests.
pub fn ensure_debian_image() -> anyhow::Result<()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let status = Command::new("bash")
        .arg(scripts_dir().join("build-debian-image.sh"))
        .arg(DEBIAN_IMAGE)
        .status()?;
    anyhow::ensure!(status.success(), "building {DEBIAN_IMAGE} failed");
    Ok(())
}

/// An image with nothing in it but empty `/tmp` and `/etc` directories: no shell, no
/// libraries, no sftp-server, like a distroless image with its program left out.
pub const BARE_IMAGE: &str = "labssh/bare:latest";

/// Imports [`BARE_IMAGE`] if it is missing (serialised across tests).
pub fn ensure_bare_image() -> anyhow::Result<()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if docker(&["image", "inspect", BARE_IMAGE]).is_ok() {
        return Ok(());
    }
    let root = tempfile::tempdir()?;
    for dir in ["tmp", "etc"] {
        std::fs::create_dir(root.path().join(dir))?;
    }
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .output()?;
    anyhow::ensure!(tar.status.success(), "tar of an empty root failed");
    let mut import = Command::new("docker")
        .args(["import", "-", BARE_IMAGE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    {
        use std::io::Write;
        import
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(&tar.stdout)?;
    }
    anyhow::ensure!(
        import.wait()?.success(),
        "docker import of {BARE_IMAGE} failed"
    );
    Ok(())
}

/// Runs `docker` and returns stdout; errors carry stderr.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes every container, volume and network with this prefix when dropped,
/// so a failing test leaves nothing behind.
pub struct Cleanup {
    /// The agent's `container_prefix`.
    pub prefix: String,
}

impl Cleanup {
    /// Names of the networks the lab's agents made (`{prefix}...-net-...`).
    pub fn networks(&self) -> Vec<String> {
        docker(&[
            "network",
            "ls",
            "--filter",
            &format!("name={}", self.prefix),
            "--format",
            "{{.Name}}",
        ])
        .map(|s| {
            s.lines()
                .filter(|n| n.starts_with(&self.prefix) && n.contains("-net-"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
    }

    /// Names of containers whose name starts with the prefix.
    pub fn containers(&self) -> Vec<String> {
        docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=labssh.prefix={}", self.prefix),
            "--format",
            "{{.Names}}",
        ])
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // A lab's further agents use `{prefix}a1`, `{prefix}a2`…: theirs go too.
        let names: Vec<String> = docker(&[
            "ps",
            "-a",
            "--filter",
            "label=labssh.prefix",
            "--format",
            "{{.Names}} {{.Label \"labssh.prefix\"}}",
        ])
        .map(|s| {
            s.lines()
                .filter_map(|line| line.split_once(' '))
                .filter(|(_, prefix)| prefix.starts_with(&self.prefix))
                .map(|(name, _)| name.to_string())
                .collect()
        })
        .unwrap_or_default();
        if !names.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(names.iter().map(String::as_str));
            let _ = docker(&args);
        }
        // Homes of every agent of the lab: `{prefix}-home-USER`, `{prefix}a1-home-USER`…
        if let Ok(vols) = docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={}", self.prefix),
        ]) {
            let homes = vols.lines().filter(|v| {
                v.strip_prefix(self.prefix.as_str())
                    .and_then(|rest| rest.split_once("-home-"))
                    .is_some_and(|(agent, _)| agent.chars().all(|c| c.is_ascii_alphanumeric()))
            });
            for v in homes {
                let _ = docker(&["volume", "rm", "-f", v]);
            }
        }
        // After the containers: a network in use cannot go.
        for network in self.networks() {
            let _ = docker(&["network", "rm", &network]);
        }
    }
}
