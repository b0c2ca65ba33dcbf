//! Disk quotas on Docker: a size limit on the writable layer where the storage driver
//! has one, and measuring what homes and layers use where it does not.
//!
//! Docker can cap a container's writable layer (`storage_opt size`) only on some
//! storage drivers: `btrfs`, `zfs`, `devicemapper` and `windowsfilter`, and `overlay2`
//! when its backing filesystem is xfs mounted with project quotas (`prjquota`). The
//! common overlay2 on ext4 has none, and the local volume driver never limits a
//! volume's size. There the agent measures instead: the home volume's host directory
//! (its mount's `Source`) and the layer's overlay `UpperDir`, walked like `du -s` on a
//! blocking thread, one container at a time (see [`crate::limits::disk_quota`]), so the
//! cost is bounded and never on a login's path.
//!
//! The walk runs as host root over directories a student writes, so it opens every
//! directory relative to its parent with `O_NOFOLLOW` (a symlink swapped in for a
//! directory fails the open instead of leading the walk elsewhere), stays on the
//! starting filesystem, counts a hard-linked file once, holds at most
//! [`MAX_OPEN_DIRS`] directories open however deep the tree, and stops after
//! [`MAX_ENTRIES`] entries.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{LazyLock, Mutex};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::InspectContainerOptionsBuilder;
use labssh_proto::pb;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat};

use super::errors::docker_message;
use super::DockerBackend;
use crate::backend::{BackendError, DiskUsage};

/// Directories held open at once by one walk; deeper ones are walked afterwards from
/// a fresh start, so a deep tree costs re-opens, not descriptors.
const MAX_OPEN_DIRS: usize = 64;
/// Entries one walk looks at before it stops and reports what it has (a lower
/// bound); a few seconds of one core.
const MAX_ENTRIES: u64 = 5_000_000;
/// Storage drivers whose `storage_opt size` always works.
const SIZED_DRIVERS: [&str; 4] = ["btrfs", "zfs", "devicemapper", "windowsfilter"];
/// Bytes per MiB.
const MIB: u64 = 1024 * 1024;

/// Whether each Docker engine (by socket) can cap a writable layer; asked once.
static LAYER_LIMITS: LazyLock<Mutex<HashMap<String, bool>>> = LazyLock::new(Mutex::default);

impl DockerBackend {
    /// What `user`'s home and their container for `env` use, for the quotas `env`
    /// sets: `None` for a quota that is off or that the storage driver enforces.
    pub(super) async fn measure_disk(
        &self,
        user: &str,
        env: &pb::Environment,
    ) -> Result<DiskUsage, BackendError> {
        let name = super::container_spec::container_name(&self.prefix, user, &env.name);
        let inspect = self.inspect(&name).await?;
        let home = if env.home_quota_mb > 0 {
            let home_dir = crate::backend::home_dir(user);
            let source = inspect
                .mounts
                .iter()
                .flatten()
                .find(|m| {
                    m.destination.as_deref() == Some(home_dir.as_str())
                        && m.typ.as_deref() == Some("volume")
                })
                .and_then(|m| m.source.clone());
            match source {
                Some(dir) => Some(walk_blocking(dir).await?),
                None => None,
            }
        } else {
            None
        };
        let enforced = inspect
            .host_config
            .as_ref()
            .and_then(|h| h.storage_opt.as_ref())
            .is_some_and(|o| o.contains_key("size"));
        let layer = if env.layer_quota_mb > 0 && !enforced {
            let upper = inspect
                .graph_driver
                .as_ref()
                .and_then(|g| g.data.get("UpperDir"))
                .cloned();
            match upper {
                Some(dir) => Some(walk_blocking(dir).await?),
                // Other drivers: Docker's own figure (it walks the layer itself).
                None => self.size_rw(&name).await?,
            }
        } else {
            None
        };
        Ok(DiskUsage {
            home_bytes: home,
            layer_bytes: layer,
        })
    }

    /// `body` with the environment's layer quota as `storage_opt size`, where this
    /// engine's storage driver supports one.
    pub(super) async fn with_layer_quota(
        &self,
        mut body: ContainerCreateBody,
        env: &pb::Environment,
    ) -> ContainerCreateBody {
        if env.layer_quota_mb == 0 || !self.layer_limits_supported().await {
            return body;
        }
        body.host_config
            .get_or_insert_with(Default::default)
            .storage_opt
            .get_or_insert_with(Default::default)
            .insert("size".to_owned(), format!("{}M", env.layer_quota_mb));
        body
    }

