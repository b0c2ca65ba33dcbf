//! A container's CPU time read straight from its cgroup, as the kernel counts it:
//! cgroup v1's `cpuacct.usage` (nanoseconds) or v2's `cpu.stat` `usage_usec`. The
//! cgroup is the one `/proc/PID/cgroup` names for the container's first process,
//! checked to name the container, so a recycled pid cannot lead elsewhere.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Which counter a cgroup file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// v1 `cpuacct.usage`: nanoseconds.
    V1Usage,
    /// v2 `cpu.stat`: its `usage_usec` line.
    V2Stat,
}

/// A container's CPU counter file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFile {
    /// The file.
    pub path: PathBuf,
    /// What it holds.
    pub counter: Counter,
}

impl CpuFile {
    /// The counter file of the process `pid`'s cgroup, if that process is in the
    /// container `id` (its cgroup path names it) and the file exists.
    pub fn of_process(pid: u32, id: &str) -> Option<CpuFile> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        if id.len() < 12 || !text.contains(id) {
            return None;
        }
        candidates(&text, Path::new(CGROUP_ROOT))
            .into_iter()
            .find(|c| c.path.is_file())
    }

    /// The CPU time the cgroup used so far.
    pub fn read(&self) -> Option<Duration> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        parse(&text, self.counter)
    }
}

/// Files that may hold the CPU counter of the cgroup described by `proc_cgroup` (a
/// `/proc/PID/cgroup`), v1 first: on a hybrid host the v2 tree lacks the cpu
/// controller.
pub fn candidates(proc_cgroup: &str, root: &Path) -> Vec<CpuFile> {
    let mut v1 = Vec::new();
    let mut v2 = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "cpuacct") {
            // Mounted alone or together with cpu, under either name.
            for mount in ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"] {
                v1.push(CpuFile {
                    path: root.join(mount).join(relative).join("cpuacct.usage"),
                    counter: Counter::V1Usage,
                });
            }
        } else if hierarchy == "0" && controllers.is_empty() {
            for mount in ["", "unified"] {
                v2.push(CpuFile {
                    path: root.join(mount).join(relative).join("cpu.stat"),
                    counter: Counter::V2Stat,
                });
            }
        }
    }
    v1.extend(v2);
    v1
}

/// The CPU time in a counter file's text.
pub fn parse(text: &str, counter: Counter) -> Option<Duration> {
    match counter {
        Counter::V1Usage => text.trim().parse().ok().map(Duration::from_nanos),
        Counter::V2Stat => text.lines().find_map(|line| {
            let usec = line.strip_prefix("usage_usec ")?;
            usec.trim().parse().ok().map(Duration::from_micros)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_are_read() {
        assert_eq!(
            parse("30283801\n", Counter::V1Usage),
            Some(Duration::from_nanos(30_283_801))
        );
        let stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n";
        assert_eq!(
            parse(stat, Counter::V2Stat),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(parse("junk", Counter::V1Usage), None);
        assert_eq!(parse("user_usec 3\n", Counter::V2Stat), None);
    }

    #[test]
    fn files_follow_the_process_cgroup() {
        let root = Path::new("/cg");
        let v1 = "2:cpuacct:/docker/abc\n1:cpu:/docker/abc\n0::/docker/abc\n";
        let files = candidates(v1, root);
        assert_eq!(
            files[0].path,
            Path::new("/cg/cpuacct/docker/abc/cpuacct.usage")
        );
        assert_eq!(files.last().unwrap().counter, Counter::V2Stat);
        let v2 = "0::/system.slice/docker-abc.scope\n";
        let files = candidates(v2, root);
        assert_eq!(
            files[0].path,
            Path::new("/cg/system.slice/docker-abc.scope/cpu.stat")
        );
        assert!(candidates("garbage", root).is_empty());
    }

    #[test]
    fn this_host_is_readable() {
        // Whatever this machine runs, our own cgroup's counter reads as some time.
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let found = candidates(&text, Path::new(CGROUP_ROOT))
            .into_iter()
            .find(|c| c.path.is_file());
        if let Some(file) = found {
            assert!(file.read().is_some(), "{file:?}");
        }
    }
}
