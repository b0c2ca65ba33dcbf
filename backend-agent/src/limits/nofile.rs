//! The agent's open-file limit (RLIMIT_NOFILE), raised once at start.
//!
//! Every session, forwarded connection and listener of every student on the node is a
//! descriptor of the agent's; at the usual soft limit of 1024, EMFILE would end every
//! session on the node long before the per-student caps bite. So the agent raises its
//! soft limit to the hard one (or to `nofile`, raising the hard limit too when it runs
//! as root), and says so with the numbers when the result is below what `capacity`
//! students at their caps could need.

use crate::config::Config;

/// Descriptors one session may hold in the agent: the helper's socket, or Docker
/// exec's hijacked connection and the process's pipes.
const FDS_PER_SESSION: u64 = 2;
/// Descriptors the agent needs whatever students do: Docker, controller and proxy
/// connections, listeners, the runtime's own.
const BASE_FDS: u64 = 1024;
/// The kernel's ceiling on any process's limit when /proc does not say (its default).
const DEFAULT_NR_OPEN: u64 = 1 << 20;

/// One resource limit; `u64::MAX` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// What applies now.
    pub soft: u64,
    /// How far the soft value may be raised without privilege.
    pub hard: u64,
}

/// Why the configured `nofile` could not be had.
#[derive(Debug, thiserror::Error)]
pub enum NofileError {
    /// The limit could not be read at all.
    #[error("cannot read the open-file limit: {0}")]
    Read(#[source] std::io::Error),
    /// `nofile` is above what this process may set.
    #[error("nofile: cannot raise the open-file limit to {target} (it is {soft}, hard limit {hard}, kernel ceiling fs.nr_open {nr_open}); raising the hard limit needs CAP_SYS_RESOURCE: raise LimitNOFILE= in the agent's unit, or lower nofile")]
    Unreachable {
        /// The configured value.
        target: u64,
        /// The soft limit reached.
        soft: u64,
        /// The hard limit.
        hard: u64,
        /// /proc/sys/fs/nr_open.
        nr_open: u64,
        /// What setrlimit said.
        source: std::io::Error,
    },
}

/// The descriptors `config`'s caps could need: `capacity` students each at every cap.
pub fn needed(config: &Config) -> u64 {
    let per_student = u64::from(config.max_sessions_per_user) * FDS_PER_SESSION
        + u64::from(config.max_forwards_per_user)
        + u64::from(config.max_listeners_per_user);
    BASE_FDS.saturating_add(u64::from(config.capacity).saturating_mul(per_student))
}

/// The limit to set, from the current one, the configured `target` (0: as high as the
/// hard limit allows) and the kernel's ceiling. Never lowers what the operator gave.
pub fn plan(current: Limit, target: u64, nr_open: u64) -> Limit {
    if target == 0 {
        let ceiling = current.hard.min(nr_open);
        Limit {
            soft: current.soft.max(ceiling),
            hard: current.hard,
        }
    } else if current.soft >= target {
        current
    } else {
        Limit {
            soft: target,
            hard: current.hard.max(target),
        }
    }
}

/// Raises this process's open-file limit as `config` says and logs the result; an
/// error only when an explicit `nofile` cannot be reached. Returns the limit now in
/// force.
pub fn raise(config: &Config) -> Result<Limit, NofileError> {
    let current = get().map_err(NofileError::Read)?;
    let nr_open = nr_open();
    let wanted = plan(current, config.nofile, nr_open);
    let reached = if wanted == current {
        current
    } else {
        match set(wanted) {
            Ok(()) => wanted,
            Err(source) => {
                // Not root: take what the hard limit allows, then report.
                let fallback = plan(current, 0, nr_open);
                if fallback != current {
                    let _ = set(fallback);
                }
                let now = get().unwrap_or(current);
                if config.nofile != 0 && now.soft < config.nofile {
                    return Err(NofileError::Unreachable {
                        target: config.nofile,
                        soft: now.soft,
                        hard: now.hard,
                        nr_open,
                        source,
                    });
                }
                now
            }
        }
    };
    let needed = needed(config);
    if reached.soft < needed {
        tracing::warn!(
            limit = reached.soft,
            hard = reached.hard,
            needed,
            capacity = config.capacity,
            "the open-file limit is {} but {} students at their caps could need {needed}; raise LimitNOFILE= (or nofile), or lower capacity or the max_*_per_user caps",
            reached.soft,
            config.capacity
        );
    } else {
        tracing::info!(
            limit = reached.soft,
            hard = reached.hard,
            was = current.soft,
            needed,
            "open-file limit"
        );
    }
    Ok(reached)
}

fn get() -> std::io::Result<Limit> {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    Ok(Limit {
        soft: l.current.unwrap_or(u64::MAX),
        hard: l.maximum.unwrap_or(u64::MAX),
    })
}

fn set(limit: Limit) -> std::io::Result<()> {
    let finite = |v: u64| (v != u64::MAX).then_some(v);
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: finite(limit.soft),
            maximum: finite(limit.hard),
        },
    )
    .map_err(std::io::Error::from)
}

/// The kernel's ceiling on RLIMIT_NOFILE.
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_NR_OPEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NR_OPEN: u64 = 1 << 20;

    fn limit(soft: u64, hard: u64) -> Limit {
        Limit { soft, hard }
    }

    #[test]
    fn soft_goes_to_hard_by_default() {
        assert_eq!(
            plan(limit(1024, 524_288), 0, NR_OPEN),
            limit(524_288, 524_288)
        );
        // An unlimited hard limit stops at the kernel's ceiling.
        assert_eq!(
            plan(limit(1024, u64::MAX), 0, NR_OPEN),
            limit(NR_OPEN, u64::MAX)
        );
        assert_eq!(
            plan(limit(4096, 4096), 0, NR_OPEN),
            limit(4096, 4096),
            "nothing to do"
        );
    }

    #[test]
    fn a_target_raises_the_hard_limit_when_needed_and_never_lowers() {
        assert_eq!(
            plan(limit(1024, 524_288), 65_536, NR_OPEN),
            limit(65_536, 524_288)
        );
        assert_eq!(
            plan(limit(1024, 4096), 65_536, NR_OPEN),
            limit(65_536, 65_536)
        );
        assert_eq!(
            plan(limit(200_000, 200_000), 65_536, NR_OPEN),
            limit(200_000, 200_000),
            "the operator's higher limit is kept"
        );
    }

    #[test]
    fn what_the_caps_need() {
        let config = Config::default();
        let per_student = 32 * FDS_PER_SESSION + 64 + 8;
        assert_eq!(needed(&config), BASE_FDS + 100 * per_student);
        // 300 students at the default caps fit the units' LimitNOFILE=65536.
        let class = Config {
            capacity: 300,
            ..Config::default()
        };
        assert!(needed(&class) <= 65_536, "{}", needed(&class));
    }
}
