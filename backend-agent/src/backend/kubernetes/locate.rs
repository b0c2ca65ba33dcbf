//! Finding a pod container's init process on this node from the container id in the
//! pod's status (`containerd://…`, `cri-o://…`, `docker://…`), with the agent in the
//! host's PID namespace (`hostPID: true` in the DaemonSet).
//!
//! Every runtime puts a container's processes in a cgroup whose path names the bare
//! id (`…/cri-containerd-ID.scope`, `…/crio-ID.scope`, `…/docker-ID.scope`,
//! `/kubepods/…/podUID/ID` with cgroupfs, on cgroup v1 and v2 alike), so the
//! container's processes are those whose `/proc/PID/cgroup` names it. Its init is the
//! one among them whose parent is not (the runtime's shim, or conmon, started it):
//! processes `pods/exec` starts have an outside parent too, so when there are several
//! the one that is PID 1 in its own namespace (`NSpid`) wins, else the oldest.

use std::collections::HashMap;
use std::path::Path;

/// The host pid of PID 1 of the container whose status id is `container_id`.
pub fn init_pid(container_id: &str) -> Result<u32, String> {
    init_pid_in(Path::new("/proc"), container_id)
}

/// [`init_pid`] over the process tree at `proc_root` (`/proc`, but for tests).
pub fn init_pid_in(proc_root: &Path, container_id: &str) -> Result<u32, String> {
    let id = bare_id(container_id);
    if id.len() < 12 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("{container_id:?} is not a container id"));
    }
    let entries = std::fs::read_dir(proc_root)
        .map_err(|e| format!("cannot list processes in {}: {e}", proc_root.display()))?;
    // pid → (parent, start time), for every process of the container.
    let mut members: HashMap<u32, (u32, u64)> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while the tree is read: one that is gone is skipped.
        let dir = entry.path();
        let Ok(cgroup) = std::fs::read_to_string(dir.join("cgroup")) else {
            continue;
        };
        if !cgroup_names(&cgroup, id) {
            continue;
        }
        let Some(stat) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        else {
            continue;
        };
        members.insert(pid, stat);
    }
    let short = &id[..12];
    if members.is_empty() {
        return Err(format!(
            "no process of container {short} runs on this node (it may have just stopped)"
        ));
    }
    let mut roots: Vec<(u32, u64)> = members
        .iter()
        .filter(|(_, (parent, _))| !members.contains_key(parent))
        .map(|(&pid, &(_, started))| (pid, started))
        .collect();
    roots.sort_by_key(|&(pid, started)| (started, pid));
    let first_in_namespace = roots.iter().find(|(pid, _)| {
        std::fs::read_to_string(proc_root.join(pid.to_string()).join("status"))
            .is_ok_and(|s| is_namespace_init(&s))
    });
    first_in_namespace
        .or(roots.first())
        .map(|&(pid, _)| pid)
        .ok_or_else(|| {
            format!("container {short} has processes on this node but none of them started it")
        })
}

/// The bare id in a status container id (`containerd://abc` → `abc`).
pub fn bare_id(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

/// Whether a `/proc/PID/cgroup` text puts the process in container `id`: a path
/// component holds the id as a whole word (not as part of a longer id), and is not
/// CRI-O's `crio-conmon-ID`, the monitor outside the container.
fn cgroup_names(cgroup: &str, id: &str) -> bool {
    let word = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    cgroup
        .lines()
        // hierarchy-ID:controllers:path; the path may itself hold colons.
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split('/'))
        .any(|component| {
            !component.contains("conmon")
                && component.match_indices(id).any(|(at, _)| {
                    let bytes = component.as_bytes();
                    let before = at.checked_sub(1).map(|i| bytes[i]);
                    let after = bytes.get(at + id.len()).copied();
                    !word(before) && !word(after)
                })
        })
}

