//! A gate in front of the real Docker socket: everything is forwarded, but each
//! `POST /…/containers/{id}/start` is held until the test lets it through, so a
//! test decides when containers start instead of timing them.
//!
//! Only the client→dockerd direction is parsed (request line, headers, a
//! Content-Length or chunked body); after an `Upgrade` (a hijacked exec or attach)
//! both directions are copied raw.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Headers longer than this are not Docker's.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Default)]
struct Counts {
    /// Start requests waiting at the gate now.
    held: AtomicUsize,
    /// Start requests let through so far.
    passed: AtomicUsize,
}

/// The gate; stops accepting when dropped.
pub struct DockerGate {
    socket: PathBuf,
    counts: Arc<Counts>,
    releases: Arc<Semaphore>,
    accept: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl DockerGate {
    /// A gate in front of the Docker socket at `real`, listening on a new socket.
    pub async fn start(real: &Path) -> anyhow::Result<DockerGate> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket)?;
        let counts = Arc::new(Counts::default());
        let releases = Arc::new(Semaphore::new(0));
        let real = real.to_owned();
        let accept = {
            let (counts, releases) = (counts.clone(), releases.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (counts, releases, real) = (counts.clone(), releases.clone(), real.clone());
                    tokio::spawn(async move {
                        if let Ok(dockerd) = UnixStream::connect(&real).await {
                            let _ = relay(client, dockerd, &counts, &releases).await;
                        }
                    });
                }
            })
        };
        Ok(DockerGate {
            socket,
            counts,
            releases,
            accept,
            _dir: dir,
        })
    }

    /// The gate's socket, for the agent's `docker_socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Start requests held now.
    pub fn held(&self) -> usize {
        self.counts.held.load(Ordering::SeqCst)
    }

    /// Start requests let through so far.
    pub fn passed(&self) -> usize {
        self.counts.passed.load(Ordering::SeqCst)
    }

    /// Lets `n` more start requests through (held ones first, then later ones).
    pub fn release(&self, n: usize) {
        self.releases.add_permits(n);
    }

    /// Lets every start request through from now on.
    pub fn open(&self) {
        self.releases.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    /// Waits until `n` start requests are held; false after `timeout`.
    pub async fn wait_held(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.held() != n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

impl Drop for DockerGate {
    fn drop(&mut self) {
        self.accept.abort();
        self.open();
    }
}

/// Forwards one client connection, holding its container starts at the gate.
async fn relay(
    client: UnixStream,
    dockerd: UnixStream,
    counts: &Counts,
    releases: &Semaphore,
) -> std::io::Result<()> {
    let (client_read, mut client_write) = client.into_split();
    let (mut dockerd_read, mut dockerd_write) = dockerd.into_split();
    let answers = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut dockerd_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut requests = BufReader::new(client_read);
    let result = loop {
        let Some(head) = read_head(&mut requests).await? else {
            break Ok(());
        };
        let request = Head::parse(&head);
        if request.is_start() {
            counts.held.fetch_add(1, Ordering::SeqCst);
            let permit = releases.acquire().await;
            counts.held.fetch_sub(1, Ordering::SeqCst);
            counts.passed.fetch_add(1, Ordering::SeqCst);
            if let Ok(permit) = permit {
                permit.forget();
            }
        }
        dockerd_write.write_all(&head).await?;
        copy_body(&mut requests, &mut dockerd_write, &request).await?;
        if request.upgrade {
            // Hijacked: raw bytes from now on.
            tokio::io::copy(&mut requests, &mut dockerd_write).await?;
            break Ok(());
        }
    };
    let _ = dockerd_write.shutdown().await;
    let _ = answers.await;
    result
}

/// What the gate needs of a request's head.
#[derive(Debug, Default, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
    content_length: u64,
    chunked: bool,
    upgrade: bool,
}

impl Head {
    fn parse(head: &[u8]) -> Head {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let mut parsed = Head {
            method: first.next().unwrap_or_default().to_owned(),
            path: first.next().unwrap_or_default().to_owned(),
            ..Head::default()
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => parsed.content_length = value.parse().unwrap_or(0),
                "transfer-encoding" => {
                    parsed.chunked = value.to_ascii_lowercase().contains("chunked")
                }
                "upgrade" => parsed.upgrade = true,
                _ => {}
            }
        }
        parsed
    }

    /// `POST [/vX.Y]/containers/{id}/start[?…]`.
    fn is_start(&self) -> bool {
        let path = self.path.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let parts = match parts.first() {
            Some(v) if v.starts_with('v') && v[1..].contains('.') => &parts[1..],
            _ => &parts[..],
        };
        self.method == "POST" && parts.len() == 3 && parts[0] == "containers" && parts[2] == "start"
    }
}

/// The next request's head, through its blank line; `None` at a clean end.
async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return match head.is_empty() {
                true => Ok(None),
                false => Err(std::io::ErrorKind::UnexpectedEof.into()),
            };
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            if head == b"\r\n" {
                head.clear();
                continue;
            }
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// Copies the request's body as its head describes it.
async fn copy_body<R, W>(r: &mut R, w: &mut W, head: &Head) -> std::io::Result<()>
where
    R: AsyncBufReadExt + AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if !head.chunked {
        let copied = tokio::io::copy(&mut r.take(head.content_length), w).await?;
        if copied != head.content_length {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        return Ok(());
    }
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).await?;
        w.write_all(&line).await?;
        let size = String::from_utf8_lossy(&line);
        let size = size.trim().split(';').next().unwrap_or_default();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        if size == 0 {
            // Trailers, through the blank line.
            loop {
                let mut trailer = Vec::new();
                if r.read_until(b'\n', &mut trailer).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                w.write_all(&trailer).await?;
                if trailer == b"\r\n" {
                    return Ok(());
                }
            }
        }
        // The chunk and its CRLF.
        let copied = tokio::io::copy(&mut r.take(size + 2), w).await?;
        if copied != size + 2 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_container_starts_are_held() {
        let head = |text: &str| Head::parse(text.as_bytes());
        for start in [
            "POST /v1.47/containers/abc/start HTTP/1.1\r\nHost: d\r\n\r\n",
            "POST /containers/lt1-alice.e1/start?detachKeys=x HTTP/1.1\r\n\r\n",
        ] {
            assert!(head(start).is_start(), "{start}");
        }
        for other in [
            "POST /v1.47/containers/create?name=x HTTP/1.1\r\n\r\n",
            "POST /v1.47/exec/abc/start HTTP/1.1\r\nUpgrade: tcp\r\n\r\n",
            "GET /v1.47/containers/abc/json HTTP/1.1\r\n\r\n",
            "POST /v1.47/containers/abc/unpause HTTP/1.1\r\n\r\n",
        ] {
            assert!(!head(other).is_start(), "{other}");
        }
        let h = head("POST /x HTTP/1.1\r\nContent-Length: 12\r\nUpgrade: tcp\r\n\r\n");
        assert_eq!((h.content_length, h.upgrade, h.chunked), (12, true, false));
        let h = head("PUT /x HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n");
        assert!(h.chunked);
    }

    #[tokio::test]
    async fn bodies_are_forwarded_whole_content_length_or_chunked() {
        let text = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPUT /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
        let mut r = BufReader::new(&text[..]);
        let mut out = Vec::new();
        let mut paths = Vec::new();
        while let Some(head) = read_head(&mut r).await.unwrap() {
            let parsed = Head::parse(&head);
            paths.push(parsed.path.clone());
            out.extend_from_slice(&head);
            copy_body(&mut r, &mut out, &parsed).await.unwrap();
        }
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert_eq!(out, text);
    }
}
