//! Opening a container's files from the host without ever leaving its root: every
//! symlink and `..` resolved inside it (`openat2(RESOLVE_IN_ROOT)`, or the same walk
//! done one component at a time on kernels without it), or no symlink followed at
//! all where the agent expects only what Docker made.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Files read from a container (hosts, resolv.conf) are small; more is ignored.
pub(crate) const MAX_FILE: u64 = 1 << 20;
/// Symlinks followed in one path, as the kernel allows.
const MAX_LINKS: usize = 40;
/// How often openat2 is retried when a rename raced with the lookup.
const OPENAT2_RETRIES: usize = 8;

/// An `O_PATH` descriptor of `path` (absolute) beneath `root` with no symlink followed:
/// one on the way is `ELOOP`, one at the end is opened as itself (the caller sees a
/// symlink, not what it points to). For paths whose every directory the agent expects
/// Docker to have made, so that nothing a student made can redirect it.
pub fn open_no_symlinks(root: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let relative = path.trim_start_matches('/');
    if !path.starts_with('/') || relative.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an absolute path to a file",
        ));
    }
    let c = c_path(relative.as_bytes())?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    match openat2(root, &c, &how) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
            walk_no_symlinks(root, relative.as_bytes())
        }
        other => other,
    }
}

/// [`open_no_symlinks`] without openat2: one component at a time, each opened with
/// `O_NOFOLLOW`, a symlink refused unless it is the last; `..` is refused as well.
fn walk_no_symlinks(root: &OwnedFd, relative: &[u8]) -> io::Result<OwnedFd> {
    let mut current: Option<OwnedFd> = None;
    let mut parts = relative
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".");
    let mut next = parts.next();
    while let Some(name) = next {
        if name == b".." {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        let fd = open_component(current.as_ref().unwrap_or(root), name)?;
        next = parts.next();
        // As openat2 with O_PATH | O_NOFOLLOW: a symlink at the end is opened as itself.
        match file_type(&fd)? {
            libc::S_IFLNK if next.is_some() => {
                return Err(io::Error::from_raw_os_error(libc::ELOOP))
            }
            libc::S_IFDIR => {}
            _ if next.is_some() => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            _ => {}
        }
        current = Some(fd);
    }
    current.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
}

/// The `S_IFMT` bits of what `fd` refers to.
pub fn file_type(fd: &OwnedFd) -> io::Result<libc::mode_t> {
    Ok(fstat(fd)?.st_mode & libc::S_IFMT)
}

/// `openat(dir or AT_FDCWD, path, flags | O_CLOEXEC)`.
pub fn open_at(dir: Option<&OwnedFd>, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = c_path(path.as_bytes())?;
    let dir = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: a valid directory descriptor (or AT_FDCWD) and a NUL-terminated path.
    let fd = unsafe { libc::openat(dir, path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

/// `struct open_how` of linux/openat2.h (libc's cannot be built outside libc).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// An `O_PATH` descriptor of `path` (absolute, inside the container whose root is
/// `root`), every symlink and `..` resolved inside that root.
fn open_in_root(root: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    if !path.starts_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an absolute path",
        ));
    }
    match openat2_in_root(root, path) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
            // No openat2 (or a seccomp filter refusing it): the same, step by step.
            walk_in_root(root, path.as_bytes())
        }
        other => other,
    }
}

fn openat2_in_root(root: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let relative = path.trim_start_matches('/');
    let c = c_path(if relative.is_empty() {
        b"."
    } else {
        relative.as_bytes()
    })?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    openat2(root, &c, &how)
}