    /// Whether this engine can cap a container's writable layer; asked once.
    async fn layer_limits_supported(&self) -> bool {
        if let Some(&known) = LAYER_LIMITS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.socket)
        {
            return known;
        }
        let supported = match self.docker.info().await {
            Ok(info) => {
                let driver = info.driver.unwrap_or_default();
                let backing = info
                    .driver_status
                    .iter()
                    .flatten()
                    .find(|kv| kv.first().map(String::as_str) == Some("Backing Filesystem"))
                    .and_then(|kv| kv.get(1).cloned())
                    .unwrap_or_default();
                let root = info.docker_root_dir.unwrap_or_default();
                let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                sizes_layers(&driver, &backing, super_options(&mountinfo, &root))
            }
            Err(e) => {
                tracing::warn!(error = %docker_message(&e), "cannot ask Docker for its storage driver; layer quotas are measured");
                false
            }
        };
        tracing::info!(
            supported,
            "writable-layer quotas: {}",
            if supported {
                "set as storage_opt size"
            } else {
                "not supported by this storage driver; measured instead"
            }
        );
        LAYER_LIMITS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.socket.clone(), supported);
        supported
    }

    /// Docker's `SizeRw` of a container, for drivers without an upper directory.
    async fn size_rw(&self, name: &str) -> Result<Option<u64>, BackendError> {
        let options = InspectContainerOptionsBuilder::new().size(true).build();
        let inspect = self
            .docker
            .inspect_container(name, Some(options))
            .await
            .map_err(|e| BackendError::Runtime {
                action: "measuring the container's disk usage",
                message: docker_message(&e),
            })?;
        Ok(inspect.size_rw.and_then(|s| u64::try_from(s).ok()))
    }
}

/// Whether `storage_opt size` works: always on [`SIZED_DRIVERS`], on overlay2 only
/// over xfs with project quotas (`super_options` of Docker's root directory).
fn sizes_layers(driver: &str, backing: &str, super_options: Option<&str>) -> bool {
    if SIZED_DRIVERS.contains(&driver) {
        return true;
    }
    driver == "overlay2"
        && backing == "xfs"
        && super_options.is_some_and(|o| {
            o.split(',')
                .any(|opt| matches!(opt, "prjquota" | "pquota" | "pqnoenforce"))
        })
}

/// The super-block options of the mount holding `path`, from /proc/self/mountinfo
/// (the longest mount point that is a prefix of `path`).
fn super_options<'a>(mountinfo: &'a str, path: &str) -> Option<&'a str> {
    let path = Path::new(path);
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = *fields.get(4)?;
            let dash = fields.iter().position(|f| *f == "-")?;
            let options = *fields.get(dash + 3)?;
            path.starts_with(mount_point)
                .then_some((mount_point.len(), options))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, options)| options)
}

/// [`walk`] on a blocking thread; the error is student-readable.
async fn walk_blocking(dir: String) -> Result<u64, BackendError> {
    let result = tokio::task::spawn_blocking(move || {
        let walked = walk(Path::new(&dir));
        (dir, walked)
    })
    .await;
    let (dir, walked) = result.map_err(|e| BackendError::Runtime {
        action: "measuring disk usage",
        message: e.to_string(),
    })?;
    let walked = walked.map_err(|e| BackendError::Runtime {
        action: "measuring disk usage",
        message: format!("{dir}: {e}"),
    })?;
    if !walked.complete {
        tracing::warn!(dir = %dir, entries = walked.entries, mb = walked.bytes / MIB, "stopped measuring after {MAX_ENTRIES} entries; the figure is a lower bound");
    }
    Ok(walked.bytes)
}

/// What a walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Walked {
    /// Bytes allocated (blocks, not apparent sizes: sparse files count what they use).
    bytes: u64,
    /// Entries looked at.
    entries: u64,
    /// False when [`MAX_ENTRIES`] stopped the walk.
    complete: bool,
}

