//! Clients started together: every one is spawned first and held, then all
//! are released at once, so they really run in parallel.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::client::Endpoint;

/// Spawns `count` clients of `endpoint`, client i logging in as the
/// target's i-th user, and releases them at once. `client` builds each
/// client's work, which starts only on release. Returns the running
/// clients and when they were released.
pub fn start<F, Work>(
    endpoint: &Arc<Endpoint>,
    count: usize,
    client: F,
) -> (JoinSet<Work::Output>, Instant)
where
    F: Fn(Arc<Endpoint>, String) -> Work,
    Work: Future + Send + 'static,
    Work::Output: Send + 'static,
{
    let (go, ready) = watch::channel(false);
    let mut clients = JoinSet::new();
    for index in 0..count {
        let user = endpoint.target.users.for_client(index);
        let work = client(endpoint.clone(), user);
        let mut ready = ready.clone();
        clients.spawn(async move {
            // Wait until every client exists, so they really start together.
            let _ = ready.wait_for(|go| *go).await;
            work.await
        });
    }
    let released = Instant::now();
    let _ = go.send(true);
    (clients, released)
}
