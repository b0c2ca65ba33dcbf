//! One caller waiting in the start queue: told its place as it changes (a few times a
//! second at most), out of the queue when it leaves or its wait is dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{seconds, Class, Refusal, StartQueue};

/// Place lines are sent this far apart at least; the latest place is sent then.
const MIN_GAP: Duration = Duration::from_millis(250);

/// A waiter's place: how many wait before it, and about how long until it is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Waiters before this one.
    pub ahead: usize,
    /// About how long its wait and start take.
    pub about: Duration,
}

impl Place {
    /// The student's line.
    pub fn line(&self) -> String {
        format!(
            "starting your container ({} ahead of you, about {} s)",
            self.ahead,
            seconds(self.about)
        )
    }
}

/// Tells a waiter its place.
pub type PlaceSink = Arc<dyn Fn(Place) + Send + Sync>;

/// Who asks for a place, and how they hear about it.
#[derive(Clone)]
pub struct Caller {
    /// Students first, then prestarts.
    pub class: Class,
    /// Told the place when queued and each time it changes.
    pub told: Option<PlaceSink>,
    /// Cancelled when the client is gone: the caller leaves the queue.
    pub left: Option<CancellationToken>,
}

impl Caller {
    /// A caller of `class` who is told nothing and never leaves.
    pub fn quiet(class: Class) -> Caller {
        Caller {
            class,
            told: None,
            left: None,
        }
    }
}

/// A place held in the queue; leaves it when dropped before admission.
pub(super) struct Waiting {
    queue: Arc<StartQueue>,
    id: u64,
    admitted: oneshot::Receiver<()>,
    place: watch::Receiver<Place>,
    /// Admitted and turned into a permit: nothing to leave.
    done: bool,
}

impl Waiting {
    /// The waiter `id` just queued.
    pub(super) fn new(
        queue: Arc<StartQueue>,
        id: u64,
        admitted: oneshot::Receiver<()>,
        place: watch::Receiver<Place>,
    ) -> Waiting {
        Waiting {
            queue,
            id,
            admitted,
            place,
            done: false,
        }
    }

    /// Waits until admitted (the permit is then counted), telling `caller` its place.
    pub(super) async fn until_admitted(mut self, caller: &Caller) -> Result<(), Refusal> {
        let since = Instant::now();
        let left = caller.left.clone().unwrap_or_default();
        let tell = |place: Place| {
            if let Some(told) = &caller.told {
                told(place);
            }
        };
        let mut last_told = *self.place.borrow_and_update();
        tell(last_told);
        let mut told_at = Instant::now();
        let mut pending = false;
        loop {
            tokio::select! {
                biased;
                admitted = &mut self.admitted => {
                    if admitted.is_err() {
                        // The queue never drops a listening waiter; treat as gone.
                        return Err(Refusal::Left);
                    }
                    self.done = true;
                    self.queue.waited(caller.class, since.elapsed());
                    return Ok(());
                }
                _ = left.cancelled() => return Err(Refusal::Left),
                changed = self.place.changed(), if !pending => {
                    if changed.is_err() {
                        return Err(Refusal::Left);
                    }
                    pending = true;
                }
                _ = tokio::time::sleep_until(told_at + MIN_GAP), if pending => {
                    let place = *self.place.borrow_and_update();
                    pending = false;
                    if place.ahead != last_told.ahead {
                        tell(place);
                        last_told = place;
                        told_at = Instant::now();
                    }
                }
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.done {
            self.queue.leave(self.id);
        }
    }
}
