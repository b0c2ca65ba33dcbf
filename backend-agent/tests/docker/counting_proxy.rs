//! A unix socket in front of Docker's that forwards every byte both ways and records
//! each HTTP request line the agent sends ("GET /containers/NAME/json", the API
//! version taken off, the query kept), so a test can count the Docker calls a login
//! makes. It can also cut the connections that carry the events stream, and refuse
//! new ones, to take the agent's view of Docker's events away.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Docker's own socket.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// HTTP methods bollard uses.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "HEAD"];

/// What every connection task shares.
struct Seen {
    /// Every request line so far, in order.
    requests: Mutex<Vec<String>>,
    /// Cancels each connection that carried an events request.
    events: Mutex<Vec<CancellationToken>>,
    /// Whether a connection asking for events is dropped at once.
    refuse_events: AtomicBool,
    /// Woken at every request line.
    changed: Notify,
    /// While true, what Docker sends on events connections is held back.
    hold_events: tokio::sync::watch::Sender<bool>,
}

/// The running proxy; stops when dropped.
pub struct CountingProxy {
    /// The socket to point the agent's `docker_socket` at.
    pub path: PathBuf,
    seen: Arc<Seen>,
    accept: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for cut in self.seen.events.lock().unwrap().iter() {
            cut.cancel();
        }
    }
}

impl CountingProxy {
    /// Listens on a fresh socket in a temporary directory.
    pub fn start() -> CountingProxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Seen {
            requests: Mutex::default(),
            events: Mutex::default(),
            refuse_events: AtomicBool::new(false),
            changed: Notify::new(),
            hold_events: tokio::sync::watch::channel(false).0,
        });
        let accept = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    tokio::spawn(relay(client, seen.clone()));
                }
            }
        });
        CountingProxy {
            path,
            seen,
            accept,
            _dir: dir,
        }
    }

    /// How many request lines were seen so far: a mark for [`Self::since`].
    pub fn mark(&self) -> usize {
        self.seen.requests.lock().unwrap().len()
    }

    /// The request lines seen after `mark`.
    pub fn since(&self, mark: usize) -> Vec<String> {
        self.seen.requests.lock().unwrap()[mark..].to_vec()
    }

    /// The request lines after `mark`, the long-lived events requests left out.
    pub fn calls_since(&self, mark: usize) -> Vec<String> {
        self.since(mark)
            .into_iter()
            .filter(|r| !is_events(r))
            .collect()
    }

    /// Cuts every connection that carried an events request.
    pub fn cut_events(&self) {
        for cut in self.seen.events.lock().unwrap().drain(..) {
            cut.cancel();
        }
    }

    /// Whether new events requests are dropped at once (their connection closed).
    pub fn refuse_events(&self, refuse: bool) {
        self.seen.refuse_events.store(refuse, Ordering::SeqCst);
    }

    /// Holds back (`true`) or lets through what Docker sends on events connections, so
    /// the agent hears of a change only later.
    pub fn hold_events(&self, hold: bool) {
        self.seen.hold_events.send_replace(hold);
    }

    /// Waits until `count` events requests were seen after `mark`.
    pub async fn events_requests(&self, mark: usize, count: usize) {
        tokio::time::timeout(crate::support::STEP, async {
            loop {
                let changed = self.seen.changed.notified();
                if self.since(mark).iter().filter(|r| is_events(r)).count() >= count {
                    return;
                }
                changed.await;
            }
        })
        .await
        .expect("the agent asks for Docker's events")
    }
}

/// Whether a recorded request line asks for the events stream.
pub fn is_events(request: &str) -> bool {
    request.starts_with("GET /events")
}

/// Forwards one connection both ways, recording its request lines, until either side
/// closes or the connection is cut.
async fn relay(client: UnixStream, seen: Arc<Seen>) {
    let docker = match UnixStream::connect(DOCKER_SOCKET).await {
        Ok(docker) => docker,
        Err(e) => panic!("connecting to {DOCKER_SOCKET}: {e}"),
    };
    let cut = CancellationToken::new();
    let carries_events = AtomicBool::new(false);
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_docker, mut to_docker) = docker.into_split();
    let upstream = async {
        let (mut buf, mut pending) = ([0u8; 16 << 10], Vec::new());
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = pending.drain(..end + 2).collect();
                if let Some(request) = request_line(&line[..end]) {
                    if is_events(&request) {
                        carries_events.store(true, Ordering::SeqCst);
                        seen.events.lock().unwrap().push(cut.clone());
                        if seen.refuse_events.load(Ordering::SeqCst) {
                            cut.cancel();
                        }
                    }
                    seen.requests.lock().unwrap().push(request);
                    seen.changed.notify_waiters();
                }
            }
            // A body without line ends (a tar upload, say) is not kept whole.
            if pending.len() > 64 << 10 {
                pending.clear();
            }
            if cut.is_cancelled() || to_docker.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let (mut buf, mut hold) = ([0u8; 16 << 10], seen.hold_events.subscribe());
        loop {
            let n = match from_docker.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if carries_events.load(Ordering::SeqCst) && hold.wait_for(|h| !*h).await.is_err() {
                return;
            }
            if to_client.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cut.cancelled() => {}
    }
}

/// "GET /containers/x/json" for "GET /v1.47/containers/x/json HTTP/1.1".
fn request_line(line: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !METHODS.contains(&method) || !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let target = match target.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            &rest[rest.find('/').unwrap_or(rest.len())..]
        }
        _ => target,
    };
    Some(format!("{method} {target}"))
}
