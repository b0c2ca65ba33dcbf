//! Reaching a container's helper without trusting a single path: the socket is found
//! beneath the init's root with no symlink followed, must be a socket, and its
//! listener must be that very init (SO_PEERCRED) before a byte is sent.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::net::UnixStream;

use super::{unavailable, HelperError, HelperSocket};
use crate::backend::netns;

/// Why a connection to the helper could not be made.
#[derive(Debug)]
pub(super) enum ConnectError {
    /// Nothing listens there yet: the helper of a container that just started is about
    /// to bind its socket.
    Absent(io::Error),
    /// Anything else; final for this attempt.
    Helper(HelperError),
}

impl HelperSocket {
    /// A connection to the socket at [`SOCKET_PATH`] in the container, once it is sure
    /// to be the container's init's.
    pub(super) async fn connect(&self) -> Result<UnixStream, ConnectError> {
        let file = self.socket_file()?;
        // Connecting through the descriptor reaches that very inode, whatever the path
        // names by now.
        let stream = UnixStream::connect(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::ConnectionRefused => ConnectError::Absent(e),
                _ => ConnectError::Helper(unavailable("connecting to the helper", &e)),
            })?;
        let peer = stream
            .peer_cred()
            .map_err(|e| ConnectError::Helper(unavailable("checking the helper", &e)))?
            .pid();
        if peer != Some(self.pid as i32) {
            return Err(ConnectError::Helper(HelperError::Tampered(format!(
                "the socket at {} was made by pid {}, not by the container's labssh-init (pid {})",
                self.path,
                peer.map_or("unknown".to_owned(), |p| p.to_string()),
                self.pid
            ))));
        }
        Ok(stream)
    }

    /// An `O_PATH` descriptor of the socket file, found beneath the init's root without
    /// following a single symlink.
    fn socket_file(&self) -> Result<OwnedFd, ConnectError> {
        let gone = |e: io::Error| {
            ConnectError::Helper(HelperError::Unavailable(format!(
                "the container's init (pid {}) has gone: {}",
                self.pid,
                netns::os_text(&e)
            )))
        };
        let root = netns::open_at(
            Some(&self.proc_dir),
            "root",
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .map_err(gone)?;
        let tampered =
            |why: &str| ConnectError::Helper(HelperError::Tampered(format!("{} {why}", self.path)));
        let file = match netns::open_no_symlinks(&root, &self.path) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(ConnectError::Absent(e))
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(tampered("is, or lies under, a symlink"))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(tampered("lies under something that is not a directory"))
            }
            Err(e) => return Err(ConnectError::Helper(unavailable("finding the helper", &e))),
        };
        // O_PATH | O_NOFOLLOW opens a symlink at the end of the path as itself.
        match netns::file_type(&file) {
            Ok(libc::S_IFSOCK) => Ok(file),
            Ok(libc::S_IFLNK) => Err(tampered("is, or lies under, a symlink")),
            Ok(_) => Err(tampered("is not a socket")),
            Err(e) => Err(ConnectError::Helper(unavailable("finding the helper", &e))),
        }
    }
}