/// (parent pid, start time in clock ticks) from a `/proc/PID/stat` text. The command
/// name in parentheses may hold spaces and parentheses, so fields are counted after
/// the last `)`.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
    // stime cutime cstime priority nice num_threads itrealvalue starttime
    let parent = fields.nth(1)?.parse().ok()?;
    let started = fields.nth(17)?.parse().ok()?;
    Some((parent, started))
}

/// Whether a `/proc/PID/status` text shows PID 1 of a PID namespace below this one
/// (`NSpid:\t4242\t1`).
fn is_namespace_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            ids.len() >= 2 && ids.last() == Some(&"1")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1a9c2e7b3d5a6f8e0c1b2d3a4f5e6d7c8b9a0f1e2d3c4b5a69788796a5b4c3";
    const OTHER: &str = "0000000000000000000000000000000000000000000000000000000000000001";

    /// A fake `/proc` in a temporary directory.
    struct Proc(tempfile::TempDir);

    impl Proc {
        fn new() -> Proc {
            let proc = Proc(tempfile::tempdir().unwrap());
            std::fs::create_dir(proc.0.path().join("self")).unwrap();
            proc
        }

        /// Process `pid`, child of `parent`, started at `started`, in `cgroup`,
        /// `nspid` being its pid in its own namespace (if it is in one).
        fn process(&self, pid: u32, parent: u32, started: u64, cgroup: &str, nspid: Option<u32>) {
            let dir = self.0.path().join(pid.to_string());
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("cgroup"), cgroup).unwrap();
            let stat = format!(
                "{pid} (odd ) name) S {parent} {pid} {pid} 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 {started} 1000 100 18446744073709551615"
            );
            std::fs::write(dir.join("stat"), stat).unwrap();
            let ns = nspid.map_or_else(|| pid.to_string(), |n| format!("{pid}\t{n}"));
            std::fs::write(
                dir.join("status"),
                format!("Name:\tx\nPid:\t{pid}\nNSpid:\t{ns}\n"),
            )
            .unwrap();
        }

        fn find(&self, id: &str) -> Result<u32, String> {
            init_pid_in(self.0.path(), id)
        }
    }

    fn v2(path: &str) -> String {
        format!("0::{path}\n")
    }

    #[test]
    fn containerd_on_cgroup_v2() {
        let proc = Proc::new();
        let scope = |id: &str| {
            v2(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-{id}.scope"
            ))
        };
        proc.process(1, 0, 1, &v2("/init.scope"), None);
        proc.process(900, 1, 50, &v2("/system.slice/containerd.service"), None); // shim
        proc.process(1000, 900, 60, &scope(OTHER), Some(1)); // the pause container
        proc.process(1010, 900, 70, &scope(ID), Some(1)); // labssh-init
        proc.process(1020, 1010, 80, &scope(ID), Some(7)); // its keepalive
        proc.process(1030, 1020, 90, &scope(ID), Some(8));
        assert_eq!(proc.find(&format!("containerd://{ID}")), Ok(1010));
        assert_eq!(proc.find(ID), Ok(1010), "a bare id too");
        assert_eq!(proc.find(&format!("containerd://{OTHER}")), Ok(1000));
    }

    #[test]
    fn docker_and_cgroupfs_on_cgroup_v1() {
        let proc = Proc::new();
        let v1 = |path: &str| {
            format!(
                "12:pids:{path}\n11:memory:{path}\n3:cpu,cpuacct:{path}\n1:name=systemd:{path}\n"
            )
        };
        proc.process(500, 1, 10, &v1("/"), None);
        proc.process(
            2000,
            500,
            20,
            &v1(&format!("/kubepods/burstable/pod77/{ID}")),
            Some(1),
        );
        proc.process(
            2001,
            2000,
            30,
            &v1(&format!("/kubepods/burstable/pod77/{ID}")),
            Some(2),
        );
        assert_eq!(proc.find(&format!("docker://{ID}")), Ok(2000));

        let proc = Proc::new();
        proc.process(
            3000,
            1,
            10,
            &v2(&format!("/system.slice/docker-{ID}.scope")),
            Some(1),
        );
        assert_eq!(proc.find(&format!("docker://{ID}")), Ok(3000));
    }

    #[test]
    fn crio_conmon_is_not_the_container() {
        let proc = Proc::new();
        let slice = "/kubepods.slice/kubepods-pod99.slice";
        proc.process(
            4000,
            1,
            10,
            &v2(&format!("{slice}/crio-conmon-{ID}.scope")),
            None,
        );
        proc.process(
            4001,
            4000,
            11,
            &v2(&format!("{slice}/crio-{ID}.scope")),
            Some(1),
        );
        assert_eq!(proc.find(&format!("cri-o://{ID}")), Ok(4001));
    }

    #[test]
    fn an_exec_beside_init_is_not_taken_for_it() {
        // `pods/exec` starts processes from the shim too: older than them, and PID 1 in
        // the namespace, the init wins either way it is listed.
        let proc = Proc::new();
        let scope = v2(&format!("/kubepods/pod1/{ID}"));
        proc.process(5000, 900, 100, &scope, Some(1));
        proc.process(4990, 900, 200, &scope, Some(5)); // a recycled, lower pid
        assert_eq!(proc.find(ID), Ok(5000));
        // Without NSpid (old kernels) the oldest wins.
        let proc = Proc::new();
        proc.process(5000, 900, 100, &scope, None);
        proc.process(4990, 900, 200, &scope, None);
        assert_eq!(proc.find(ID), Ok(5000));
    }

    #[test]
    fn ids_match_whole() {
        let proc = Proc::new();
        let longer = format!("{ID}ff");
        proc.process(6000, 1, 10, &v2(&format!("/docker/{longer}")), Some(1));
        let err = proc.find(ID).unwrap_err();
        assert!(
            err.contains(&ID[..12]) && err.contains("no process"),
            "{err}"
        );
        assert_eq!(proc.find(&longer), Ok(6000));
        // Nor is a piece of an id enough.
        let err = proc.find(&ID[..20]).unwrap_err();
        assert!(err.contains("no process"), "{err}");
    }

    #[test]
    fn bad_ids_and_trees_say_so() {
        let proc = Proc::new();
        for bad in [
            "",
            "containerd://",
            "containerd://abc",
            "docker://../../etc/passwd1",
        ] {
            let err = proc.find(bad).unwrap_err();
            assert!(err.contains("not a container id"), "{bad}: {err}");
        }
        let err = init_pid_in(Path::new("/nonexistent/proc"), ID).unwrap_err();
        assert!(err.contains("cannot list processes"), "{err}");
        // Processes whose files vanished mid-scan are skipped, not errors.
        std::fs::create_dir(proc.0.path().join("7000")).unwrap();
        assert!(proc.find(ID).unwrap_err().contains("no process"));
    }

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        assert_eq!(
            parse_stat("42 (a) b (c) S 7 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0"),
            Some((7, 12345))
        );
        assert_eq!(parse_stat("42 (cut"), None);
        assert_eq!(parse_stat("42 (x) S"), None);
        assert!(is_namespace_init("NSpid:\t812\t1\n"));
        assert!(is_namespace_init("NSpid:\t812\t77\t1\n"));
        assert!(!is_namespace_init("NSpid:\t1\n"), "the host's own init");
        assert!(!is_namespace_init("NSpid:\t812\t9\n"));
        assert!(!is_namespace_init("Name:\tx\n"));
    }

    #[test]
    fn this_process_is_found_through_the_real_proc() {
        // The test runs in some cgroup; if that cgroup names nothing like an id, there
        // is nothing to find, which must be an error, not a panic.
        let err = init_pid(&format!("containerd://{OTHER}")).unwrap_err();
        assert!(err.contains("no process"), "{err}");
    }
}
