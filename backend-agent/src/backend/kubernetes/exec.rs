//! The fallback when a pod's helper cannot be used: `pods/exec` over kube's
//! websocket, behind [`PodExec`] so the rest is tested without an API server (a
//! mocked one cannot upgrade a connection).
//!
//! `pods/exec` has no environment, working directory or user of its own: the
//! process runs as the container's `securityContext` says, and the environment and
//! directory are set by `env -i` and `sh -c 'cd'` in front of the command, which every
//! image an exec-only environment uses has. Signals cannot be sent through it (the
//! protocol has no channel for them); resizes go on the resize channel.

use std::sync::Arc;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, AttachedProcess, TerminalSize};
use kube::Api;
use tokio::sync::Mutex;
use tokio_util::io::ReaderStream;

use crate::backend::{
    BackendError, ExitStatus, Output, Process, ProcessControl, SpawnPath, SpawnSpec, Stdin,
};

/// Starts processes in pods through the API server.
#[async_trait]
pub trait PodExec: Send + Sync + 'static {
    /// Runs `spec` in `container` of pod `pod` in `namespace`.
    async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        spec: SpawnSpec,
    ) -> Result<Process, BackendError>;
}

/// [`PodExec`] through kube's websocket `pods/exec`.
pub struct KubeExec {
    /// The API client.
    pub client: kube::Client,
}

#[async_trait]
impl PodExec for KubeExec {
    async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        spec: SpawnSpec,
    ) -> Result<Process, BackendError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let tty = spec.pty.is_some();
        let params = AttachParams::default()
            .container(container)
            .stdin(true)
            .stdout(true)
            .stderr(!tty)
            .tty(tty);
        let mut attached = pods
            .exec(pod, exec_command(&spec), &params)
            .await
            .map_err(|e| BackendError::SpawnFailed(format!("pods/exec in {pod}: {e}")))?;
        let missing = || BackendError::SpawnFailed("pods/exec gave no stream".to_owned());
        let stdin = attached.stdin().ok_or_else(missing)?;
        let stdout = attached.stdout().ok_or_else(missing)?;
        let mut output = ReaderStream::new(stdout)
            .filter_map(|chunk| async move { chunk.ok().map(Output::Stdout) })
            .boxed();
        if let Some(stderr) = attached.stderr() {
            let stderr = ReaderStream::new(stderr)
                .filter_map(|chunk| async move { chunk.ok().map(Output::Stderr) });
            output = futures::stream::select(output, stderr).boxed();
        }
        let resize = attached.terminal_size();
        if let (Some(pty), Some(resize)) = (&spec.pty, &resize) {
            let _ = resize.clone().try_send(TerminalSize {
                width: pty.cols,
                height: pty.rows,
            });
        }
        let status = futures::FutureExt::boxed(attached.take_status().ok_or_else(missing)?);
        Ok(Process {
            stdin: Stdin::from_writer(stdin),
            output,
            control: Arc::new(ExecControl {
                resize,
                status: Mutex::new(Some(status)),
                done: Mutex::new(None),
                _attached: std::sync::Mutex::new(attached),
            }),
            path: SpawnPath::Exec,
        })
    }
}

/// The command `pods/exec` runs for `spec`: `env -i VARS... sh -c 'cd DIR && exec
/// "$@"' sh ARGV...` (the `cd` left out without a working directory).
pub fn exec_command(spec: &SpawnSpec) -> Vec<String> {
    let mut command = vec!["env".to_owned(), "-i".to_owned()];
    command.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
    if let Some(dir) = &spec.workdir {
        command.extend([
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            r#"cd -- "$0" || exit 1; exec "$@""#.to_owned(),
            dir.clone(),
        ]);
    }
    command.extend(spec.argv.iter().cloned());
    command
}

