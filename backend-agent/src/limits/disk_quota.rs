//! Disk quotas the agent enforces itself: measured in the background, checked when a
//! shell or command starts.
//!
//! Where the runtime cannot limit a home or a writable layer (see
//! `backend/docker/disk.rs`), a background task measures every running container
//! under a quota, one at a time, every `disk_check_interval_secs`, and keeps the
//! figures with their age. A new shell or exec session of a student over a quota is
//! refused with what is over, by how much and what to do; SFTP stays open so files can
//! be deleted, and the end of an SFTP session of a student over quota has them
//! measured again at once, so the next login does not wait for the next pass.
//! Nothing here runs on a login's path but a map lookup.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use labssh_proto::pb;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backend::SharedBackend;
use crate::catalogue::Catalogue;
use crate::inventory::Inventory;

/// Bytes per MiB, the unit of the catalogue's `*_quota_mb`.
const MIB: u64 = 1024 * 1024;

/// Figures by student, as last measured.
#[derive(Default)]
pub struct DiskQuotas {
    figures: Mutex<Figures>,
    /// (user, environment) to measure before the next pass.
    soon: Mutex<Vec<(String, String)>>,
    /// Wakes the measuring task for `soon`.
    wake: Notify,
}

#[derive(Default)]
struct Figures {
    /// Home volumes, by user (one volume for all their environments).
    home: HashMap<String, Figure>,
    /// Writable layers, by (user, environment).
    layer: HashMap<(String, String), Figure>,
}

/// One measurement.
#[derive(Debug, Clone, Copy)]
struct Figure {
    bytes: u64,
    at: Instant,
}

/// A shell or command refused because the student is over a quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverQuota {
    /// The home volume.
    #[error("your home directory uses {} of its {} quota ({} over, measured {} ago); delete files with sftp (still allowed) and log in again", Mb(*used), Mb(*quota), Over(*used, *quota), Age(*age))]
    Home {
        /// Bytes used.
        used: u64,
        /// Bytes allowed.
        quota: u64,
        /// How old the figure is.
        age: Duration,
    },
    /// The container's writable layer.
    #[error("your container's files outside your home (in /tmp, say) use {} of the {} allowed ({} over, measured {} ago); delete files with sftp (still allowed) and log in again", Mb(*used), Mb(*quota), Over(*used, *quota), Age(*age))]
    Layer {
        /// Bytes used.
        used: u64,
        /// Bytes allowed.
        quota: u64,
        /// How old the figure is.
        age: Duration,
    },
}

impl DiskQuotas {
    fn figures(&self) -> std::sync::MutexGuard<'_, Figures> {
        self.figures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses when the last figures put `user` over a quota of `env`. No figure yet
    /// (a new container, or an agent just started) lets them in.
    pub fn check(&self, user: &str, env: &pb::Environment) -> Result<(), OverQuota> {
        let figures = self.figures();
        let over = |figure: Option<&Figure>, quota_mb: u64| {
            let quota = quota_mb.saturating_mul(MIB);
            figure
                .filter(|f| quota_mb > 0 && f.bytes > quota)
                .map(|f| (f.bytes, quota, f.at.elapsed()))
        };
        if let Some((used, quota, age)) = over(figures.home.get(user), env.home_quota_mb) {
            return Err(OverQuota::Home { used, quota, age });
        }
        let key = (user.to_owned(), env.name.clone());
        if let Some((used, quota, age)) = over(figures.layer.get(&key), env.layer_quota_mb) {
            return Err(OverQuota::Layer { used, quota, age });
        }
        Ok(())
    }

    /// Has `user`'s container for `env` measured before the next pass (after they
    /// deleted files, say).
    pub fn measure_soon(&self, user: &str, env: &str) {
        let mut soon = self.soon.lock().unwrap_or_else(|e| e.into_inner());
        let key = (user.to_owned(), env.to_owned());
        if !soon.contains(&key) {
            soon.push(key);
        }
        drop(soon);
        self.wake.notify_one();
    }

