//! A password check: brute-force limits, then for each authenticator of the
//! chain in turn the credential cache and the authenticator itself.

use std::time::Instant;

use labssh_telemetry::metrics as telemetry;

use super::chain::{Answer, Decision, Request};
use super::{Client, Outcome};
use crate::credential_cache::{Lookup, Stamp};
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
        let request = Request {
            user: &login.user,
            environment: login.environment.as_deref(),
            method,
            client: &self.peer,
        };
        // What the last cache lookup found, for the log and the span.
        let cache = std::sync::Mutex::new("n/a");
        let decision = shared
            .auth
            .decide(|authenticator| {
                let (request, cache) = (&request, &cache);
                async move {
                    let value = authenticator.cache_stamp(shared, request.user);
                    let stamp = value.as_deref().map(|value| Stamp {
                        authenticator: authenticator.name(),
                        value,
                    });
                    if let Some(stamp) = &stamp {
                        let lookup = shared.cache.lookup(request.user, password, stamp).await;
                        telemetry::auth_cache_lookup(lookup.as_str());
                        *cache.lock().expect("cache label") = lookup.as_str();
                        tracing::Span::current().record("cache", lookup.as_str());
                        if let Lookup::Hit(identity) = lookup {
                            return Answer::Accept(identity);
                        }
                    }
                    let checking = Instant::now();
                    let answer = authenticator.password(shared, request, password).await;
                    tracing::Span::current()
                        .record("authenticator_seconds", checking.elapsed().as_secs_f64());
                    if let (Answer::Accept(identity), Some(stamp)) = (&answer, &stamp) {
                        shared
                            .cache
                            .store(request.user, password, stamp, identity)
                            .await;
                    }
                    answer
                }
            })
            .await;
        match decision {
            Decision::Accept(identity) => {
                if failures {
                    limiter.success(self.ip, &login.user).await;
                }
                let cache = *cache.lock().expect("cache label");
                self.accept(login, identity, method, cache, started)
            }
            // Not the student's fault: not counted towards the limits.
            Decision::Unavailable(why) => self.unavailable(&login, method, &why),
            Decision::Reject(why) => {
                limiter.failure(self.ip, &login.user).await;
                self.reject(&login, method, &why)
            }
        }
    }
}
