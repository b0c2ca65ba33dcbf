//! Isolation beyond capabilities and limits, per environment: `seccomp`, `rlimits`,
//! `read_only_root` with `tmpfs`, `shm_size`, `mounts` of shared read-only course
//! data, and `devices`; checked with the key named, sent as `pb::Isolation`.

mod seccomp;
mod size;

use std::collections::{BTreeMap, HashSet};

use labssh_proto::pb;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::EnvironmentConfig;
pub use seccomp::Seccomp;

/// The limits `rlimits` may set, as the kernel and Docker name them without `RLIMIT_`.
pub const RLIMIT_NAMES: [&str; 5] = ["nofile", "nproc", "core", "fsize", "cpu"];
/// Paths that are the agent's or the kernel's: no tmpfs or mount may cover them.
const RESERVED_PATHS: [&str; 6] = ["/", "/home", "/.labssh", "/proc", "/sys", "/dev"];
/// tmpfs mount options Docker and the kernel take.
const TMPFS_OPTIONS: [&str; 13] = [
    "size",
    "mode",
    "nr_inodes",
    "uid",
    "gid",
    "noexec",
    "exec",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "ro",
    "rw",
];

/// One limit: `nofile = 4096` (soft = hard) or `nofile = { soft = 1024, hard = 4096 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RlimitConfig {
    /// The limit processes start with.
    pub soft: u64,
    /// The most a process may raise it to.
    pub hard: u64,
}

impl<'de> Deserialize<'de> for RlimitConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RlimitVisitor)
    }
}

/// Reads a number or a `{ soft, hard }` table.
struct RlimitVisitor;

impl<'de> Visitor<'de> for RlimitVisitor {
    type Value = RlimitConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number (soft = hard) or { soft = N, hard = N }")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RlimitConfig, E> {
        Ok(RlimitConfig { soft: v, hard: v })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RlimitConfig, E> {
        let v = u64::try_from(v).map_err(|_| E::custom("a limit must be >= 0"))?;
        self.visit_u64(v)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RlimitConfig, A::Error> {
        let (mut soft, mut hard) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "soft" => &mut soft,
                "hard" => &mut hard,
                other => return Err(de::Error::unknown_field(other, &["soft", "hard"])),
            };
            *slot = Some(map.next_value::<u64>()?);
        }
        match (soft, hard) {
            (Some(soft), Some(hard)) => Ok(RlimitConfig { soft, hard }),
            (None, _) => Err(de::Error::missing_field("soft")),
            (_, None) => Err(de::Error::missing_field("hard")),
        }
    }
}

impl EnvironmentConfig {
    /// The wire form of the isolation keys; `None` when none is set, so such an
    /// environment's containers are created exactly as before.
    pub(super) fn isolation_to_proto(&self) -> Option<pb::Isolation> {
        let isolation = pb::Isolation {
            seccomp: if self.seccomp.is_default() {
                String::new()
            } else {
                self.seccomp.to_proto()
            },
            rlimits: self
                .rlimits
                .iter()
                .map(|(name, l)| {
                    let limit = pb::Rlimit {
                        soft: l.soft,
                        hard: l.hard,
                    };
                    (name.clone(), limit)
                })
                .collect(),
            read_only_root: self.read_only_root,
            tmpfs: self.tmpfs.clone(),
            shm_size_bytes: size::parse(&self.shm_size).unwrap_or(0),
            mounts: self
                .mounts
                .iter()
                .filter_map(|m| parse_mount(m).ok())
                .collect(),
            devices: self.devices.clone(),
        };
        (isolation != pb::Isolation::default()).then_some(isolation)
    }

    /// Appends the isolation keys' problems, each naming its key.
    pub(super) fn check_isolation(&self, key: &dyn Fn(&str) -> String, problems: &mut Vec<String>) {
        if let Some(problem) = self.seccomp.problem() {
            problems.push(format!("{}: {problem}", key("seccomp")));
        }
        for (name, limit) in &self.rlimits {
            let at = format!("{}.{name}", key("rlimits"));
            if !RLIMIT_NAMES.contains(&name.as_str()) {
                problems.push(format!(
                    "{at}: unknown limit (one of {})",
                    RLIMIT_NAMES.join(", ")
                ));
            } else if limit.soft > limit.hard {
                problems.push(format!(
                    "{at}: soft {} is above hard {}",
                    limit.soft, limit.hard
                ));
            } else if i64::try_from(limit.hard).is_err() {
                problems.push(format!("{at}: {} is too large", limit.hard));
            }
        }
        if !self.shm_size.is_empty() {
            if let Err(e) = size::parse(&self.shm_size) {
                problems.push(format!("{}: {e}", key("shm_size")));
            }
        }
        let mut targets = HashSet::new();
        for entry in &self.tmpfs {
            match check_tmpfs(entry) {
                Ok(path) => note_target(&key("tmpfs"), path, &mut targets, problems),
                Err(e) => problems.push(format!("{}: {entry:?}: {e}", key("tmpfs"))),
            }
        }
        for entry in &self.mounts {
            match parse_mount(entry) {
                Ok(mount) => note_target(&key("mounts"), &mount.target, &mut targets, problems),
                Err(e) => problems.push(format!("{}: {entry:?}: {e}", key("mounts"))),
            }
        }
        for entry in &self.devices {
            if let Err(e) = check_device(entry) {
                problems.push(format!("{}: {entry:?}: {e}", key("devices")));
            }
        }
    }
}