    /// Measures every running container under a quota every `interval`, and those
    /// asked for by [`DiskQuotas::measure_soon`] in between, until `stop`.
    pub async fn measure_loop(
        self: Arc<Self>,
        backend: SharedBackend,
        inventory: Arc<Inventory>,
        catalogue: Arc<Catalogue>,
        interval: Duration,
        stop: CancellationToken,
    ) {
        loop {
            let status = inventory.status();
            let mut current = HashSet::new();
            let mut homes_done = HashSet::new();
            for c in &status.inventory {
                if stop.is_cancelled() {
                    return;
                }
                if c.state != pb::ContainerState::Running as i32 {
                    // Stopped containers cannot write; keep what was measured.
                    current.insert((c.user.clone(), c.environment.clone()));
                    continue;
                }
                let Ok(env) = catalogue.get(&c.environment) else {
                    continue;
                };
                current.insert((c.user.clone(), c.environment.clone()));
                let mut env = env;
                // One home for all of a student's environments: measure it once.
                if !homes_done.insert(c.user.clone()) {
                    env.home_quota_mb = 0;
                }
                self.measure(&backend, &c.user, &env).await;
            }
            self.forget_except(&current);
            let next = tokio::time::Instant::now() + interval;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(next) => break,
                    _ = self.wake.notified() => {}
                }
                let asked: Vec<_> =
                    std::mem::take(&mut *self.soon.lock().unwrap_or_else(|e| e.into_inner()));
                for (user, env) in asked {
                    if let Ok(env) = catalogue.get(&env) {
                        self.measure(&backend, &user, &env).await;
                    }
                }
            }
        }
    }

    /// Measures one container and records the figures; a failure keeps the old ones.
    async fn measure(&self, backend: &SharedBackend, user: &str, env: &pb::Environment) {
        if env.home_quota_mb == 0 && env.layer_quota_mb == 0 {
            return;
        }
        let usage = match backend.disk_usage(user, env).await {
            Ok(usage) => usage,
            Err(e) => {
                tracing::debug!(user, environment = %env.name, error = %e, "cannot measure disk usage");
                return;
            }
        };
        let at = Instant::now();
        let mut figures = self.figures();
        if let Some(bytes) = usage.home_bytes {
            tracing::debug!(user, mb = bytes / MIB, "home measured");
            figures.home.insert(user.to_owned(), Figure { bytes, at });
        }
        let key = (user.to_owned(), env.name.clone());
        match usage.layer_bytes {
            Some(bytes) => {
                tracing::debug!(user, environment = %env.name, mb = bytes / MIB, "writable layer measured");
                figures.layer.insert(key, Figure { bytes, at });
            }
            None if env.layer_quota_mb > 0 => {
                // Enforced by the storage driver, or not measurable: nothing to hold.
                figures.layer.remove(&key);
            }
            None => {}
        }
    }

    /// Drops the figures of containers that are gone.
    fn forget_except(&self, current: &HashSet<(String, String)>) {
        let mut figures = self.figures();
        figures.layer.retain(|key, _| current.contains(key));
        let users: HashSet<&String> = current.iter().map(|(u, _)| u).collect();
        figures.home.retain(|user, _| users.contains(user));
    }

    /// Records figures as measured now.
    #[cfg(test)]
    fn record(&self, user: &str, env: &str, home: Option<u64>, layer: Option<u64>) {
        let at = Instant::now();
        let mut figures = self.figures();
        if let Some(bytes) = home {
            figures.home.insert(user.to_owned(), Figure { bytes, at });
        }
        if let Some(bytes) = layer {
            figures
                .layer
                .insert((user.to_owned(), env.to_owned()), Figure { bytes, at });
        }
    }
}

/// Bytes as whole MiB with thousands separators, to the nearest ("1,234 MB").
struct Mb(u64);

