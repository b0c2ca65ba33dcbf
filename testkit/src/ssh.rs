//! The stock OpenSSH client, driven non-interactively.
//!
//! Passwords are supplied through `SSH_ASKPASS` with
//! `SSH_ASKPASS_REQUIRE=force` (OpenSSH ≥ 8.4), so no extra tool is needed.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Upper bound for one ssh invocation in a test; a hang fails, not blocks.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(90);

/// How to authenticate.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Password, answered through SSH_ASKPASS.
    Password(String),
    /// Keyboard-interactive, answered with this password.
    KeyboardInteractive(String),
    /// Private key file.
    Key(PathBuf),
}

/// Builds `ssh` commands against one server.
pub struct Ssh {
    /// Server address.
    addr: SocketAddr,
    /// Holds the askpass script and generated keys.
    dir: tempfile::TempDir,
}

impl Ssh {
    pub fn new(addr: SocketAddr) -> anyhow::Result<Ssh> {
        let dir = tempfile::tempdir()?;
        let askpass = dir.path().join("askpass");
        std::fs::write(
            &askpass,
            "#!/bin/sh\nprintf '%s\\n' \"$LABSSH_TEST_PASSWORD\"\n",
        )?;
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755))?;
        Ok(Ssh { addr, dir })
    }

    /// Generates an ed25519 key pair; returns (private key path, public line).
    pub fn keygen(&self, name: &str) -> anyhow::Result<(PathBuf, String)> {
        let path = self.dir.path().join(name);
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .status()?;
        anyhow::ensure!(status.success(), "ssh-keygen failed");
        let public = std::fs::read_to_string(path.with_extension("pub"))?;
        Ok((path, public.trim().to_string()))
    }

    /// `ssh` with options for a throwaway server, ready for `args`.
    pub fn command(&self, login: &str, auth: &Auth, args: &[&str]) -> Command {
        self.command_with(login, auth, &[], args)
    }

    /// Like [`Ssh::command`], with extra client options (e.g. `-tt`,
    /// `-o SendEnv=LANG`) placed before the destination.
    pub fn command_with(
        &self,
        login: &str,
        auth: &Auth,
        options: &[&str],
        args: &[&str],
    ) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(options);
        cmd.args(["-F", "/dev/null", "-p", &self.addr.port().to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"])
            .args(["-o", "NumberOfPasswordPrompts=1"]);
        match auth {
            Auth::Password(pw) => {
                cmd.args([
                    "-o",
                    "PreferredAuthentications=password",
                    "-o",
                    "PubkeyAuthentication=no",
                ]);
                self.askpass(&mut cmd, pw);
            }
            Auth::KeyboardInteractive(pw) => {
                cmd.args(["-o", "PreferredAuthentications=keyboard-interactive"]);
                self.askpass(&mut cmd, pw);
            }
            Auth::Key(path) => {
                cmd.args([
                    "-o",
                    "PreferredAuthentications=publickey",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "BatchMode=yes",
                    "-i",
                ])
                .arg(path);
            }
        }
        cmd.arg(format!("{login}@{}", self.addr.ip()));
        cmd.args(args);
        captured(cmd)
    }

    /// An ssh_config naming this server `lab` (port, throwaway host keys, and the
    /// key `identity`), for tools that run ssh themselves: `scp -F FILE`, `sftp -F
    /// FILE`, `rsync -e "ssh -F FILE"`. A key, because `sftp -b` never asks for a
    /// password.
    pub fn config_file(&self, identity: &Path) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join("ssh_config");
        std::fs::write(
            &path,
            format!(
                "Host lab\n  HostName {}\n  Port {}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 20\n  PreferredAuthentications publickey\n  IdentitiesOnly yes\n  IdentityFile {}\n  BatchMode yes\n",
                self.addr.ip(),
                self.addr.port(),
                identity.display()
            ),
        )?;
        Ok(path)
    }

    /// `program args...` (scp, sftp, rsync), for use with [`Ssh::config_file`].
    pub fn tool(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args);
        captured(cmd)
    }

    fn askpass(&self, cmd: &mut Command, password: &str) {
        cmd.env("SSH_ASKPASS", self.dir.path().join("askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("LABSSH_TEST_PASSWORD", password)
            .env_remove("DISPLAY");
    }

    /// Runs `ssh login args...` and collects its output.
    pub async fn run(&self, login: &str, auth: &Auth, args: &[&str]) -> anyhow::Result<Output> {
        run_with_timeout(self.command(login, auth, args), None).await
    }

    /// Like [`Ssh::run`], feeding `stdin` to the remote command.
    pub async fn run_with_stdin(
        &self,
        login: &str,
        auth: &Auth,
        args: &[&str],
        stdin: &[u8],
    ) -> anyhow::Result<Output> {
        let mut cmd = self.command(login, auth, args);
        cmd.stdin(Stdio::piped());
        run_with_timeout(cmd, Some(stdin.to_vec())).await
    }

    /// The address the client connects to (the lab's proxy).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Directory for extra files a test needs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Runs a command built by this module, bounded by [`SSH_TIMEOUT`].
pub async fn output(cmd: Command) -> anyhow::Result<Output> {
    run_with_timeout(cmd, None).await
}

async fn run_with_timeout(mut cmd: Command, stdin: Option<Vec<u8>>) -> anyhow::Result<Output> {
    let mut child = cmd.spawn()?;
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        tokio::spawn(async move {
            let _ = pipe.write_all(&data).await;
            let _ = pipe.shutdown().await;
        });
    }
    match tokio::time::timeout(SSH_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => Ok(out?),
        Err(_) => anyhow::bail!("ssh did not finish within {SSH_TIMEOUT:?}"),
    }
}

/// Stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `cmd` with no stdin, its output captured, and killed if the test drops it.
fn captured(mut cmd: Command) -> Command {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.kill_on_drop(true);
    cmd
}