/// The bytes allocated under `root`, like `du -s`, walked as the module comment says.
fn walk(root: &Path) -> std::io::Result<Walked> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let root_fd = rustix::fs::open(root, flags, Mode::empty())?;
    let top = rustix::fs::fstat(&root_fd)?;
    let mut walked = Walked {
        bytes: allocated(&top),
        entries: 0,
        complete: true,
    };
    let mut linked = HashSet::new();
    // Subtrees still to walk, as paths below the root.
    let mut subtrees: Vec<Vec<CString>> = vec![Vec::new()];
    while let Some(path) = subtrees.pop() {
        let Ok(start) = open_below(&root_fd, &path, flags) else {
            continue; // gone or replaced since it was seen
        };
        let mut stack: Vec<(Dir, Vec<CString>)> = vec![(Dir::new(start)?, path)];
        loop {
            let depth = stack.len();
            let Some((dir, path)) = stack.last_mut() else {
                break;
            };
            let entry = match dir.read() {
                Some(Ok(entry)) => entry,
                Some(Err(_)) | None => {
                    stack.pop();
                    continue;
                }
            };
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            walked.entries += 1;
            if walked.entries > MAX_ENTRIES {
                walked.complete = false;
                return Ok(walked);
            }
            let Ok(stat) = rustix::fs::statat(dir.fd()?, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if stat.st_dev != top.st_dev {
                continue; // another filesystem mounted inside: not this quota's
            }
            let is_dir = FileType::from_raw_mode(stat.st_mode as _) == FileType::Directory;
            if !is_dir && stat.st_nlink > 1 && !linked.insert(stat.st_ino) {
                continue;
            }
            walked.bytes = walked.bytes.saturating_add(allocated(&stat));
            if !is_dir {
                continue;
            }
            let mut below = path.clone();
            below.push(name.to_owned());
            if depth >= MAX_OPEN_DIRS {
                subtrees.push(below);
                continue;
            }
            let opened = rustix::fs::openat(dir.fd()?, name, flags, Mode::empty());
            if let Ok(fd) = opened {
                stack.push((Dir::new(fd)?, below));
            }
        }
    }
    Ok(walked)
}

/// Opens the directory at `path` below `root`, one component at a time, never
/// following a symlink.
fn open_below(root: &OwnedFd, path: &[CString], flags: OFlags) -> std::io::Result<OwnedFd> {
    let mut fd = rustix::fs::openat(root, c".", flags, Mode::empty())?;
    for name in path {
        fd = rustix::fs::openat(fd.as_fd(), name.as_c_str(), flags, Mode::empty())?;
    }
    Ok(fd)
}

fn allocated(stat: &Stat) -> u64 {
    (stat.st_blocks as u64).saturating_mul(512)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, bytes: usize) {
        std::fs::write(path, vec![1u8; bytes]).unwrap();
    }

    #[test]
    fn counts_files_once_without_following_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        write(&outside.path().join("big"), 4 * MIB as usize);
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("a"), MIB as usize);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        write(&dir.path().join("sub/b"), MIB as usize);
        std::fs::hard_link(dir.path().join("sub/b"), dir.path().join("b-again")).unwrap();
        symlink(outside.path(), dir.path().join("link")).unwrap();
        let walked = walk(dir.path()).unwrap();
        assert!(walked.complete);
        assert_eq!(walked.entries, 5);
        let mib = walked.bytes as f64 / MIB as f64;
        assert!((2.0..2.2).contains(&mib), "{mib} MiB");
    }

    #[test]
    fn deep_trees_are_walked_with_few_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let mut path = dir.path().to_path_buf();
        for i in 0..(3 * MAX_OPEN_DIRS) {
            path.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&path).unwrap();
        write(&path.join("deep"), MIB as usize);
        let walked = walk(dir.path()).unwrap();
        assert_eq!(walked.entries, 3 * MAX_OPEN_DIRS as u64 + 1);
        assert!(walked.bytes >= MIB, "{walked:?}");
    }

    #[test]
    fn a_symlinked_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/etc", dir.path().join("root")).unwrap();
        assert!(walk(&dir.path().join("root")).is_err());
    }

    #[test]
    fn which_drivers_size_layers() {
        assert!(sizes_layers("zfs", "", None));
        assert!(sizes_layers(
            "overlay2",
            "xfs",
            Some("rw,attr2,inode64,prjquota")
        ));
        assert!(!sizes_layers("overlay2", "xfs", Some("rw,attr2,inode64")));
        assert!(!sizes_layers("overlay2", "extfs", Some("rw,prjquota")));
        assert!(!sizes_layers("vfs", "extfs", None));
    }

    #[test]
    fn super_options_of_the_longest_mount() {
        let mountinfo = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 22 8:2 / /var/lib/docker rw,relatime shared:2 - xfs /dev/sdb1 rw,attr2,prjquota
31 22 8:3 / /var/lib/dockerx rw shared:3 - ext4 /dev/sdc1 rw
";
        assert_eq!(
            super_options(mountinfo, "/var/lib/docker"),
            Some("rw,attr2,prjquota")
        );
        assert_eq!(
            super_options(mountinfo, "/srv"),
            Some("rw,errors=remount-ro")
        );
    }
}
