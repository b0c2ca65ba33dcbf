//! A password check: brute-force limits, the credential cache, argon2.

use std::time::Instant;

use labssh_telemetry::metrics as telemetry;

use super::{Client, Outcome};
use crate::credential_cache::Lookup;
use crate::login_name::LoginName;
use crate::rate_limit::Verdict;
use crate::state::Shared;

impl Client {
    /// Runs inside the attempt's `auth` span.
    pub(crate) async fn check_password(
        &self,
        shared: &Shared,
        login: LoginName,
        password: &str,
        method: &'static str,
    ) -> Outcome {
        let started = Instant::now();
        let limiter = &shared.limiter;
        let (delay, failures) = match limiter.check(self.ip, &login.user).await {
            Verdict::Allowed { delay, failures } => (delay, failures),
            // Not counted: knocking while blocked must not prolong the block.
            Verdict::Blocked(why) => {
                return self.reject(&login, method, &format!("blocked before checking: {why}"))
            }
        };
        if !delay.is_zero() {
            tracing::Span::current().record("delay_ms", delay.as_millis() as u64);
            tokio::time::sleep(delay).await;
        }
        let users = shared.users.current();
        let stored = users.get(&login.user).and_then(|u| u.password_hash.clone());
        // An unknown user, or one without a password, takes the same steps as a
        // wrong password (cache lookup, one argon2 verification) against a dummy
        // hash, so the time taken does not tell which accounts exist.
        let checked = stored
            .clone()
            .or_else(|| crate::users::dummy_hash().map(str::to_owned));
        let lookup = match &checked {
            Some(hash) => shared.cache.lookup(&login.user, password, hash).await,
            None => Lookup::Miss,
        };
        telemetry::auth_cache_lookup(lookup.as_str());
        tracing::Span::current().record("cache", lookup.as_str());
        if let (Lookup::Hit, Some(_)) = (lookup, &stored) {
            if failures {
                limiter.success(self.ip, &login.user).await;
            }
            return self.accept(login, method, lookup.as_str(), started);
        }
        let (pw, h) = (password.to_string(), stored.clone());
        let verifying = Instant::now();
        let ok =
            tokio::task::spawn_blocking(move || crate::users::password_matches(h.as_deref(), &pw))
                .await
                .unwrap_or(false);
        tracing::Span::current().record("authenticator_seconds", verifying.elapsed().as_secs_f64());
        let known = stored.is_some();
        let Some(hash) = stored.filter(|_| ok) else {
            limiter.failure(self.ip, &login.user).await;
            let why = if known {
                "wrong password"
            } else {
                "no such user or no password set"
            };
            return self.reject(&login, method, why);
        };
        if failures {
            limiter.success(self.ip, &login.user).await;
        }
        shared.cache.store(&login.user, password, &hash).await;
        self.accept(login, method, lookup.as_str(), started)
    }
}
