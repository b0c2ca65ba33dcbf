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
    use crate::backend::kubernetes::CONTAINER as CONTAINER_NAME;
    use crate::backend::RunAs;
    use futures::SinkExt;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::Message;

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
            keep: None,
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

    /// What the exec peer answers once the client closes stdin: the JSON Status on
    /// the error channel, as the API server relays the kubelet's.
    const EXIT_3: &str = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;

    /// One `pods/exec` on loopback, as the API server speaks it (`v5.channel.k8s.io`):
    /// stdin (channel 0) echoed on stdout (1) and, upper-cased, on stderr (2); the
    /// close of stdin (255, 0) answered with `status` on the error channel (3). Returns
    /// the server's address and, once done, the request's path and query and the
    /// terminal sizes sent on the resize channel (4).
    // The handshake callback's error type is tungstenite's own HTTP response.
    #[allow(clippy::result_large_err)]
    async fn exec_peer(
        status: &'static str,
    ) -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<(String, Vec<String>)>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut uri = String::new();
            let mut ws =
                tokio_tungstenite::accept_hdr_async(stream, |req: &Request, mut resp: Response| {
                    uri = req.uri().to_string();
                    resp.headers_mut().insert(
                        "Sec-WebSocket-Protocol",
                        "v5.channel.k8s.io".parse().unwrap(),
                    );
                    Ok(resp)
                })
                .await
                .unwrap();
            let mut sizes = Vec::new();
            while let Some(Ok(message)) = ws.next().await {
                let Message::Binary(frame) = message else {
                    continue;
                };
                match frame.first() {
                    Some(0) => {
                        let mut out = vec![1u8];
                        out.extend_from_slice(&frame[1..]);
                        ws.send(Message::Binary(out.into())).await.unwrap();
                        let mut err = vec![2u8];
                        err.extend(frame[1..].to_ascii_uppercase());
                        ws.send(Message::Binary(err.into())).await.unwrap();
                    }
                    Some(4) => {
                        // Told back on stdout too, so the client can wait for it.
                        let size = String::from_utf8_lossy(&frame[1..]).into_owned();
                        let mut out = vec![1u8];
                        out.extend_from_slice(format!("size {size}\n").as_bytes());
                        ws.send(Message::Binary(out.into())).await.unwrap();
                        sizes.push(size);
                    }
                    Some(255) => {
                        let mut out = vec![3u8];
                        out.extend_from_slice(status.as_bytes());
                        ws.send(Message::Binary(out.into())).await.unwrap();
                        let _ = ws.close(None).await;
                        break;
                    }
                    _ => {}
                }
            }
            (uri, sizes)
        });
        (addr, task)
    }

    /// Everything a process printed, until its output ends.
    async fn drain(process: &mut Process) -> (Vec<u8>, Vec<u8>) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ends = async {
            while let Some(chunk) = process.output.next().await {
                match chunk {
                    Output::Stdout(b) => out.extend_from_slice(&b),
                    Output::Stderr(b) => err.extend_from_slice(&b),
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), ends)
            .await
            .expect("the output ended");
        (out, err)
    }

    #[tokio::test]
    async fn a_process_through_the_exec_websocket_gets_stdin_output_and_its_exit_code() {
        let (addr, peer) = exec_peer(EXIT_3).await;
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let exec = KubeExec { client };
        let mut process = exec
            .exec(
                "students",
                "lab-alice.plain",
                CONTAINER_NAME,
                spec(Some("/home/alice")),
            )
            .await
            .expect("exec started");
        assert_eq!(process.path, SpawnPath::Exec);
        process.stdin.write_all(b"hello\n").await.unwrap();
        // EOF: the v5 close of stdin, after which the peer reports the exit.
        process.stdin.shutdown().await.unwrap();
        let (out, err) = drain(&mut process).await;
        assert_eq!(out, b"hello\n");
        assert_eq!(err, b"HELLO\n");
        assert_eq!(process.control.wait().await, Ok(ExitStatus::Code(3)));
        // Waiting again gives the same.
        assert_eq!(process.control.wait().await, Ok(ExitStatus::Code(3)));
        let err = process.control.signal("INT").await.unwrap_err();
        assert!(err.to_string().contains("pods/exec"), "{err}");
        let (uri, _) = peer.await.unwrap();
        assert!(
            uri.starts_with("/api/v1/namespaces/students/pods/lab-alice.plain/exec?"),
            "{uri}"
        );
        for part in [
            "container=student",
            "stdin=true",
            "stdout=true",
            "stderr=true",
            "command=env",
            "command=-i",
            "command=%2Fhome%2Falice",
            "command=ls",
        ] {
            assert!(uri.contains(part), "{part} not in {uri}");
        }
    }

    #[tokio::test]
    async fn an_api_server_that_is_not_there_is_a_spawn_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let exec = KubeExec {
            client: kube::Client::try_from(config).unwrap(),
        };
        let err = exec
            .exec("students", "lab-alice.plain", CONTAINER_NAME, spec(None))
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, BackendError::SpawnFailed(_)), "{err:?}");
        assert!(err.to_string().contains("lab-alice.plain"), "{err}");
    }

    #[tokio::test]
    async fn a_terminal_through_exec_gets_its_size_and_resizes() {
        let (addr, peer) = exec_peer(r#"{"metadata":{},"status":"Success"}"#).await;
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let exec = KubeExec {
            client: kube::Client::try_from(config).unwrap(),
        };
        let mut with_pty = spec(None);
        with_pty.pty = Some(crate::backend::PtySpec {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
        });
        let mut process = exec
            .exec("students", "lab-alice.plain", CONTAINER_NAME, with_pty)
            .await
            .expect("exec started");
        process.control.resize(120, 40).await.unwrap();
        // Both sizes reached the peer (it says so on stdout) before stdin closes.
        let mut seen = Vec::new();
        while seen.iter().filter(|&&b| b == b'\n').count() < 2 {
            let chunk =
                tokio::time::timeout(std::time::Duration::from_secs(20), process.output.next())
                    .await
                    .expect("output")
                    .expect("not ended");
            let Output::Stdout(bytes) = chunk else {
                panic!("with a terminal everything is stdout")
            };
            seen.extend_from_slice(&bytes);
        }
        assert_eq!(
            String::from_utf8_lossy(&seen),
            "size {\"Width\":80,\"Height\":24}\nsize {\"Width\":120,\"Height\":40}\n"
        );
        process.stdin.shutdown().await.unwrap();
        let (rest, err) = drain(&mut process).await;
        assert!(rest.is_empty() && err.is_empty());
        assert_eq!(process.control.wait().await, Ok(ExitStatus::Code(0)));
        let (uri, sizes) = peer.await.unwrap();
        assert!(uri.contains("tty=true"), "{uri}");
        assert_eq!(
            sizes,
            [
                r#"{"Width":80,"Height":24}"#,
                r#"{"Width":120,"Height":40}"#
            ]
        );
    }
}
