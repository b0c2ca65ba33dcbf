//! Processes started with Docker exec (the fallback path; an in-container helper is the
//! fast one).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::exec::ResizeExecOptions;
use bollard::models::{ExecConfig, ExecInspectResponse};
use bollard::Docker;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

use super::errors::docker_message;
use super::hijack;
use crate::backend::{
    BackendError, ExitStatus, Process, ProcessControl, RunAs, SpawnPath, SpawnSpec, Stdin,
    StdinSink,
};
use crate::signal;

/// First pause between exec inspections while waiting for an exit; doubles up to the cap.
const WAIT_POLL_START: Duration = Duration::from_millis(5);
/// Longest pause between exec inspections; bounds how late an exit is noticed.
const WAIT_POLL_MAX: Duration = Duration::from_millis(200);
/// How long a signal waits for a just-spawned process to start.
const START_WAIT: Duration = Duration::from_secs(5);
/// Tries at the initial terminal size; Docker may not have started the process yet.
const INITIAL_RESIZE_TRIES: u32 = 10;

/// Starts `spec` in `container` and attaches to it.
pub async fn spawn(
    docker: &Docker,
    socket: &str,
    container: &str,
    spec: SpawnSpec,
) -> Result<Process, BackendError> {
    let tty = spec.pty.is_some();
    // A client may ask for a terminal without giving its size; leave Docker's default.
    let console_size = spec
        .pty
        .as_ref()
        .filter(|p| p.cols > 0 && p.rows > 0)
        .map(|p| (p.rows, p.cols));
    let user = match spec.run_as {
        RunAs::Root => "0:0".to_owned(),
        RunAs::Ids { uid, gid } => format!("{uid}:{gid}"),
    };
    let config = ExecConfig {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(tty),
        console_size: console_size.map(|(r, c)| vec![r as usize, c as usize]),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        cmd: Some(spec.argv.clone()),
        user: Some(user.clone()),
        working_dir: spec.workdir.clone(),
        ..Default::default()
    };
    let exec = docker
        .create_exec(container, config)
        .await
        .map_err(|e| BackendError::SpawnFailed(docker_message(&e)))?;
    let version = docker.client_version().to_string();
    let hijacked = hijack::start_exec(socket, &version, &exec.id, tty, console_size).await?;
    // With a terminal EOF is ignored, as sshd and the helper do: closing Docker's stdin
    // stream of a tty exec can end the process before its output is read. The stream
    // stays open as long as the process's control does.
    let (stdin, tty_stdin) = if tty {
        let shared = Arc::new(tokio::sync::Mutex::new(hijacked.stdin));
        (Stdin::new(TtyStdin(shared.clone())), Some(shared))
    } else {
        (Stdin::from_writer(hijacked.stdin), None)
    };
    let control = Arc::new(DockerProcess {
        docker: docker.clone(),
        exec_id: exec.id,
        container: container.to_owned(),
        user,
        signalled: Mutex::new(Vec::new()),
        _tty_stdin: tty_stdin,
    });
    if let Some((rows, cols)) = console_size {
        control.initial_resize(cols, rows).await;
    }
    Ok(Process {
        stdin,
        output: hijacked.output,
        control,
        path: SpawnPath::Exec,
    })
}

/// Stdin of a tty exec: written through, never shut.
struct TtyStdin(Arc<tokio::sync::Mutex<OwnedWriteHalf>>);

#[async_trait]
impl StdinSink for TtyStdin {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        self.0.lock().await.write_all(&data).await
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Control handle of one exec.
struct DockerProcess {
    /// Client for resize and inspect calls.
    docker: Docker,
    /// Docker's exec id.
    exec_id: String,
    /// The container it runs in.
    container: String,
    /// "uid:gid" it runs as.
    user: String,
    /// Signals delivered so far, to tell "killed by a signal" from an exit code of
    /// 128+n (Docker reports both the same way).
    signalled: Mutex<Vec<libc::c_int>>,
    /// A tty exec's stdin stream, kept open while the process is controlled.
    _tty_stdin: Option<Arc<tokio::sync::Mutex<OwnedWriteHalf>>>,
}

impl DockerProcess {
    async fn initial_resize(&self, cols: u16, rows: u16) {
        for attempt in 1..=INITIAL_RESIZE_TRIES {
            match self.resize(cols, rows).await {
                Ok(()) => return,
                Err(e) if attempt == INITIAL_RESIZE_TRIES => {
                    tracing::warn!(exec = %self.exec_id, error = %e, "cannot set the terminal size");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10 * attempt as u64)).await,
            }
        }
    }

    /// Docker's view of the exec, while doing `action`.
    async fn inspect(&self, action: &'static str) -> Result<ExecInspectResponse, BackendError> {
        self.docker
            .inspect_exec(&self.exec_id)
            .await
            .map_err(|e| BackendError::Runtime {
                action,
                message: docker_message(&e),
            })
    }

