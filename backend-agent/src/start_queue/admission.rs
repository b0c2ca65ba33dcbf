//! The start queue as an ensure's [`Admission`]: a place for one caller, refusals in
//! the runtime's words.

use std::sync::Arc;

use futures::FutureExt;

use super::{Caller, Refusal, StartQueue};
use crate::backend::{Admission, BackendError};

/// Waits in `queue` for `caller` when the backend asks.
pub fn admission(queue: Arc<StartQueue>, caller: Caller) -> Admission {
    Arc::new(move || {
        let (queue, caller) = (queue.clone(), caller.clone());
        async move {
            queue.admit(&caller).await.map_err(|refusal| match refusal {
                Refusal::Full { starting, retry } => BackendError::Busy { starting, retry },
                Refusal::Left => BackendError::LeftQueue,
            })
        }
        .boxed()
    })
}
