//! A network namespace of the test's own, holding only loopback, for a program the
//! tests drive that must not see the host's network change under it: headless
//! chromium drops every request in flight (`ERR_NETWORK_CHANGED`) whenever an address
//! comes or goes on the host, and Docker adds some for each container or network a
//! test running beside it makes. The island reaches chosen host ports at the same
//! numbers on its own 127.0.0.1, and the host reaches chosen island ports, through
//! sockets made in one namespace and used from the other. Needs root (CAP_SYS_ADMIN).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

/// The namespace, alive while this (or a process in it) is.
#[derive(Clone)]
pub struct Island {
    netns: Arc<File>,
}

fn enter(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns only changes the calling thread's network namespace.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Island {
    /// A new namespace with its loopback up.
    pub fn new() -> io::Result<Island> {
        // A thread of its own: unshare changes the calling thread only.
        std::thread::spawn(|| -> io::Result<Island> {
            // SAFETY: CLONE_NEWNET affects this thread alone, which ends below.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // A child starts in its parent thread's namespaces.
            let status = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()?;
            if !status.success() {
                return Err(io::Error::other(format!("ip link set lo up: {status}")));
            }
            let netns = File::open("/proc/thread-self/ns/net")?;
            Ok(Island {
                netns: Arc::new(netns),
            })
        })
        .join()
        .map_err(|_| io::Error::other("the namespace's thread panicked"))?
    }

    /// Runs `f` on a thread inside the namespace: the sockets it makes stay there.
    pub fn within<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let fd = self.netns.as_raw_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter(fd)?;
                    f()
                })
                .join()
                .map_err(|_| io::Error::other("a thread in the namespace panicked"))?
        })
    }

    /// `command` to run inside the namespace.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        let netns = self.netns.clone();
        // SAFETY: between fork and exec the child only makes the setns call.
        unsafe {
            command.pre_exec(move || enter(netns.as_raw_fd()));
        }
        command
    }

    /// Host's `127.0.0.1:port` reached from inside at its own `127.0.0.1:port`, for
    /// as long as the calling runtime runs.
    pub fn reach(&self, port: u16) -> io::Result<()> {
        let inside = self.within(|| std::net::TcpListener::bind(("127.0.0.1", port)))?;
        inside.set_nonblocking(true)?;
        let inside = tokio::net::TcpListener::from_std(inside)?;
        tokio::spawn(async move {
            while let Ok((mut from, _)) = inside.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut to) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut from, &mut to).await;
                    }
                });
            }
        });
        Ok(())
    }

    /// The island's `127.0.0.1:port`, reached from the host at the port answered,
    /// for as long as the calling runtime runs.
    pub async fn expose(&self, port: u16) -> io::Result<u16> {
        let outside = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let local = outside.local_addr()?.port();
        let island = self.clone();
        tokio::spawn(async move {
            while let Ok((mut from, _)) = outside.accept().await {
                let island = island.clone();
                tokio::spawn(async move {
                    let connect = tokio::task::spawn_blocking(move || {
                        island.within(|| std::net::TcpStream::connect(("127.0.0.1", port)))
                    });
                    let Ok(Ok(to)) = connect.await else { return };
                    if to.set_nonblocking(true).is_err() {
                        return;
                    }
                    if let Ok(mut to) = tokio::net::TcpStream::from_std(to) {
                        let _ = tokio::io::copy_bidirectional(&mut from, &mut to).await;
                    }
                });
            }
        });
        Ok(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Two workers: the test blocks on sockets while the bridges run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_island_sees_only_what_it_is_given() {
        let island = Island::new().expect("a namespace (run as root)");
        // Inside, only loopback.
        let out = island
            .command("ip")
            .args(["-o", "link"])
            .output()
            .await
            .unwrap();
        let links = String::from_utf8_lossy(&out.stdout);
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains(": lo:"), "{links}");

        // A host port, reached from inside; a host port not given is not.
        let host = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = host.local_addr().unwrap().port();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = other.local_addr().unwrap().port();
        island.reach(port).unwrap();
        let dialed = island
            .within(|| {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
                std::io::Write::write_all(&mut s, b"in")?;
                Ok(s)
            })
            .unwrap();
        let (mut accepted, _) = host.accept().await.unwrap();
        let mut got = [0u8; 2];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"in");
        drop(dialed);
        assert!(island
            .within(|| std::net::TcpStream::connect(("127.0.0.1", other)))
            .is_err());

        // An island port, reached from the host.
        let inside = island
            .within(|| std::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let inner = inside.local_addr().unwrap().port();
        let outer = island.expose(inner).await.unwrap();
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", outer))
            .await
            .unwrap();
        client.write_all(b"out").await.unwrap();
        let (mut served, _) = tokio::task::spawn_blocking(move || inside.accept())
            .await
            .unwrap()
            .unwrap();
        let mut got = [0u8; 3];
        std::io::Read::read_exact(&mut served, &mut got).unwrap();
        assert_eq!(&got, b"out");
    }
}
