//! Brute-force protection shared by all replicas through Redis.
//!
//! Failed password attempts are counted three ways, each over a window that
//! starts at its first failure:
//!
//! - per source address: past `max_failures_per_address` the address is
//!   refused before any password check (a scanner), unless it is exempt;
//! - per user *and* source address: past `max_failures_per_user` that pair is
//!   refused. This is what stops a guesser on one account, and it refuses only
//!   the guesser's address: the student logging in from anywhere else is never
//!   locked out by someone else's failures. From an exempt address (a NAT the
//!   guesser may share with the student) the pair only slows down;
//! - per user from all addresses together: only slows down, with a delay
//!   before the password check that grows with the count and is capped at
//!   [`SLOWDOWN_MAX`]. It never refuses, so a correct password always gets in.
//!
//! Refused attempts are not counted and do not move the window: knocking while
//! blocked cannot prolong a block, so a block ends `window_secs` after the
//! failure that started its window. A success clears the user's counts (the
//! pair's and the user's, not the address's: one student logging in must not
//! unblock a scanner sharing their NAT). Public-key logins never consult the
//! limiter. With Redis down each replica counts on its own, the same way, so
//! protection weakens to per-replica but never disappears.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
// tokio's clock, so tests can move time on; the same as std's outside them.
use tokio::time::Instant;

use crate::redis_link::RedisLink;

/// Redis key prefix; the version lets the format change safely.
const KEY_PREFIX: &str = "labssh:rl:v1:";
/// Bound on the local fallback table so a spray of addresses can't grow it
/// without limit.
const LOCAL_MAX_ENTRIES: usize = 100_000;
/// Failures of one user that cost nothing: a student's own typos.
pub const SLOWDOWN_FREE_FAILURES: u32 = 3;
/// The first delay past those, doubling with each further failure: a person
/// barely notices it, a script's guessing rate halves at once.
pub const SLOWDOWN_FIRST: Duration = Duration::from_millis(250);
/// The most anyone's failures can make a student wait before their password is
/// checked, and what each further guess costs a script on one connection.
pub const SLOWDOWN_MAX: Duration = Duration::from_secs(3);

/// Brute-force limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Failures from one address (any users) before it is refused; 0 disables.
    pub max_failures_per_address: u32,
    /// Failures for one user from one address before that pair is refused
    /// (from an exempt address: slowed down only); 0 disables this limit and
    /// the per-user slow-down.
    pub max_failures_per_user: u32,
    /// Counting window, from the first failure; also how long a block lasts.
    pub window_secs: u64,
    /// Addresses or CIDRs never refused (e.g. the campus NAT a whole class
    /// shares): neither per address nor per user and address; failures from
    /// them still slow attempts for the users concerned.
    pub exempt_addresses: Vec<String>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        // A student who mistypes a few times is never blocked, nor is a
        // class of 300 sharing one NAT address where some mistype; a script
        // trying a wordlist from one address gets ten guesses per account.
        RateLimitConfig {
            max_failures_per_address: 100,
            max_failures_per_user: 10,
            window_secs: 300,
            exempt_addresses: Vec::new(),
        }
    }
}

impl RateLimitConfig {
    /// `exempt_addresses`, parsed (a validated config has no bad entry).
    pub(crate) fn exempt_nets(&self) -> Vec<ipnet::IpNet> {
        self.exempt_addresses
            .iter()
            .filter_map(|e| parse_net(e))
            .collect()
    }

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
    /// Go ahead, after waiting `delay` (zero unless the user's password has
    /// been failing); `failures` says whether a success has counts to clear.
    Allowed { delay: Duration, failures: bool },
    /// Refused before any check; the reason is for the log only.
    Blocked(String),
}

/// How long to wait before checking a password of a user with `failures`
/// recent failures: nothing for the first few, then doubling up to the cap.
pub fn slowdown(failures: u32) -> Duration {
    match failures.saturating_sub(SLOWDOWN_FREE_FAILURES) {
        0 => Duration::ZERO,
        over => {
            let factor = 1u32.checked_shl(over - 1).unwrap_or(u32::MAX);
            SLOWDOWN_FIRST.saturating_mul(factor).min(SLOWDOWN_MAX)
        }
    }
}

/// The counters one attempt touches.
struct Keys {
    /// The source address's, unless it is unknown or exempt.
    address: Option<String>,
    /// The (user, source address) pair's, if the address is known.
    pair: Option<String>,
    /// The user's, from all addresses.
    user: String,
}

impl Keys {
    fn all(&self) -> impl Iterator<Item = &String> {
        self.address.iter().chain(&self.pair).chain([&self.user])
    }
}

/// Recent failures in each counter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    address: u32,
    pair: u32,
    user: u32,
}

