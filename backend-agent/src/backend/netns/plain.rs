//! Reading a small file a student controls (their keep-alive file) from the host:
//! no symlink followed anywhere on the path, nothing but a regular file opened for
//! reading, and no more than a cap read.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::paths::{open_no_symlinks, open_regular, read_limited};

/// A small regular file of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainFile {
    /// Its first bytes (at most the cap), as text.
    pub text: String,
    /// When it was last written.
    pub modified: SystemTime,
    /// Its owner, as the container numbers users.
    pub uid: u32,
}

/// The regular file `path` (absolute) beneath `root`, at most `limit` bytes of it.
/// A symlink anywhere, the last component included, is refused (`ELOOP` or "not a
/// regular file"), as are FIFOs and devices, before anything is opened for reading.
pub fn read_plain(root: &OwnedFd, path: &str, limit: u64) -> io::Result<PlainFile> {
    let (reopened, st) = open_regular(&open_no_symlinks(root, path)?)?;
    let modified = UNIX_EPOCH
        + Duration::from_secs(u64::try_from(st.st_mtime).unwrap_or(0))
        + Duration::from_nanos(u64::try_from(st.st_mtime_nsec).unwrap_or(0));
    Ok(PlainFile {
        text: read_limited(reopened, limit)?,
        modified,
        uid: st.st_uid,
    })
}

#[cfg(test)]
mod tests {
    use super::super::paths::open_at;
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir_fd(path: &std::path::Path) -> OwnedFd {
        open_at(
            None,
            path.to_str().unwrap(),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .unwrap()
    }

    #[test]
    fn reads_a_small_regular_file_and_nothing_else() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("home/alice")).unwrap();
        std::fs::write(root.join("home/alice/keep"), "3h\n").unwrap();
        std::fs::write(root.join("big"), "x".repeat(1000)).unwrap();
        std::fs::write(root.join("home/alice/target"), "9h").unwrap();
        symlink("/home/alice/target", root.join("home/alice/link")).unwrap();
        symlink("home", root.join("h")).unwrap();
        std::fs::write(outer.path().join("outside"), "12h").unwrap();
        symlink(outer.path().join("outside"), root.join("home/alice/out")).unwrap();
        let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid path; makes a FIFO for the test.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let fd = dir_fd(&root);

        let keep = read_plain(&fd, "/home/alice/keep", 64).unwrap();
        assert_eq!(keep.text, "3h\n");
        assert!(keep.modified > UNIX_EPOCH);
        assert_eq!(
            read_plain(&fd, "/big", 64).unwrap().text.len(),
            64,
            "capped"
        );
        for refused in [
            "/home/alice/link",
            "/home/alice/out",
            "/h/alice/keep",
            "/fifo",
        ] {
            assert!(read_plain(&fd, refused, 64).is_err(), "{refused}");
        }
        assert!(read_plain(&fd, "/home/alice/none", 64).is_err());
    }
}
