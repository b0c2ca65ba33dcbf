//! Brute-force protection shared by all replicas through Redis.
//!
//! Failed password attempts are counted per source address and per
//! username over a window. Past a threshold, attempts are refused before any
//! password check until the window passes with no new failures. A success
//! clears the username's count. With Redis down each replica counts on its
//! own, so protection weakens to per-replica but never disappears.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::redis_link::RedisLink;

/// Redis key prefix; the version lets the format change safely.
const KEY_PREFIX: &str = "labssh:rl:v1:";
/// Bound on the local fallback table so a spray of addresses can't grow it
/// without limit.
const LOCAL_MAX_ENTRIES: usize = 100_000;

/// Brute-force limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Failures from one address before it is blocked; 0 disables.
    pub max_failures_per_address: u32,
    /// Failures for one username before it is blocked; 0 disables.
    pub max_failures_per_user: u32,
    /// Counting window, and the back-off after the last failure.
    pub window_secs: u64,
    /// Addresses or CIDRs never blocked per address (e.g. the campus NAT a
    /// whole class shares); the per-user limit still applies to them.
    pub exempt_addresses: Vec<String>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        // A student who mistypes a few times is never blocked, nor is a
        // class of 300 sharing one NAT address where some mistype; a script
        // trying a wordlist is stopped after ten guesses per account.
        RateLimitConfig {
            max_failures_per_address: 100,
            max_failures_per_user: 10,
            window_secs: 300,
            exempt_addresses: Vec::new(),
        }
    }
}

impl RateLimitConfig {
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.window_secs == 0 {
            p.push("rate_limit.window_secs: must be greater than 0".into());
        }
        for (i, entry) in self.exempt_addresses.iter().enumerate() {
            if parse_net(entry).is_none() {
                p.push(format!(
                    "rate_limit.exempt_addresses[{i}]: {entry:?} is not an address or CIDR"
                ));
            }
        }
        p
    }
}

fn parse_net(entry: &str) -> Option<ipnet::IpNet> {
    labssh_proto::net::parse_net(entry).ok()
}

/// Whether an attempt may proceed to the password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead; carries the username's current failure count so a success
    /// only touches Redis when there is something to clear.
    Allowed { user_failures: u32 },
    /// Blocked; the reason is for the log only.
    Blocked(String),
}

/// Failure counters.
pub struct RateLimiter {
    /// Thresholds and window.
    config: RateLimitConfig,
    /// Shared counters, when Redis is configured.
    redis: Option<Arc<RedisLink>>,
    /// Per-replica counters: key → (count, expiry).
    local: Mutex<HashMap<String, (u32, Instant)>>,
    /// Networks exempt from the per-address limit.
    exempt: Vec<ipnet::IpNet>,
}

fn addr_key(ip: IpAddr) -> String {
    format!("{KEY_PREFIX}addr:{}", ip.to_canonical())
}

