//! A password check: brute-force limits, then for each authenticator of the
//! chain in turn the credential cache and the authenticator itself.

use std::time::Instant;

use labssh_telemetry::metrics as telemetry;

use super::chain::{Answer, Request};
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
        let mut reasons = Vec::new();
        let mut unavailable = false;
        let mut last_lookup = "n/a";
        for authenticator in shared.auth.iter() {
            let name = authenticator.name();
            let stamp = authenticator.cache_stamp(shared, &login.user);
            if let Some(value) = &stamp {
                let stamp = Stamp {
                    authenticator: name,
                    value,
                };
                let lookup = shared.cache.lookup(&login.user, password, &stamp).await;
                telemetry::auth_cache_lookup(lookup.as_str());
                last_lookup = lookup.as_str();
                tracing::Span::current().record("cache", last_lookup);
                if let Lookup::Hit(identity) = lookup {
                    if failures {
                        limiter.success(self.ip, &login.user).await;
                    }
                    return self.accept(login, identity, method, last_lookup, started);
                }
            }
            let checking = Instant::now();
            let answer = authenticator.password(shared, &request, password).await;
            tracing::Span::current()
                .record("authenticator_seconds", checking.elapsed().as_secs_f64());
            telemetry::authenticator_answered(name, answer.as_str(), checking.elapsed());
            match answer {
                Answer::Accept(identity) => {
                    if failures {
                        limiter.success(self.ip, &login.user).await;
                    }
                    if let Some(value) = &stamp {
                        let stamp = Stamp {
                            authenticator: name,
                            value,
                        };
                        shared
                            .cache
                            .store(&login.user, password, &stamp, &identity)
                            .await;
                    }
                    return self.accept(login, identity, method, last_lookup, started);
                }
                Answer::Reject(why) => reasons.push(format!("{name}: {why}")),
                Answer::Unknown => reasons.push(format!("{name}: no such user or no password")),
                Answer::Unavailable(why) => {
                    unavailable = true;
                    reasons.push(format!("{name}: unavailable: {why}"));
                }
            }
        }
        let why = reasons.join("; ");
        if unavailable {
            // Not the student's fault: not counted towards the limits.
            return self.unavailable(&login, method, &why);
        }
        limiter.failure(self.ip, &login.user).await;
        self.reject(&login, method, &why)
    }
}
