//! One lazily-connected Redis connection per replica, shared by the
//! credential cache and the brute-force limits.
//!
//! Redis is an accelerator, never a dependency: every caller has a local
//! fallback, so when Redis is down (or slow) logins go on, and the link
//! retries in the background of later calls.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

/// A login must never wait long on a sick Redis.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// After Redis fails, don't try to reconnect on every login.
const RETRY_AFTER: Duration = Duration::from_secs(2);

enum State {
    Untried,
    Connected(ConnectionManager),
    Down { since: Instant },
}

/// Shared Redis connection with a circuit breaker.
pub struct RedisLink {
    /// Client used to (re)connect.
    client: redis::Client,
    /// Live connection, or when it last failed.
    state: Mutex<State>,
}

impl RedisLink {
    /// Validates the URL; connects on first use.
    pub fn new(url: &str) -> redis::RedisResult<RedisLink> {
        Ok(RedisLink {
            client: redis::Client::open(url)?,
            state: Mutex::new(State::Untried),
        })
    }

    /// A connection, or `None` while Redis is considered down.
    pub async fn conn(&self) -> Option<ConnectionManager> {
        let mut state = self.state.lock().await;
        match &*state {
            State::Connected(c) => return Some(c.clone()),
            State::Down { since } if since.elapsed() < RETRY_AFTER => return None,
            _ => {}
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let result = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await;
        match result {
            Ok(Ok(c)) => {
                tracing::info!("connected to Redis");
                *state = State::Connected(c.clone());
                Some(c)
            }
            Ok(Err(e)) => {
                tracing::warn!("Redis unavailable, using per-replica fallbacks: {e}");
                *state = State::Down {
                    since: Instant::now(),
                };
                None
            }
            Err(_) => {
                tracing::warn!("Redis unavailable, using per-replica fallbacks: connect timed out");
                *state = State::Down {
                    since: Instant::now(),
                };
                None
            }
        }
    }

    /// Runs one command with the link's timeout; failures open the breaker.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut conn = self.conn().await?;
        self.bounded(cmd.query_async::<T>(&mut conn)).await
    }

    /// Runs a pipeline with the link's timeout; failures open the breaker.
    pub async fn pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Option<T> {
        let mut conn = self.conn().await?;
        self.bounded(pipe.query_async::<T>(&mut conn)).await
    }

    /// Awaits a Redis call for at most [`REDIS_TIMEOUT`].
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let why = match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        self.failed(&why).await;
        None
    }

    async fn failed(&self, why: &str) {
        tracing::warn!("Redis error, using per-replica fallbacks: {why}");
        *self.state.lock().await = State::Down {
            since: Instant::now(),
        };
    }
}