fn user_key(user: &str) -> String {
    format!("{KEY_PREFIX}user:{user}")
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig, redis: Option<Arc<RedisLink>>) -> Self {
        let exempt = config
            .exempt_addresses
            .iter()
            .filter_map(|e| parse_net(e))
            .collect();
        RateLimiter {
            exempt,
            config,
            redis,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.config.window_secs)
    }

    fn judge(&self, addr: u32, user: u32, ip: Option<IpAddr>, name: &str) -> Verdict {
        let (max_addr, max_user) = (
            self.config.max_failures_per_address,
            self.config.max_failures_per_user,
        );
        if max_addr > 0 && addr >= max_addr {
            return Verdict::Blocked(format!(
                "address {} has {addr} recent failures (limit {max_addr})",
                ip.map(|i| i.to_string()).unwrap_or_default()
            ));
        }
        if max_user > 0 && user >= max_user {
            return Verdict::Blocked(format!(
                "user {name} has {user} recent failures (limit {max_user})"
            ));
        }
        Verdict::Allowed {
            user_failures: user,
        }
    }

    /// The address to count, unless it is exempt.
    fn counted(&self, ip: Option<IpAddr>) -> Option<IpAddr> {
        ip.filter(|ip| {
            let ip = ip.to_canonical();
            !self.exempt.iter().any(|net| net.contains(&ip))
        })
    }

    /// May this attempt be checked at all?
    pub async fn check(&self, ip: Option<IpAddr>, user: &str) -> Verdict {
        let ip = self.counted(ip);
        let keys = [ip.map(addr_key), Some(user_key(user))];
        let counts = self.counts(&keys).await;
        self.judge(counts[0], counts[1], ip, user)
    }

    async fn counts(&self, keys: &[Option<String>; 2]) -> [u32; 2] {
        if let Some(link) = &self.redis {
            let mut cmd = redis::cmd("MGET");
            for k in keys {
                cmd.arg(k.as_deref().unwrap_or("labssh:rl:v1:none"));
            }
            if let Some(values) = link.query::<Vec<Option<u32>>>(&cmd).await {
                return [values.first(), values.get(1)].map(|v| v.copied().flatten().unwrap_or(0));
            }
        }
        let now = Instant::now();
        let local = self.local.lock().expect("rate limit lock");
        keys.clone().map(|k| {
            k.and_then(|k| local.get(&k).copied())
                .filter(|(_, expiry)| *expiry > now)
                .map(|(n, _)| n)
                .unwrap_or(0)
        })
    }

    /// Counts a failed (or blocked) attempt.
    pub async fn failure(&self, ip: Option<IpAddr>, user: &str) {
        let ip = self.counted(ip);
        let keys: Vec<String> = ip
            .map(addr_key)
            .into_iter()
            .chain([user_key(user)])
            .collect();
        if let Some(link) = &self.redis {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("INCR").arg(k).ignore();
                pipe.cmd("EXPIRE")
                    .arg(k)
                    .arg(self.config.window_secs)
                    .ignore();
            }
            if link.pipe::<()>(&pipe).await.is_some() {
                return;
            }
        }
        let now = Instant::now();
        let expiry = now + self.window();
        let mut local = self.local.lock().expect("rate limit lock");
        if local.len() >= LOCAL_MAX_ENTRIES {
            local.retain(|_, (_, e)| *e > now);
        }
        for k in keys {
            let entry = local.entry(k).or_insert((0, expiry));
            if entry.1 <= now {
                entry.0 = 0;
            }
            *entry = (entry.0.saturating_add(1), expiry);
        }
    }

    /// A success clears the username's failures (not the address's: one
    /// student logging in must not unblock a scanner sharing their NAT).
    pub async fn success(&self, user: &str) {
        let key = user_key(user);
        self.local.lock().expect("rate limit lock").remove(&key);
        if let Some(link) = &self.redis {
            let _: Option<()> = link.query(redis::cmd("DEL").arg(&key)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(addr: u32, user: u32) -> RateLimiter {
        RateLimiter::new(
            RateLimitConfig {
                max_failures_per_address: addr,
                max_failures_per_user: user,
                window_secs: 60,
                exempt_addresses: vec!["198.51.100.0/24".into()],
            },
            None,
        )
    }

    #[tokio::test]
    async fn address_is_blocked_after_threshold_others_are_not() {
        let rl = limiter(3, 100);
        let bad: IpAddr = "203.0.113.9".parse().unwrap();
        let good: IpAddr = "198.51.100.1".parse().unwrap();
        for i in 0..3 {
            assert!(matches!(
                rl.check(Some(bad), &format!("u{i}")).await,
                Verdict::Allowed { .. }
            ));
            rl.failure(Some(bad), &format!("u{i}")).await;
        }
        assert!(matches!(
            rl.check(Some(bad), "alice").await,
            Verdict::Blocked(_)
        ));
        assert!(matches!(
            rl.check(Some(good), "alice").await,
            Verdict::Allowed { .. }
        ));
    }

    #[tokio::test]
    async fn user_is_blocked_and_success_clears_it() {
        let rl = limiter(100, 2);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        rl.failure(Some(ip), "alice").await;
        rl.failure(Some(ip), "alice").await;
        assert!(matches!(
            rl.check(Some(ip), "alice").await,
            Verdict::Blocked(_)
        ));
        assert!(matches!(
            rl.check(Some(ip), "bob").await,
            Verdict::Allowed { .. }
        ));
        rl.success("alice").await;
        assert!(matches!(
            rl.check(Some(ip), "alice").await,
            Verdict::Allowed { .. }
        ));
    }

    #[tokio::test]
    async fn zero_disables_a_limit() {
        let rl = limiter(0, 0);
        for _ in 0..50 {
            rl.failure(None, "alice").await;
        }
        assert!(matches!(
            rl.check(None, "alice").await,
            Verdict::Allowed { .. }
        ));
    }

    #[tokio::test]
    async fn redis_down_falls_back_to_local_counts() {
        let link = Arc::new(RedisLink::new("redis://127.0.0.1:1/").unwrap());
        let rl = RateLimiter::new(
            RateLimitConfig {
                max_failures_per_address: 2,
                max_failures_per_user: 0,
                window_secs: 60,
                exempt_addresses: Vec::new(),
            },
            Some(link),
        );
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        rl.failure(Some(ip), "x").await;
        rl.failure(Some(ip), "y").await;
        assert!(matches!(rl.check(Some(ip), "z").await, Verdict::Blocked(_)));
    }
}