    /// The host pid while the process runs; `None` once it has exited. Docker answers
    /// the start request before the process exists, so a signal sent right after spawn
    /// waits (briefly) for it to start rather than getting lost.
    async fn running_pid(&self) -> Result<Option<libc::pid_t>, BackendError> {
        let deadline = tokio::time::Instant::now() + START_WAIT;
        let mut pause = WAIT_POLL_START;
        loop {
            let inspect = self.inspect("looking up the process").await?;
            match (inspect.running, inspect.pid, inspect.exit_code) {
                (Some(true), Some(pid), _) if pid > 0 => return Ok(Some(pid as libc::pid_t)),
                (_, _, Some(_)) => return Ok(None),
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(BackendError::Runtime {
                        action: "signalling the process",
                        message: "the process did not start".to_owned(),
                    })
                }
                _ => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(WAIT_POLL_MAX);
        }
    }

    fn exit_status(&self, code: i64) -> ExitStatus {
        let signalled = self.signalled.lock().unwrap_or_else(|e| e.into_inner());
        if code > 128 && signalled.contains(&((code - 128) as libc::c_int)) {
            if let Some(name) = signal::name((code - 128) as libc::c_int) {
                return ExitStatus::Signal(name.to_owned());
            }
        }
        ExitStatus::Code(code as i32)
    }
}

#[async_trait]
impl ProcessControl for DockerProcess {
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), BackendError> {
        self.docker
            .resize_exec(
                &self.exec_id,
                ResizeExecOptions {
                    width: cols,
                    height: rows,
                },
            )
            .await
            .map_err(|e| BackendError::Runtime {
                action: "resizing the terminal",
                message: docker_message(&e),
            })
    }

    async fn signal(&self, name: &str) -> Result<(), BackendError> {
        let number =
            signal::number(name).ok_or_else(|| BackendError::UnknownSignal(name.to_owned()))?;
        let Some(pid) = self.running_pid().await? else {
            return Ok(()); // already gone
        };
        self.signalled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(number);
        // Docker has no signal call for execs. An agent in the host's PID namespace
        // running as root signals the host pid from inspect directly.
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { libc::kill(pid, number) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ESRCH) => Ok(()), // exited meanwhile
            Some(libc::EPERM) => self.signal_from_inside(pid, name).await,
            _ => {
                tracing::warn!(exec = %self.exec_id, pid, signal = name, error = %err, "cannot signal process");
                Err(BackendError::Runtime {
                    action: "signalling the process",
                    message: err.to_string(),
                })
            }
        }
    }

    async fn wait(&self) -> Result<ExitStatus, BackendError> {
        let mut pause = WAIT_POLL_START;
        loop {
            let inspect = self.inspect("waiting for the process").await?;
            if inspect.running == Some(false) {
                if let Some(code) = inspect.exit_code {
                    return Ok(self.exit_status(code));
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(WAIT_POLL_MAX);
        }
    }
}

impl DockerProcess {
    /// Without the right to signal it from the host (an agent not running as root), the
    /// signal is sent from inside the container, as the process's own user.
    async fn signal_from_inside(
        &self,
        host_pid: libc::pid_t,
        name: &str,
    ) -> Result<(), BackendError> {
        let failed = |message: String| BackendError::Runtime {
            action: "signalling the process",
            message,
        };
        let pid = namespace_pid(host_pid)
            .ok_or_else(|| failed(format!("no namespace pid for host pid {host_pid}")))?;
        // `name` comes from the signal table and `pid` is a number: nothing to quote.
        let argv = vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            format!("kill -s {name} {pid}"),
        ];
        let (code, output) =
            run_to_completion(&self.docker, &self.container, &self.user, argv).await?;
        if code != 0 {
            tracing::warn!(exec = %self.exec_id, signal = name, output = %output.trim(), "cannot signal process");
            return Err(failed(output.trim().to_owned()));
        }
        Ok(())
    }
}

/// The pid a host process has inside its own PID namespace (last field of `NSpid`).
fn namespace_pid(host_pid: libc::pid_t) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Runs a short command as `user` and returns its exit code and output. Only for the
/// agent's own chores.
async fn run_to_completion(
    docker: &Docker,
    container: &str,
    user: &str,
    argv: Vec<String>,
) -> Result<(i64, String), BackendError> {
    use futures::StreamExt;
    let fail = |e: bollard::errors::Error| BackendError::Runtime {
        action: "running a helper command",
        message: docker_message(&e),
    };
    let config = ExecConfig {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(argv),
        user: Some(user.to_owned()),
        ..Default::default()
    };
    let exec = docker.create_exec(container, config).await.map_err(fail)?;
    let mut output = String::new();
    // Without a tty bollard's decoder reads the frames correctly.
    if let bollard::exec::StartExecResults::Attached {
        output: mut out, ..
    } = docker.start_exec(&exec.id, None).await.map_err(fail)?
    {
        while let Some(Ok(log)) = out.next().await {
            output.push_str(&String::from_utf8_lossy(&log.into_bytes()));
        }
    }
    let process = DockerProcess {
        docker: docker.clone(),
        exec_id: exec.id,
        container: container.to_owned(),
        user: user.to_owned(),
        signalled: Mutex::new(Vec::new()),
        _tty_stdin: None,
    };
    let code = match process.wait().await? {
        ExitStatus::Code(code) => code as i64,
        ExitStatus::Signal(_) => -1,
    };
    Ok((code, output))
}
