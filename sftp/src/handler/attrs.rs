//! File attributes both ways: what stat says, what setstat may change, and statvfs.

use super::*;

pub(super) enum Target<'a> {
    Path(PathBuf),
    File(&'a File),
}

/// Size, then permissions, then times, then owner, as OpenSSH's sftp-server applies
/// them; the first failure is the reply.
pub(super) fn set_attributes(target: Target<'_>, attrs: &FileAttributes) -> Reply<()> {
    if let Some(size) = attrs.size {
        match &target {
            Target::File(file) => file.set_len(size),
            Target::Path(path) => OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(size)),
        }
        .map_err(status)?;
    }
    if let Some(mode) = attrs.permissions {
        let perms = fs::Permissions::from_mode(mode & 0o7777);
        match &target {
            Target::File(file) => file.set_permissions(perms),
            Target::Path(path) => fs::set_permissions(path, perms),
        }
        .map_err(status)?;
    }
    if attrs.atime.is_some() || attrs.mtime.is_some() {
        let time = |t: Option<u32>| match t {
            Some(secs) => libc::timespec {
                tv_sec: secs.into(),
                tv_nsec: 0,
            },
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
        };
        let times = [time(attrs.atime), time(attrs.mtime)];
        let rc = match &target {
            // SAFETY: an open descriptor and two timespecs.
            Target::File(file) => unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) },
            Target::Path(path) => {
                let path = CString::new(path.as_os_str().as_bytes())
                    .map_err(|_| StatusCode::BadMessage)?;
                // SAFETY: a valid C string and two timespecs.
                unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) }
            }
        };
        if rc != 0 {
            return Err(status(io::Error::last_os_error()));
        }
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        // Asking for the owner a file already has is not an error, even for users who
        // may not chown (clients send back what they read).
        let meta = match &target {
            Target::File(file) => file.metadata(),
            Target::Path(path) => fs::metadata(path),
        }
        .map_err(status)?;
        let uid = attrs.uid.filter(|&u| u != meta.uid());
        let gid = attrs.gid.filter(|&g| g != meta.gid());
        if uid.is_some() || gid.is_some() {
            match &target {
                Target::File(file) => std::os::unix::fs::fchown(file, uid, gid),
                Target::Path(path) => std::os::unix::fs::chown(path, uid, gid),
            }
            .map_err(status)?;
        }
    }
    Ok(())
}

/// What STAT and directory listings report: the whole st_mode (type and permissions),
/// size, owner and times.
pub(super) fn attributes(meta: &Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(meta.size()),
        uid: Some(meta.uid()),
        user: None,
        gid: Some(meta.gid()),
        group: None,
        permissions: Some(meta.mode()),
        atime: Some(meta.atime() as u32),
        mtime: Some(meta.mtime() as u32),
    }
}

pub(super) fn statvfs_reply(vfs: &libc::statvfs) -> Statvfs {
    // OpenSSH's flag bits, not the host's.
    const SSH_ST_RDONLY: u64 = 1;
    const SSH_ST_NOSUID: u64 = 2;
    let flag = |host: libc::c_ulong, ssh: u64| {
        if vfs.f_flag & host != 0 {
            ssh
        } else {
            0
        }
    };
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    Statvfs {
        block_size: vfs.f_bsize.into(),
        fragment_size: vfs.f_frsize.into(),
        blocks: vfs.f_blocks.into(),
        blocks_free: vfs.f_bfree.into(),
        blocks_avail: vfs.f_bavail.into(),
        inodes: vfs.f_files.into(),
        inodes_free: vfs.f_ffree.into(),
        inodes_avail: vfs.f_favail.into(),
        fs_id: vfs.f_fsid.into(),
        flags: flag(libc::ST_RDONLY, SSH_ST_RDONLY) | flag(libc::ST_NOSUID, SSH_ST_NOSUID),
        name_max: vfs.f_namemax.into(),
    }
}
