//! The student's home directory made theirs from this host, without Docker's archive
//! API: a home volume of Docker's plain local driver is a directory of this host
//! (the agent runs beside the engine, as its helper directory and entering containers
//! already need), so its owner and mode are set there, before the container exists.
//!
//! The directory is opened without following a symlink (`O_NOFOLLOW | O_DIRECTORY`)
//! and changed through the descriptor. Where that cannot work (another volume driver,
//! a local volume with mount options, whose directory is filled only when mounted; an
//! engine remapping user namespaces, whose ids are not the container's; an agent that
//! is not root, or whose container does not see Docker's directory) the home is set up
//! through the archive API, as before.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use bollard::models::Volume;

use super::errors::docker_message;
use super::DockerBackend;

/// Docker's own volume driver.
const LOCAL_DRIVER: &str = "local";
/// How Docker names user-namespace remapping among its security options.
const USERNS_OPTION: &str = "name=userns";

impl DockerBackend {
    /// Sets the home `volume` (the student's home directory) to uid:gid and `mode` from
    /// this host; false when it cannot (see the module's comment) and the caller must.
    pub(super) async fn home_from_host(&self, volume: &Volume, ids: (u32, u32), mode: u32) -> bool {
        if volume.driver != LOCAL_DRIVER
            || !volume.options.is_empty()
            || !Path::new(&volume.mountpoint).is_absolute()
            || !self.engine_ids_are_ours().await
        {
            return false;
        }
        match set_owner_and_mode(Path::new(&volume.mountpoint), ids, mode) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(volume = %volume.name, dir = %volume.mountpoint, error = %e, "cannot set the home up from this host; through Docker instead");
                false
            }
        }
    }

    /// Whether the engine's containers use this host's user ids (no user-namespace
    /// remapping); asked once.
    async fn engine_ids_are_ours(&self) -> bool {
        *self
            .host_ids
            .get_or_init(|| async {
                match self.docker.info().await {
                    Ok(info) => !info
                        .security_options
                        .unwrap_or_default()
                        .iter()
                        .any(|o| o.split(',').any(|part| part == USERNS_OPTION)),
                    Err(e) => {
                        tracing::warn!(error = %docker_message(&e), "cannot ask Docker whether it remaps user ids; homes are set up through Docker");
                        false
                    }
                }
            })
            .await
    }
}

/// Owner and mode of the directory `dir` (not a symlink to one).
fn set_owner_and_mode(dir: &Path, (uid, gid): (u32, u32), mode: u32) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_directory_gets_its_owner_and_mode_and_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("home");
        std::fs::create_dir(&dir).unwrap();
        let me = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        set_owner_and_mode(&dir, me, 0o700).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (me.0, me.1, 0o700)
        );
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(set_owner_and_mode(&link, me, 0o755).is_err());
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
    }
}
