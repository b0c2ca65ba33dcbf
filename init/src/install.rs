//! `--install DIR`: what a Kubernetes pod's init container runs to put the helper in
//! the pod.
//!
//! The init container runs the agent's image, whose `/labssh-init` and `/labssh-sftp`
//! sit side by side; this copies the running executable and the SFTP server beside it
//! into `DIR` (an emptyDir the student's container mounts read-only at `/.labssh`)
//! under the names the agent runs them by, as Docker's bind mounts name them:
//! `/.labssh/init` and `/.labssh/sftp-server`. Each copy is written to a temporary
//! file in `DIR` and renamed over the old one, so a re-run after a pod restart
//! replaces what an earlier run left, whole. It also makes `DIR/run`, where the
//! socket's own emptyDir is mounted: the runtime cannot make that mount point once
//! `DIR` is mounted read-only. No privilege is needed: the restricted Pod Security
//! level runs the init container as the student.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sys;

/// The SFTP server's file name beside the running executable, as the agent's image
/// ships it.
const SFTP_SOURCE: &str = "labssh-sftp";
/// labssh-init's name in `DIR`: the agent runs it as `/.labssh/init`.
pub const INIT_TARGET: &str = "init";
/// labssh-sftp's name in `DIR`: the agent runs it as `/.labssh/sftp-server`.
pub const SFTP_TARGET: &str = "sftp-server";
/// The mount point of the socket's directory (`/.labssh/run`).
pub const RUN_MOUNT_POINT: &str = "run";
/// Whoever the pod runs as may execute them; nobody may change them.
const MODE: u32 = 0o755;

/// Installs this executable and the labssh-sftp beside it into `dir`.
pub fn run(dir: &Path) -> Result<(), String> {
    let exe = Path::new("/proc/self/exe");
    // The name the executable was started by, to find the SFTP server beside it
    // (/proc/self/exe itself is a link to that name).
    let named =
        fs::read_link(exe).map_err(|e| format!("cannot find this executable: {}", text(&e)))?;
    let sftp = named
        .parent()
        .map_or_else(|| PathBuf::from(SFTP_SOURCE), |p| p.join(SFTP_SOURCE));
    install(exe, &sftp, dir)
}

/// Copies `init` and `sftp` into `dir` as [`INIT_TARGET`] and [`SFTP_TARGET`] and
/// makes [`RUN_MOUNT_POINT`]. Both sources are opened before anything is written, so a
/// missing SFTP server leaves `dir` as it was.
pub fn install(init: &Path, sftp: &Path, dir: &Path) -> Result<(), String> {
    let open = |path: &Path, what: &str| {
        File::open(path).map_err(|e| format!("cannot read {what} {}: {}", path.display(), text(&e)))
    };
    let init_file = open(init, "labssh-init")?;
    let sftp_file = open(sftp, "the SFTP server")?;
    let meta = fs::metadata(dir)
        .map_err(|e| format!("cannot install into {}: {}", dir.display(), text(&e)))?;
    if !meta.is_dir() {
        return Err(format!(
            "cannot install into {}: not a directory",
            dir.display()
        ));
    }
    copy_into(init_file, dir, INIT_TARGET)?;
    copy_into(sftp_file, dir, SFTP_TARGET)?;
    let run = dir.join(RUN_MOUNT_POINT);
    match fs::DirBuilder::new().mode(MODE).create(&run) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists || !run.is_dir() => Err(format!(
            "cannot make the mount point {}: {}",
            run.display(),
            text(&e)
        )),
        _ => Ok(()),
    }
}

/// Writes `source` to a new temporary file in `dir`, then renames it to `name`.
fn copy_into(mut source: File, dir: &Path, name: &str) -> Result<(), String> {
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let failed = |e: io::Error| format!("cannot install {}: {}", target.display(), text(&e));
    // A temporary file an earlier, killed run left under the same pid.
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .open(&tmp)?;
        io::copy(&mut source, &mut out)?;
        // The umask may have taken bits off the mode given at creation.
        out.set_permissions(fs::Permissions::from_mode(MODE))?;
        out.flush()?;
        out.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        failed(e)
    })
}