/// Failure counters.
pub struct RateLimiter {
    /// Thresholds and window.
    config: RateLimitConfig,
    /// Shared counters, when Redis is configured.
    redis: Option<Arc<RedisLink>>,
    /// Per-replica counters: key → (count, end of its window).
    local: Mutex<HashMap<String, (u32, Instant)>>,
    /// Networks exempt from refusals.
    exempt: Vec<ipnet::IpNet>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig, redis: Option<Arc<RedisLink>>) -> Self {
        let exempt = config.exempt_nets();
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

    fn is_exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.exempt.iter().any(|net| net.contains(&ip))
    }

    fn keys(&self, ip: Option<IpAddr>, user: &str) -> Keys {
        let ip = ip.map(|ip| ip.to_canonical());
        Keys {
            address: ip
                .filter(|ip| !self.is_exempt(*ip))
                .map(|ip| format!("{KEY_PREFIX}addr:{ip}")),
            pair: ip.map(|ip| format!("{KEY_PREFIX}pair:{ip}:{user}")),
            user: format!("{KEY_PREFIX}user:{user}"),
        }
    }

    /// The decision, from the counts alone.
    fn judge(&self, counts: Counts, ip: Option<IpAddr>, user: &str) -> Verdict {
        let (max_addr, max_user) = (
            self.config.max_failures_per_address,
            self.config.max_failures_per_user,
        );
        let exempt = ip.is_some_and(|ip| self.is_exempt(ip));
        let shown = ip.map(|i| i.to_canonical().to_string()).unwrap_or_default();
        if !exempt && max_addr > 0 && counts.address >= max_addr {
            return Verdict::Blocked(format!(
                "address {shown} has {} recent failures (limit {max_addr})",
                counts.address
            ));
        }
        if !exempt && max_user > 0 && counts.pair >= max_user {
            return Verdict::Blocked(format!(
                "user {user} from {shown} has {} recent failures (limit {max_user})",
                counts.pair
            ));
        }
        let delay = if max_user > 0 {
            slowdown(counts.user.max(counts.pair))
        } else {
            Duration::ZERO
        };
        Verdict::Allowed {
            delay,
            failures: counts.pair > 0 || counts.user > 0,
        }
    }

    /// May this attempt be checked at all, and after what delay?
    pub async fn check(&self, ip: Option<IpAddr>, user: &str) -> Verdict {
        let keys = self.keys(ip, user);
        let counts = self.counts(&keys).await;
        self.judge(counts, ip, user)
    }

    async fn counts(&self, keys: &Keys) -> Counts {
        let all: Vec<&String> = keys.all().collect();
        let values = match &self.redis {
            Some(link) => link
                .query::<Vec<Option<u32>>>(redis::cmd("MGET").arg(&all))
                .await
                .filter(|v| v.len() == all.len()),
            None => None,
        };
        let values: Vec<u32> = match values {
            Some(v) => v.into_iter().map(Option::unwrap_or_default).collect(),
            None => {
                let now = Instant::now();
                let local = self.local.lock().expect("rate limit lock");
                all.iter()
                    .map(|k| match local.get(*k) {
                        Some((n, end)) if *end > now => *n,
                        _ => 0,
                    })
                    .collect()
            }
        };
        // `all` is address (if any), pair (if any), user, in that order.
        let mut v = values.into_iter();
        Counts {
            address: keys.address.as_ref().and_then(|_| v.next()).unwrap_or(0),
            pair: keys.pair.as_ref().and_then(|_| v.next()).unwrap_or(0),
            user: v.next().unwrap_or(0),
        }
    }

    /// Counts a failed password check (never a refused attempt: that would let
    /// knocking prolong a block).
    pub async fn failure(&self, ip: Option<IpAddr>, user: &str) {
        let keys = self.keys(ip, user);
        if let Some(link) = &self.redis {
            // The window starts with the key and is never moved: SET ... NX
            // creates it with its expiry only if it is not there. In one
            // transaction, so the key cannot expire between the two and come
            // back from INCR without one.
            let mut pipe = redis::pipe();
            pipe.atomic();
            for k in keys.all() {
                pipe.cmd("SET")
                    .arg(k)
                    .arg(0)
                    .arg("EX")
                    .arg(self.config.window_secs)
                    .arg("NX")
                    .ignore();
                pipe.cmd("INCR").arg(k).ignore();
            }
            if link.pipe::<()>(&pipe).await.is_some() {
                return;
            }
        }
        let now = Instant::now();
        let window_end = now + self.window();
        let mut local = self.local.lock().expect("rate limit lock");
        if local.len() >= LOCAL_MAX_ENTRIES {
            local.retain(|_, (_, end)| *end > now);
        }
        for k in keys.all() {
            let entry = local.entry(k.clone()).or_insert((0, window_end));
            if entry.1 <= now {
                *entry = (0, window_end);
            }
            entry.0 = entry.0.saturating_add(1);
        }
    }

    /// A success clears the user's failures: from this address, and the
    /// slow-down from all of them.
    pub async fn success(&self, ip: Option<IpAddr>, user: &str) {
        let keys = self.keys(ip, user);
        let cleared: Vec<&String> = keys.pair.iter().chain([&keys.user]).collect();
        {
            let mut local = self.local.lock().expect("rate limit lock");
            for k in &cleared {
                local.remove(*k);
            }
        }
        if let Some(link) = &self.redis {
            let _: Option<()> = link.query(redis::cmd("DEL").arg(&cleared)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn limiter(addr: u32, user: u32) -> RateLimiter {
        RateLimiter::new(
            RateLimitConfig {
                max_failures_per_address: addr,
                max_failures_per_user: user,
                window_secs: WINDOW.as_secs(),
                exempt_addresses: vec!["198.51.100.0/24".into()],
            },
            None,
        )
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn blocked(v: &Verdict) -> bool {
        matches!(v, Verdict::Blocked(_))
    }

    fn delay(v: &Verdict) -> Duration {
        match v {
            Verdict::Allowed { delay, .. } => *delay,
            Verdict::Blocked(why) => panic!("blocked: {why}"),
        }
    }

    #[test]
    fn slowdown_grows_from_nothing_to_the_cap() {
        for n in 0..=SLOWDOWN_FREE_FAILURES {
            assert_eq!(slowdown(n), Duration::ZERO, "{n}");
        }
        let steps: Vec<Duration> = (SLOWDOWN_FREE_FAILURES + 1..SLOWDOWN_FREE_FAILURES + 40)
            .map(slowdown)
            .collect();
        assert_eq!(steps[0], SLOWDOWN_FIRST);
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
        assert!(steps[1] > steps[0]);
        assert_eq!(*steps.last().unwrap(), SLOWDOWN_MAX);
        assert_eq!(slowdown(u32::MAX), SLOWDOWN_MAX);
    }

    #[tokio::test]
    async fn address_is_blocked_after_threshold_others_are_not() {
        let rl = limiter(3, 100);
        let (bad, good) = (ip("203.0.113.9"), ip("192.0.2.1"));
        for i in 0..3 {
            assert!(!blocked(&rl.check(bad, &format!("u{i}")).await));
            rl.failure(bad, &format!("u{i}")).await;
        }
        assert!(blocked(&rl.check(bad, "alice").await));
        assert!(!blocked(&rl.check(good, "alice").await));
    }

    #[tokio::test]
    async fn a_user_is_refused_only_from_the_failing_address_and_slowed_elsewhere() {
        let rl = limiter(100, 10);
        let (attacker, student) = (ip("203.0.113.9"), ip("192.0.2.1"));
        for _ in 0..50 {
            rl.failure(attacker, "bob").await;
        }
        let v = rl.check(attacker, "bob").await;
        assert!(blocked(&v), "{v:?}");
        let v = rl.check(student, "bob").await;
        assert_eq!(delay(&v), SLOWDOWN_MAX, "slowed, not refused");
        assert_eq!(delay(&rl.check(attacker, "alice").await), Duration::ZERO);
        rl.success(student, "bob").await;
        assert_eq!(delay(&rl.check(student, "bob").await), Duration::ZERO);
        assert!(
            blocked(&rl.check(attacker, "bob").await),
            "bob logging in elsewhere does not unblock the attacker's address"
        );
    }

    #[tokio::test]
    async fn an_exempt_address_is_never_refused_only_slowed() {
        let rl = limiter(3, 3);
        let nat = ip("198.51.100.7");
        for _ in 0..50 {
            rl.failure(nat, "bob").await;
        }
        assert_eq!(delay(&rl.check(nat, "bob").await), SLOWDOWN_MAX);
        assert_eq!(delay(&rl.check(nat, "alice").await), Duration::ZERO);
    }

    #[tokio::test]
    async fn zero_disables_a_limit() {
        let rl = limiter(0, 0);
        for _ in 0..50 {
            rl.failure(ip("203.0.113.9"), "alice").await;
        }
        assert_eq!(
            delay(&rl.check(ip("203.0.113.9"), "alice").await),
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_starts_at_the_first_failure_and_knocking_does_not_move_it() {
        let rl = limiter(2, 2);
        let attacker = ip("203.0.113.9");
        rl.failure(attacker, "bob").await;
        tokio::time::advance(WINDOW / 2).await;
        rl.failure(attacker, "bob").await;
        // Blocked; the attacker keeps knocking (refused, so never counted).
        let mut knocked = Duration::ZERO;
        while knocked < WINDOW / 2 - Duration::from_secs(1) {
            assert!(blocked(&rl.check(attacker, "bob").await));
            tokio::time::advance(Duration::from_secs(1)).await;
            knocked += Duration::from_secs(1);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let v = rl.check(attacker, "bob").await;
        assert!(
            !blocked(&v),
            "window after the first failure is over: {v:?}"
        );
        // A new failure starts a new window of its own.
        rl.failure(attacker, "bob").await;
        assert!(!blocked(&rl.check(attacker, "bob").await));
        tokio::time::advance(WINDOW - Duration::from_secs(1)).await;
        rl.failure(attacker, "bob").await;
        assert!(blocked(&rl.check(attacker, "bob").await));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!blocked(&rl.check(attacker, "bob").await));
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
        let ip = ip("203.0.113.9");
        rl.failure(ip, "x").await;
        rl.failure(ip, "y").await;
        assert!(blocked(&rl.check(ip, "z").await));
    }
}