impl fmt::Display for Mb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = (self.0.saturating_add(MIB / 2) / MIB).to_string();
        // Groups of three from the right: the first group takes what is left over.
        let (first, rest) = digits.split_at(digits.len() % 3);
        let groups = std::iter::once(first).filter(|g| !g.is_empty()).chain(
            rest.as_bytes()
                .chunks(3)
                .filter_map(|g| std::str::from_utf8(g).ok()),
        );
        let out = groups.collect::<Vec<_>>().join(",");
        write!(f, "{out} MB")
    }
}

/// How far `used` bytes are over `quota` bytes, as the difference of the rounded
/// figures shown beside it, and at least 1 MB.
struct Over(u64, u64);

impl fmt::Display for Over {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = |b: u64| b.saturating_add(MIB / 2) / MIB;
        let over = mb(self.0).saturating_sub(mb(self.1)).max(1);
        Mb(over.saturating_mul(MIB)).fmt(f)
    }
}

/// A figure's age in words.
struct Age(Duration);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            0..=119 => write!(f, "{secs} s"),
            120..=7199 => write!(f, "{} min", secs / 60),
            _ => write!(f, "{} h", secs / 3600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(home_mb: u64, layer_mb: u64) -> pb::Environment {
        pb::Environment {
            name: "default".into(),
            home_quota_mb: home_mb,
            layer_quota_mb: layer_mb,
            ..Default::default()
        }
    }

    #[test]
    fn over_quota_says_what_by_how_much_and_what_to_do() {
        let q = DiskQuotas::default();
        assert!(q.check("alice", &env(5, 5)).is_ok(), "no figure yet");
        q.record("alice", "default", Some(1294 * MIB - 100), Some(MIB));
        let e = q.check("alice", &env(1024, 5)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "your home directory uses 1,294 MB of its 1,024 MB quota (270 MB over, measured 0 s ago); delete files with sftp (still allowed) and log in again"
        );
        // Without a home quota, or with one large enough, the home is fine.
        assert!(q.check("alice", &env(0, 5)).is_ok());
        assert!(q.check("alice", &env(2000, 5)).is_ok());
        q.record("alice", "default", None, Some(8 * MIB));
        let e = q.check("alice", &env(0, 5)).unwrap_err();
        assert!(
            matches!(e, OverQuota::Layer { .. })
                && e.to_string()
                    .contains("8 MB of the 5 MB allowed (3 MB over"),
            "{e}"
        );
        // Another student and another environment are not affected.
        assert!(q.check("bob", &env(1, 1)).is_ok());
        let other = pb::Environment {
            name: "gpu".into(),
            ..env(0, 5)
        };
        assert!(q.check("alice", &other).is_ok());
    }

    #[test]
    fn figures_of_removed_containers_are_dropped() {
        let q = DiskQuotas::default();
        q.record("alice", "default", Some(9 * MIB), Some(9 * MIB));
        q.record("bob", "default", Some(9 * MIB), Some(9 * MIB));
        q.forget_except(&[("bob".to_owned(), "default".to_owned())].into());
        assert!(q.check("alice", &env(5, 5)).is_ok());
        assert!(q.check("bob", &env(5, 5)).is_err());
    }

    #[test]
    fn words() {
        assert_eq!(Mb(0).to_string(), "0 MB");
        assert_eq!(Mb(1).to_string(), "0 MB");
        assert_eq!(Mb(8 * MIB + 8192).to_string(), "8 MB");
        assert_eq!(Over(8 * MIB + 8192, 5 * MIB).to_string(), "3 MB");
        assert_eq!(Over(5 * MIB + 1024, 5 * MIB).to_string(), "1 MB");
        assert_eq!(Over(3000 * MIB, 1000 * MIB).to_string(), "2,000 MB");
        assert_eq!(Mb(999 * MIB).to_string(), "999 MB");
        assert_eq!(Mb(1_234_567 * MIB).to_string(), "1,234,567 MB");
        assert_eq!(Age(Duration::from_secs(4)).to_string(), "4 s");
        assert_eq!(Age(Duration::from_secs(600)).to_string(), "10 min");
        assert_eq!(Age(Duration::from_secs(7200)).to_string(), "2 h");
    }
}