/// An error's text without Rust's "(os error N)".
fn text(e: &io::Error) -> String {
    e.raw_os_error()
        .map_or_else(|| e.to_string(), sys::errno_text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A fresh directory under the system's temporary one, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir()
                .join(format!("labssh-init-install-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn copies_both_and_a_rerun_replaces_them() {
        let scratch = Scratch::new("copies");
        let (init, sftp) = (scratch.0.join("labssh-init"), scratch.0.join("labssh-sftp"));
        fs::write(&init, b"init one").unwrap();
        fs::write(&sftp, b"sftp one").unwrap();
        let dir = scratch.0.join("bin");
        fs::create_dir(&dir).unwrap();
        install(&init, &sftp, &dir).unwrap();
        assert_eq!(fs::read(dir.join(INIT_TARGET)).unwrap(), b"init one");
        assert_eq!(fs::read(dir.join(SFTP_TARGET)).unwrap(), b"sftp one");
        let meta = fs::metadata(dir.join(INIT_TARGET)).unwrap();
        assert_eq!(meta.mode() & 0o7777, MODE);
        let first = meta.ino();

        fs::write(&init, b"init two").unwrap();
        install(&init, &sftp, &dir).unwrap();
        assert_eq!(fs::read(dir.join(INIT_TARGET)).unwrap(), b"init two");
        assert_ne!(
            fs::metadata(dir.join(INIT_TARGET)).unwrap().ino(),
            first,
            "replaced by rename, not rewritten in place"
        );
        let mut left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [INIT_TARGET, RUN_MOUNT_POINT, SFTP_TARGET],
            "no temporary file left"
        );
        assert!(dir.join(RUN_MOUNT_POINT).is_dir());

        // Something else where the mount point goes is an error, not a pod that
        // cannot start for reasons nobody sees.
        fs::remove_dir(dir.join(RUN_MOUNT_POINT)).unwrap();
        fs::write(dir.join(RUN_MOUNT_POINT), b"").unwrap();
        let err = install(&init, &sftp, &dir).unwrap_err();
        assert!(err.contains("mount point"), "{err}");
    }

    #[test]
    fn missing_sources_and_bad_directories_are_named() {
        let scratch = Scratch::new("errors");
        let init = scratch.0.join("labssh-init");
        fs::write(&init, b"init").unwrap();
        let dir = scratch.0.join("bin");
        fs::create_dir(&dir).unwrap();
        let err = install(&init, &scratch.0.join("labssh-sftp"), &dir).unwrap_err();
        assert!(
            err.contains("the SFTP server") && err.contains("labssh-sftp"),
            "{err}"
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "nothing written");

        let missing = scratch.0.join("nowhere");
        let err = install(&init, &init, &missing).unwrap_err();
        assert!(
            err.contains("cannot install into") && err.contains("nowhere"),
            "{err}"
        );
        let err = install(&init, &init, &init).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn an_unwritable_directory_is_an_error_not_a_partial_install() {
        let scratch = Scratch::new("readonly");
        let init = scratch.0.join("labssh-init");
        fs::write(&init, b"init").unwrap();
        let dir = scratch.0.join("bin");
        fs::create_dir(&dir).unwrap();
        // A file where the temporary one would go: stands in for a directory this
        // user cannot write (root, which runs these tests, writes anywhere).
        let tmp = dir.join(format!(".{INIT_TARGET}.{}.tmp", std::process::id()));
        fs::create_dir(&tmp).unwrap();
        fs::write(tmp.join("x"), b"").unwrap();
        let err = install(&init, &init, &dir).unwrap_err();
        assert!(
            err.contains("cannot install") && err.contains(INIT_TARGET),
            "{err}"
        );
        assert!(!dir.join(INIT_TARGET).exists());
    }
}
