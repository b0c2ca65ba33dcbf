//! What the start-queue tests share: a gate in front of the Docker socket (testkit's
//! `DockerGate`), a lab whose agent reaches Docker through it, and logins whose
//! stderr is read as it comes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use labssh_testkit::docker_gate::DockerGate;
use labssh_testkit::ssh::Auth;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{environment_toml, Lab, LabOptions};

/// Conditions are waited on this long at most.
pub const WAIT: Duration = Duration::from_secs(60);

/// A gate in front of the real Docker socket.
pub async fn gate() -> DockerGate {
    let real = labssh_agent::Config::default().docker_socket_path();
    DockerGate::start(std::path::Path::new(&real))
        .await
        .expect("docker gate")
}

/// A lab whose agent reaches Docker through `gate`, with environments e1..e3, and
/// the queue keys set by `keys`.
pub async fn lab(gate: &DockerGate, keys: fn(&mut labssh_agent::Config)) -> Lab {
    Lab::start(LabOptions {
        catalogue: ["e1", "e2", "e3"]
            .iter()
            .map(|e| environment_toml(e, ""))
            .collect(),
        docker_socket: Some(gate.socket().to_owned()),
        agent_config: Some(keys),
        ..Default::default()
    })
    .await
}

/// One `ssh` running, its stderr read line by line as it comes.
pub struct Login {
    pub child: tokio::process::Child,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Login {
    /// `login` runs `echo shell-ok`.
    pub fn start(lab: &Lab, login: &str, auth: &Auth) -> Login {
        let mut child = lab
            .ssh
            .command(login, auth, &["echo", "shell-ok"])
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Login { child, stderr }
    }

    /// The places this login was told, in order.
    pub fn places(&self) -> Vec<usize> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| place_of(l))
            .collect()
    }

    /// Its stderr so far.
    pub fn err(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until its stderr has a line satisfying `pred`.
    pub async fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.stderr.lock().unwrap().iter().any(|l| pred(l)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} line in: {}",
                self.err()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the end; (exit code, stdout).
    pub async fn finish(mut self) -> (Option<i32>, String, String) {
        let mut out = String::new();
        let mut stdout = self.child.stdout.take().unwrap();
        let read = async {
            tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out)
                .await
                .unwrap();
            self.child.wait().await.unwrap()
        };
        let status = tokio::time::timeout(WAIT, read).await.expect("ssh ends");
        // The stderr reader ends with the process.
        tokio::time::sleep(Duration::from_millis(50)).await;
        (status.code(), out, self.err())
    }
}

/// `N` from `labssh: starting your container (N ahead of you, about S s)`.
pub fn place_of(line: &str) -> Option<usize> {
    let rest = line.split("labssh: starting your container (").nth(1)?;
    rest.split(" ahead of you, about ").next()?.parse().ok()
}

/// Waits until `n` starts are held at the gate.
pub async fn wait_held(gate: &DockerGate, n: usize) {
    assert!(
        gate.wait_held(n, WAIT).await,
        "{} held, not {n}",
        gate.held()
    );
}