/// `openat2(root, path, how)`, retried when a rename raced with the lookup.
fn openat2(root: &OwnedFd, c: &CString, how: &OpenHow) -> io::Result<OwnedFd> {
    for _ in 0..OPENAT2_RETRIES {
        // SAFETY: openat2 with a valid directory descriptor, a NUL-terminated path and
        // an open_how of the size given.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel returned a new descriptor we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// [`open_in_root`] without openat2: one component at a time with `O_NOFOLLOW`,
/// symlinks read and resolved here (absolute ones from `root`), `..` taken from the
/// directories already walked and never above `root`.
fn walk_in_root(root: &OwnedFd, path: &[u8]) -> io::Result<OwnedFd> {
    // Components still to walk, the next one last.
    let mut pending: Vec<Vec<u8>> = components(path);
    // The directories walked below root; the current one is the last.
    let mut dirs: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        match &name[..] {
            b"." => continue,
            b".." => {
                dirs.pop();
                continue;
            }
            _ => {}
        }
        let fd = open_component(dirs.last().unwrap_or(root), &name)?;
        let mode = fstat(&fd)?.st_mode & libc::S_IFMT;
        if mode == libc::S_IFLNK {
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = read_link(&fd)?;
            if target.first() == Some(&b'/') {
                dirs.clear();
            }
            pending.extend(components(&target));
        } else if mode == libc::S_IFDIR {
            dirs.push(fd);
        } else if pending.is_empty() {
            return Ok(fd);
        } else {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
    }
    match dirs.pop() {
        Some(dir) => Ok(dir),
        None => root.try_clone(),
    }
}

/// One path component beneath `parent`, as itself (`O_PATH | O_NOFOLLOW`).
fn open_component(parent: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let c = c_path(name)?;
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The non-empty components of a path, last first (so `pop` yields them in order).
fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

pub(crate) fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// The target of the symlink `fd` (an `O_PATH | O_NOFOLLOW` descriptor) refers to.
fn read_link(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: an empty path reads the link `fd` itself; buf is valid for its length.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Whether `path` is, inside the root, a regular file with an execute bit.
pub(crate) fn is_executable(root: &OwnedFd, path: &str) -> bool {
    match open_in_root(root, path).and_then(|fd| fstat(&fd)) {
        Ok(st) => st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0,
        Err(e) => {
            tracing::debug!(path, error = %e, "not an executable in the container");
            false
        }
    }
}

/// A small regular file of the container as text. Anything else (a FIFO, a device)
/// is refused before it is opened for reading, so it cannot block or stream forever.
pub(crate) fn read_file(root: &OwnedFd, path: &str) -> io::Result<String> {
    let (reopened, _) = open_regular(&open_in_root(root, path)?)?;
    read_limited(reopened, MAX_FILE)
}

/// The regular file an O_PATH descriptor names, opened for reading, and its status;
/// anything else (a FIFO, a device) is refused before it is opened, so it cannot block
/// or stream forever.
pub(crate) fn open_regular(fd: &OwnedFd) -> io::Result<(OwnedFd, libc::stat)> {
    let st = fstat(fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    // Reopening the O_PATH descriptor opens that very inode, whatever the path now is.
    let reopened = open_at(
        None,
        &format!("/proc/self/fd/{}", fd.as_raw_fd()),
        libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK,
    )?;
    Ok((reopened, st))
}

pub(crate) fn read_limited(fd: OwnedFd, limit: u64) -> io::Result<String> {
    let mut bytes = Vec::new();
    File::from(fd).take(limit).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A little container root: /bin/busybox (executable), /bin/sh → /bin/busybox
    /// (absolute), /usr/bin/env → ../../bin/busybox, /etc/hosts, /notes (not
    /// executable), /escape → /etc/host-secret (absolute: must stay inside),
    /// /up → ../../../../../outside (relative: must stay inside), /loop → /loop.
    fn fake_root() -> (tempfile::TempDir, OwnedFd) {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        for dir in ["bin", "usr/bin", "etc"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("bin/busybox"), b"#!").unwrap();
        std::fs::set_permissions(
            root.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("/bin/busybox", root.join("bin/sh")).unwrap();
        symlink("../../bin/busybox", root.join("usr/bin/env")).unwrap();
        std::fs::write(root.join("etc/hosts"), b"10.0.0.2 box\n").unwrap();
        std::fs::write(root.join("notes"), b"x").unwrap();
        // Files beside the root that the links would reach if they escaped.
        std::fs::write(outer.path().join("outside"), b"escaped").unwrap();
        symlink(outer.path().join("outside"), root.join("escape")).unwrap();
        symlink("../../../../../../outside", root.join("up")).unwrap();
        symlink("/loop", root.join("loop")).unwrap();
        let fd = open_at(
            None,
            root.to_str().unwrap(),
            libc::O_PATH | libc::O_DIRECTORY,
        )
        .unwrap();
        (outer, fd)
    }

    /// What every way of opening says of a path that is not there, and of one that
    /// goes through a file as if it were a directory.
    fn missing_and_not_a_directory<T: std::fmt::Debug>(kind: &impl Fn(&str) -> io::Result<T>) {
        assert_eq!(
            kind("/missing").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind("/notes/x").unwrap_err().raw_os_error(),
            Some(libc::ENOTDIR)
        );
    }

    /// Both ways of opening must agree on every case.
    fn check(open: impl Fn(&OwnedFd, &str) -> io::Result<OwnedFd>) {
        let (_dir, root) = fake_root();
        let kind = |path: &str| {
            open(&root, path)
                .and_then(|fd| fstat(&fd))
                .map(|st| (st.st_mode & libc::S_IFMT, st.st_mode & 0o111 != 0))
        };
        assert_eq!(kind("/bin/sh").unwrap(), (libc::S_IFREG, true));
        assert_eq!(kind("/usr/bin/env").unwrap(), (libc::S_IFREG, true));
        assert_eq!(kind("/bin/../bin/./sh").unwrap(), (libc::S_IFREG, true));
        assert_eq!(kind("/notes").unwrap(), (libc::S_IFREG, false));
        assert_eq!(kind("/bin").unwrap().0, libc::S_IFDIR);
        assert_eq!(kind("/").unwrap().0, libc::S_IFDIR);
        assert_eq!(kind("/../../bin/sh").unwrap(), (libc::S_IFREG, true));
        // Links that would leave the root resolve inside it, where nothing is.
        assert_eq!(kind("/escape").unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(kind("/up").unwrap_err().kind(), io::ErrorKind::NotFound);
        missing_and_not_a_directory(&kind);
        assert_eq!(kind("/loop").unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(read_file(&root, "/etc/hosts").unwrap(), "10.0.0.2 box\n");
    }

    #[test]
    fn openat2_stays_inside_the_root() {
        check(openat2_in_root);
    }

    #[test]
    fn the_fallback_walk_stays_inside_the_root() {
        check(|root, path| walk_in_root(root, path.as_bytes()));
    }

    #[test]
    fn no_symlink_is_followed_either_way() {
        let (dir, root) = fake_root();
        symlink("usr", dir.path().join("root/linkdir")).unwrap();
        for open in [
            |root: &OwnedFd, path: &str| open_no_symlinks(root, path),
            |root: &OwnedFd, path: &str| {
                walk_no_symlinks(root, path.trim_start_matches('/').as_bytes())
            },
        ] {
            let kind = |path: &str| open(&root, path).and_then(|fd| file_type(&fd));
            assert_eq!(kind("/bin/busybox").unwrap(), libc::S_IFREG);
            assert_eq!(kind("/etc").unwrap(), libc::S_IFDIR);
            // Symlinks at the end are themselves, wherever they point.
            for link in ["/bin/sh", "/usr/bin/env", "/escape", "/up", "/loop"] {
                assert_eq!(kind(link).unwrap(), libc::S_IFLNK, "{link}");
            }
            // A symlinked directory on the way is refused.
            assert_eq!(
                kind("/linkdir/bin/env").unwrap_err().raw_os_error(),
                Some(libc::ELOOP)
            );
            missing_and_not_a_directory(&kind);
        }
        assert!(
            open_no_symlinks(&root, "bin/sh").is_err(),
            "relative paths are refused"
        );
    }

    #[test]
    fn executables_and_files() {
        let (_dir, root) = fake_root();
        assert!(is_executable(&root, "/bin/sh"));
        assert!(!is_executable(&root, "/notes"));
        assert!(!is_executable(&root, "/bin"));
        assert!(!is_executable(&root, "/missing"));
        assert!(
            !is_executable(&root, "bin/sh"),
            "relative paths are refused"
        );
        assert!(read_file(&root, "/bin").is_err());
    }

    #[test]
    fn fifos_are_not_read() {
        let (dir, root) = fake_root();
        let fifo = dir.path().join("root/etc/resolv.conf");
        let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        // Opening a FIFO for reading would block until a writer came.
        let err = read_file(&root, "/etc/resolv.conf").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
