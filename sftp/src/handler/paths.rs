//! Paths as the client names them: relative to the home, `~` expanded, and renames
//! that never replace.

use super::*;

/// A path from the client; empty means the current directory, relative paths are
/// relative to it (the process's, which the agent sets to the student's home).
pub(super) fn path(name: &str) -> PathBuf {
    if name.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(name)
    }
}

/// The absolute, canonical form of `path`; for a path that does not exist (yet), the
/// canonical form of the longest existing parent followed by the rest, tidied.
pub(super) fn real_path(path: &Path) -> io::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    match fs::canonicalize(&absolute) {
        Ok(real) => Ok(real),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(tidy(&absolute)),
        Err(e) => Err(e),
    }
}

/// Removes `.` and resolves `..` without looking at the file system.
pub(super) fn tidy(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `~` and `~/x` to the home directory ($HOME, else the current directory), `~user`
/// from /etc/passwd; anything else unchanged.
pub(super) fn expand_tilde(path: &str) -> Reply<String> {
    let Some(rest) = path.strip_prefix('~') else {
        return Ok(path.to_owned());
    };
    let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let home = if user.is_empty() {
        match std::env::var("HOME") {
            Ok(home) if !home.is_empty() => home,
            _ => ".".to_owned(),
        }
    } else {
        Names::home_of(user)
            .ok_or_else(|| StatusCode::NoSuchFile.with_message(format!("no user {user}")))?
    };
    Ok(if tail.is_empty() {
        home
    } else {
        format!("{}/{tail}", home.trim_end_matches('/'))
    })
}

/// SSH_FXP_RENAME does not replace an existing target (OpenSSH's sftp-server neither);
/// `posix-rename@openssh.com` does.
pub(super) fn rename_no_replace(old: &Path, new: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (old_c, new_c) = (c(old)?, c(new)?);
    // SAFETY: valid C strings; AT_FDCWD resolves them like rename(2).
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            old_c.as_ptr(),
            libc::AT_FDCWD,
            new_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // File systems without RENAME_NOREPLACE: check, then rename.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if fs::symlink_metadata(new).is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(old, new)
        }
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_resolves_dots() {
        assert_eq!(tidy(Path::new("/a/./b/../c")), Path::new("/a/c"));
        assert_eq!(tidy(Path::new("/../x")), Path::new("/x"));
    }
}
