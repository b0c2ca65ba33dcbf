//! Which of its container's limits a student hit, read from the container's cgroup,
//! so they are told (`labssh: your container reached its process limit (256)`)
//! rather than left with a shell that exits 255 or a process that vanished.
//!
//! The counters are the kernel's: `pids.current`/`pids.max` and the `max` count of
//! `pids.events` (fork refused at the limit), and the `oom_kill` count of the memory
//! controller (`memory.oom_control` on cgroup v1, `memory.events` on v2). The cgroup
//! is found by the container's id in the layouts Docker uses: `docker/ID` (cgroupfs
//! driver) and `system.slice/docker-ID.scope` (systemd driver), under each
//! controller's hierarchy on v1 and the unified one on v2.

use std::path::{Path, PathBuf};

use crate::backend::ExitStatus;

/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// One MiB, for the memory limit in messages.
const MIB: u64 = 1 << 20;
/// The exit code a shell or Docker exec reports for a process killed by KILL.
const KILLED_CODE: i32 = 128 + libc::SIGKILL;
/// A v1 memory limit at or above this is "unlimited" (the kernel reports ~2^63).
const UNLIMITED: u64 = 1 << 62;

/// A container's cgroup directories for the pids and memory controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCgroup {
    /// Holds `pids.current`, `pids.max`, `pids.events`.
    pids: Option<PathBuf>,
    /// Holds the memory limit and OOM counters.
    memory: Option<PathBuf>,
    /// Whether `memory` is a v2 directory (`memory.events`, `memory.max`).
    unified: bool,
}

/// The counters at one moment.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Processes (tasks) now.
    pub pids_current: u64,
    /// The process limit; `None` when unlimited or unknown.
    pub pids_max: Option<u64>,
    /// Forks refused at the limit so far.
    pub pids_refused: u64,
    /// Processes the OOM killer killed so far.
    pub oom_kills: u64,
    /// The memory limit in bytes; `None` when unlimited or unknown.
    pub memory_max: Option<u64>,
}

impl ContainerCgroup {
    /// The cgroup of container `id` on this host; `None` when there is none to read
    /// (another runtime, an agent in a container without /sys/fs/cgroup).
    pub fn find(id: &str) -> Option<ContainerCgroup> {
        Self::find_in(Path::new(CGROUP_ROOT), id)
    }