/// How a process ended, from the status `pods/exec` reports; `None` when it reported
/// none (the connection broke).
pub fn exit_status(status: Option<&Status>) -> Result<ExitStatus, BackendError> {
    let status = status.ok_or_else(|| BackendError::Runtime {
        action: "waiting for a process started through pods/exec",
        message: "the API server closed the stream without an exit status".to_owned(),
    })?;
    if status.status.as_deref() == Some("Success") {
        return Ok(ExitStatus::Code(0));
    }
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.as_deref()?.parse::<i32>().ok());
    match code {
        Some(code) => Ok(ExitStatus::Code(code)),
        None => Err(BackendError::SpawnFailed(
            status
                .message
                .clone()
                .unwrap_or_else(|| "pods/exec failed without a message".to_owned()),
        )),
    }
}

/// The status future `pods/exec` hands out.
type StatusFuture = futures::future::BoxFuture<'static, Option<Status>>;

/// Resize and wait for a process started through `pods/exec`.
struct ExecControl {
    /// The resize channel (with a terminal).
    resize: Option<futures::channel::mpsc::Sender<TerminalSize>>,
    /// The exit status, until first waited for.
    status: Mutex<Option<StatusFuture>>,
    /// The exit status once known.
    done: Mutex<Option<Result<ExitStatus, BackendError>>>,
    /// Kept: dropping it ends the connection.
    _attached: std::sync::Mutex<AttachedProcess>,
}

#[async_trait]
impl ProcessControl for ExecControl {
    async fn resize(&self, cols: u16, rows: u16) -> Result<(), BackendError> {
        if let Some(resize) = &self.resize {
            let _ = resize
                .clone()
                .send(TerminalSize {
                    width: cols,
                    height: rows,
                })
                .await;
        }
        Ok(())
    }

    async fn signal(&self, name: &str) -> Result<(), BackendError> {
        Err(BackendError::Runtime {
            action: "signal",
            message: format!("SIG{name} cannot be sent to a process started through pods/exec"),
        })
    }

    async fn wait(&self) -> Result<ExitStatus, BackendError> {
        let mut done = self.done.lock().await;
        if let Some(done) = done.as_ref() {
            return done.clone();
        }
        let future = self.status.lock().await.take();
        let result = match future {
            Some(future) => exit_status(future.await.as_ref()),
            None => Err(BackendError::Runtime {
                action: "waiting for a process started through pods/exec",
                message: "already waited for".to_owned(),
            }),
        };
        *done = Some(result.clone());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RunAs;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    fn spec(workdir: Option<&str>) -> SpawnSpec {
        SpawnSpec {
            argv: vec!["ls".to_owned(), "-l".to_owned()],
            env: vec![("HOME".to_owned(), "/home/alice".to_owned())],
            pty: None,
            run_as: RunAs::Ids {
                uid: 1000,
                gid: 1000,
            },
            workdir: workdir.map(str::to_owned),
        }
    }

    #[test]
    fn commands_set_the_environment_and_directory() {
        assert_eq!(
            exec_command(&spec(None)),
            ["env", "-i", "HOME=/home/alice", "ls", "-l"]
        );
        let with_dir = exec_command(&spec(Some("/home/alice")));
        assert_eq!(
            &with_dir[..5],
            ["env", "-i", "HOME=/home/alice", "/bin/sh", "-c"]
        );
        assert_eq!(&with_dir[6..], ["/home/alice", "ls", "-l"]);
    }

    #[test]
    fn statuses_become_exit_codes() {
        let success = Status {
            status: Some("Success".to_owned()),
            ..Default::default()
        };
        assert_eq!(exit_status(Some(&success)), Ok(ExitStatus::Code(0)));
        let failed = Status {
            status: Some("Failure".to_owned()),
            reason: Some("NonZeroExitCode".to_owned()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".to_owned()),
                    message: Some("42".to_owned()),
                    field: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_status(Some(&failed)), Ok(ExitStatus::Code(42)));
        let refused = Status {
            status: Some("Failure".to_owned()),
            message: Some("executable file not found in $PATH".to_owned()),
            ..Default::default()
        };
        let err = exit_status(Some(&refused)).unwrap_err().to_string();
        assert!(err.contains("executable file not found"), "{err}");
        assert!(exit_status(None).is_err());
    }
}