/// Records a tmpfs or mount target, refusing a second one at the same path.
fn note_target(key: &str, path: &str, seen: &mut HashSet<String>, problems: &mut Vec<String>) {
    if !seen.insert(path.trim_end_matches('/').to_owned()) {
        problems.push(format!("{key}: {path:?} is mounted twice"));
    }
}

/// `"PATH"` or `"PATH:OPTIONS"`: the path, if the entry is good.
fn check_tmpfs(entry: &str) -> Result<&str, String> {
    let (path, options) = entry.split_once(':').unwrap_or((entry, ""));
    check_target(path)?;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        let (name, value) = option.split_once('=').unwrap_or((option, ""));
        if !TMPFS_OPTIONS.contains(&name) {
            return Err(format!(
                "unknown option {name:?} (one of {})",
                TMPFS_OPTIONS.join(", ")
            ));
        }
        if name == "size" {
            size::parse(value).map_err(|e| format!("size: {e}"))?;
        }
    }
    Ok(path)
}

/// `"VOLUME:/path"` (or `"VOLUME:/path:ro"`): a Docker volume, always read-only.
fn parse_mount(entry: &str) -> Result<pb::Mount, String> {
    let mut parts = entry.split(':');
    let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
        return Err("must be \"VOLUME:/path\", e.g. \"course-data:/srv/course\"".to_owned());
    };
    match parts.next() {
        None | Some("ro") if parts.next().is_none() => {}
        Some("rw") => {
            return Err(
                "shared mounts are read-only (a writable one would let students change each other's files)"
                    .to_owned(),
            )
        }
        _ => return Err("must be \"VOLUME:/path\", e.g. \"course-data:/srv/course\"".to_owned()),
    }
    if !is_volume_name(source) {
        return Err(format!(
            "{source:?} is not a volume name ([A-Za-z0-9][A-Za-z0-9_.-]+; host paths are not mounted)"
        ));
    }
    check_target(target)?;
    Ok(pb::Mount {
        source: source.to_owned(),
        target: target.to_owned(),
    })
}

/// A path inside the container that a tmpfs or mount may take.
fn check_target(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must be an absolute path"));
    }
    if path.split('/').any(|part| part == ".." || part == ".")
        || path.contains("//")
        || path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(format!("{path:?} is not a plain absolute path"));
    }
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    for reserved in RESERVED_PATHS {
        let under = reserved != "/" && path.starts_with(&format!("{reserved}/"));
        if path == reserved || under {
            return Err(format!(
                "{path:?} is taken (the root, /home, /.labssh, /proc, /sys and /dev are the agent's or the kernel's)"
            ));
        }
    }
    Ok(())
}

/// `"/dev/fuse"` or `"HOST:CONTAINER[:PERMISSIONS]"` (permissions of r, w, m).
fn check_device(entry: &str) -> Result<(), String> {
    let parts: Vec<&str> = entry.split(':').collect();
    if parts.len() > 3 {
        return Err("must be \"/dev/NAME\" or \"HOST:CONTAINER[:rwm]\"".to_owned());
    }
    for path in parts.iter().take(2) {
        let under_dev = path.strip_prefix("/dev/").is_some_and(|rest| {
            !rest.is_empty()
                && !rest
                    .split('/')
                    .any(|p| p.is_empty() || p == "." || p == "..")
        });
        if !under_dev {
            return Err(format!("{path:?} must be a device path under /dev/"));
        }
    }
    if let Some(perms) = parts.get(2) {
        if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
            return Err(format!("permissions {perms:?} must be letters of \"rwm\""));
        }
    }
    Ok(())
}

/// Docker's volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn is_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The rlimits of an environment, as configured (for the tests below and callers).
pub type Rlimits = BTreeMap<String, RlimitConfig>;

#[cfg(test)]
mod tests;