    /// [`ContainerCgroup::find`] under `root`.
    fn find_in(root: &Path, id: &str) -> Option<ContainerCgroup> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        let layouts = [
            format!("docker/{id}"),
            format!("system.slice/docker-{id}.scope"),
        ];
        let under = |base: &Path, file: &str| {
            layouts
                .iter()
                .map(|l| base.join(l))
                .find(|dir| dir.join(file).is_file())
        };
        let v1_pids = under(&root.join("pids"), "pids.max");
        let v1_memory = under(&root.join("memory"), "memory.oom_control");
        if v1_pids.is_some() || v1_memory.is_some() {
            return Some(ContainerCgroup {
                pids: v1_pids,
                memory: v1_memory,
                unified: false,
            });
        }
        let v2 = under(root, "cgroup.procs")?;
        Some(ContainerCgroup {
            pids: Some(v2.clone()).filter(|d| d.join("pids.max").is_file()),
            memory: Some(v2.clone()).filter(|d| d.join("memory.events").is_file()),
            unified: true,
        })
    }

    /// Every counter now. Each is read on its own below, only when asked: a session
    /// reads two files when it starts and none when it ends well.
    #[cfg(test)]
    pub fn counters(&self) -> Counters {
        Counters {
            pids_current: self.pids_current(),
            pids_max: self.pids_max(),
            pids_refused: self.pids_refused(),
            oom_kills: self.oom_kills(),
            memory_max: self.memory_max(),
        }
    }

    /// Processes (tasks) now; 0 when unknown.
    pub fn pids_current(&self) -> u64 {
        let dir = self.pids.as_ref();
        dir.and_then(|d| read_number(&d.join("pids.current")))
            .unwrap_or(0)
    }

    /// The process limit; `None` when unlimited or unknown.
    pub fn pids_max(&self) -> Option<u64> {
        read_number(&self.pids.as_ref()?.join("pids.max"))
    }

    /// Forks refused at the limit so far; 0 when unknown.
    pub fn pids_refused(&self) -> u64 {
        let dir = self.pids.as_ref();
        dir.and_then(|d| read_keyed(&d.join("pids.events"), "max"))
            .unwrap_or(0)
    }

    /// Processes the OOM killer killed so far; 0 when unknown.
    pub fn oom_kills(&self) -> u64 {
        let events = if self.unified {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let dir = self.memory.as_ref();
        dir.and_then(|d| read_keyed(&d.join(events), "oom_kill"))
            .unwrap_or(0)
    }

    /// The memory limit in bytes; `None` when unlimited or unknown.
    pub fn memory_max(&self) -> Option<u64> {
        let limit = if self.unified {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        read_number(&self.memory.as_ref()?.join(limit)).filter(|m| *m < UNLIMITED)
    }
}

/// A file holding one number; `None` for "max" or anything unreadable.
fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a file of `KEY VALUE` lines.
fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// "your container reached its process limit (256)".
pub fn process_limit_message(max: Option<u64>) -> String {
    match max {
        Some(max) => format!("your container reached its process limit ({max})"),
        None => "your container reached its process limit".to_owned(),
    }
}

/// One session's view of its container's limits: the two event counters when it
/// started, to tell what happened during it.
#[derive(Debug, Clone)]
pub struct LimitWatch {
    /// The container's cgroup.
    cgroup: ContainerCgroup,
    /// Forks refused at the limit before the session.
    pids_refused: u64,
    /// OOM kills before the session.
    oom_kills: u64,
}

impl LimitWatch {
    /// Starts watching container `id`; `None` when its cgroup cannot be read.
    pub fn start(id: &str) -> Option<LimitWatch> {
        ContainerCgroup::find(id).map(LimitWatch::of)
    }

    /// Starts watching `cgroup`.
    fn of(cgroup: ContainerCgroup) -> LimitWatch {
        LimitWatch {
            pids_refused: cgroup.pids_refused(),
            oom_kills: cgroup.oom_kills(),
            cgroup,
        }
    }

    /// Why a process could not start, when it is the process limit: the container
    /// holds as many processes as it may (or refused a fork since the start).
    pub fn spawn_refusal(&self) -> Option<String> {
        let max = self.cgroup.pids_max();
        let full = max.is_some_and(|max| self.cgroup.pids_current() >= max);
        (full || self.cgroup.pids_refused() > self.pids_refused).then(|| process_limit_message(max))
    }

    /// What to tell the student when the session's process ended with `status`: that
    /// the OOM killer took it (killed by KILL, or exit code 137, while the
    /// container's OOM kills grew),
    /// or, when it failed, that forks were refused at the process limit meanwhile (a
    /// session that succeeded is not told of another one's refused forks).
    /// Reads nothing for a process that exited 0.
    pub fn at_exit(&self, status: &ExitStatus) -> Option<String> {
        // Docker exec reports a process killed by KILL as exit code 137 (128 + 9).
        let killed = match status {
            ExitStatus::Signal(s) => s == "KILL",
            ExitStatus::Code(code) => *code == KILLED_CODE,
        };
        if killed && self.cgroup.oom_kills() > self.oom_kills {
            return Some(match self.cgroup.memory_max() {
                Some(max) => format!(
                    "your container ran out of memory (its limit is {} MiB); the kernel killed your process",
                    max.div_ceil(MIB)
                ),
                None => "your container ran out of memory; the kernel killed your process".to_owned(),
            });
        }
        let failed = *status != ExitStatus::Code(0);
        (failed && self.cgroup.pids_refused() > self.pids_refused)
            .then(|| process_limit_message(self.cgroup.pids_max()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123abcd";

    fn write(path: PathBuf, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A v1 tree (cgroupfs driver) for container [`ID`].
    fn v1(root: &Path, current: u64, refused: u64, oom: u64) {
        let pids = root.join("pids/docker").join(ID);
        write(pids.join("pids.max"), "256\n");
        write(pids.join("pids.current"), &format!("{current}\n"));
        write(pids.join("pids.events"), &format!("max {refused}\n"));
        let memory = root.join("memory/docker").join(ID);
        write(
            memory.join("memory.oom_control"),
            &format!("oom_kill_disable 0\nunder_oom 0\noom_kill {oom}\n"),
        );
        write(memory.join("memory.limit_in_bytes"), "67108864\n");
    }

    #[test]
    fn v1_counters_and_messages() {
        let dir = tempfile::tempdir().unwrap();
        v1(dir.path(), 3, 0, 0);
        let cgroup = ContainerCgroup::find_in(dir.path(), ID).unwrap();
        assert_eq!(cgroup.pids_max(), Some(256));
        assert_eq!(cgroup.memory_max(), Some(64 << 20));
        let watch = LimitWatch::of(cgroup);
        assert_eq!(watch.spawn_refusal(), None);
        assert_eq!(watch.at_exit(&ExitStatus::Signal("KILL".into())), None);
        // A fork bomb filled the table.
        v1(dir.path(), 256, 7, 0);
        assert_eq!(
            watch.spawn_refusal().as_deref(),
            Some("your container reached its process limit (256)")
        );
        assert_eq!(
            watch.at_exit(&ExitStatus::Code(2)).as_deref(),
            Some("your container reached its process limit (256)")
        );
        assert_eq!(watch.at_exit(&ExitStatus::Code(0)), None);
        // The OOM killer took the session's process.
        v1(dir.path(), 3, 0, 1);
        assert_eq!(
            watch.at_exit(&ExitStatus::Signal("KILL".into())).as_deref(),
            Some("your container ran out of memory (its limit is 64 MiB); the kernel killed your process")
        );
        // Docker exec's way of saying the same.
        assert!(watch.at_exit(&ExitStatus::Code(137)).is_some());
        // A process that failed otherwise while another one ran out: not the session's.
        assert_eq!(watch.at_exit(&ExitStatus::Code(1)), None);
    }

    #[test]
    fn v2_systemd_layout() {
        let dir = tempfile::tempdir().unwrap();
        let scope = dir.path().join(format!("system.slice/docker-{ID}.scope"));
        write(scope.join("cgroup.procs"), "1\n");
        write(scope.join("pids.max"), "max\n");
        write(scope.join("pids.current"), "9\n");
        write(scope.join("pids.events"), "max 0\n");
        write(
            scope.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 2\n",
        );
        write(scope.join("memory.max"), "max\n");
        let cgroup = ContainerCgroup::find_in(dir.path(), ID).unwrap();
        assert_eq!(
            cgroup.counters(),
            Counters {
                pids_current: 9,
                pids_max: None,
                pids_refused: 0,
                oom_kills: 2,
                memory_max: None,
            }
        );
    }

    #[test]
    fn no_cgroup_no_watch() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ContainerCgroup::find_in(dir.path(), ID), None);
        assert_eq!(ContainerCgroup::find_in(dir.path(), "../etc"), None);
        assert_eq!(ContainerCgroup::find_in(dir.path(), ""), None);
    }
}
