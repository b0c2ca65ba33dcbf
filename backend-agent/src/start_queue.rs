//! The agent's start queue: at most `start_concurrency` containers are created or
//! started at once, first come first served across every proxy, session, forward and
//! listener; prestarts wait behind every student. A waiter is told its place as it
//! moves, leaves when its client does, and past `start_queue_limit` is refused at
//! once with a time to retry. Runtime-neutral: a backend awaits a [`Permit`] right
//! before its runtime work and holds it until the container is ready.

mod admission;
mod estimate;
mod wait;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

pub use admission::admission;
pub use estimate::seconds;
use estimate::Estimate;
pub use wait::{Caller, Place};

/// Containers created or started at once by default. Docker's own start throughput
/// stops growing at 4 at once on a 2-core node (`scripts/bench-docker-run.sh`,
/// BENCHMARKS.md "Class start"): more only makes each start wait longer.
pub const DEFAULT_START_CONCURRENCY: u32 = 4;
/// Students waiting at most by default: a large class's burst on one node.
pub const DEFAULT_START_QUEUE_LIMIT: u32 = 500;

/// Who waits: students go before prestarts, first come first served within each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A session, forward or listener of a student.
    Student,
    /// A container made ready ahead of a class (`EnsureRequest.prestart`).
    Prestart,
}

/// Why a place in the queue was not had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The queue is full: `starting` are started or waiting; retry in `retry` s.
    Full {
        /// Containers in flight and waiting.
        starting: usize,
        /// Whole seconds to wait before trying again, at least 1.
        retry: u64,
    },
    /// The client went away while waiting.
    Left,
}

/// The queue of one agent.
pub struct StartQueue {
    /// The agent's name, the label of its metrics.
    agent: String,
    /// Starts at once.
    concurrency: usize,
    /// Waiters at most, per class.
    limit: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Permits held.
    in_flight: usize,
    /// Numbers waiters.
    next_id: u64,
    /// Waiting students, oldest first.
    students: VecDeque<Waiter>,
    /// Waiting prestarts, oldest first.
    prestarts: VecDeque<Waiter>,
    /// How long starts take.
    estimate: Estimate,
}

/// One waiting caller, as the queue holds it.
struct Waiter {
    id: u64,
    /// Told when admitted (the permit is counted for it by then).
    admit: oneshot::Sender<()>,
    /// Its place, updated as the queue moves.
    place: watch::Sender<Place>,
}

/// A place among the starts in flight, held until the container is ready; dropping
/// it lets the next waiter in.
pub struct Permit {
    queue: Arc<StartQueue>,
    since: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let took = self.since.elapsed();
        let mut inner = self.queue.lock();
        inner.estimate.record(took);
        self.queue.release(&mut inner);
    }
}

impl StartQueue {
    /// A queue of `concurrency` starts at once and `limit` waiters per class, for
    /// agent `agent`.
    pub fn new(agent: &str, concurrency: u32, limit: u32) -> Arc<StartQueue> {
        let queue = Arc::new(StartQueue {
            agent: agent.to_owned(),
            concurrency: concurrency.max(1) as usize,
            limit: limit as usize,
            inner: Mutex::default(),
        });
        queue.record(&queue.lock());
        queue
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Students waiting now.
    pub fn waiting(&self) -> usize {
        self.lock().students.len()
    }

    /// Prestarts waiting now.
    pub fn waiting_prestarts(&self) -> usize {
        self.lock().prestarts.len()
    }

    /// Permits held now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Waits for a place for `caller`, telling it each new place; refused at once
    /// when the queue is full, or when the caller leaves.
    pub async fn admit(self: &Arc<Self>, caller: &Caller) -> Result<Permit, Refusal> {
        if caller.left.as_ref().is_some_and(|l| l.is_cancelled()) {
            // Gone while waiting for something else (its container's lock).
            return Err(Refusal::Left);
        }
        let waiting = {
            let mut inner = self.lock();
            if inner.in_flight < self.concurrency {
                inner.in_flight += 1;
                self.record(&inner);
                return Ok(self.permit());
            }
            let ahead = inner.students.len()
                + match caller.class {
                    Class::Student => 0,
                    Class::Prestart => inner.prestarts.len(),
                };
            let queued = match caller.class {
                Class::Student => inner.students.len(),
                Class::Prestart => inner.prestarts.len(),
            };
            if queued >= self.limit {
                let starting = inner.in_flight + inner.students.len() + inner.prestarts.len();
                let retry = seconds(inner.estimate.wait(ahead, self.concurrency));
                return Err(Refusal::Full { starting, retry });
            }
            let place = Place {
                ahead,
                about: inner.estimate.wait(ahead, self.concurrency),
            };
            let id = inner.next_id;
            inner.next_id += 1;
            let (admit, admitted) = oneshot::channel();
            let (place_tx, place_rx) = watch::channel(place);
            let waiter = Waiter {
                id,
                admit,
                place: place_tx,
            };
            match caller.class {
                Class::Student => inner.students.push_back(waiter),
                Class::Prestart => inner.prestarts.push_back(waiter),
            }
            self.record(&inner);
            wait::Waiting::new(self.clone(), id, admitted, place_rx)
        };
        waiting.until_admitted(caller).await?;
        Ok(self.permit())
    }

    fn permit(self: &Arc<Self>) -> Permit {
        Permit {
            queue: self.clone(),
            since: Instant::now(),
        }
    }

    /// A permit ends: the next waiter (students first) takes it.
    fn release(&self, inner: &mut Inner) {
        inner.in_flight = inner.in_flight.saturating_sub(1);
        while inner.in_flight < self.concurrency {
            let Some(next) = inner
                .students
                .pop_front()
                .or_else(|| inner.prestarts.pop_front())
            else {
                break;
            };
            // A waiter is in the queue only while it listens (see `leave`).
            if next.admit.send(()).is_ok() {
                inner.in_flight += 1;
            }
        }
        self.tell_places(inner);
        self.record(inner);
    }

    /// The waiter `id` went away: out of the queue, or, if it was admitted in the
    /// meantime, its permit handed on.
    fn leave(&self, id: u64) {
        let mut inner = self.lock();
        let before = inner.students.len() + inner.prestarts.len();
        inner.students.retain(|w| w.id != id);
        inner.prestarts.retain(|w| w.id != id);
        if inner.students.len() + inner.prestarts.len() == before {
            self.release(&mut inner);
        } else {
            self.tell_places(&inner);
            self.record(&inner);
        }
    }

    /// Tells every waiter its place now.
    fn tell_places(&self, inner: &Inner) {
        for (ahead, waiter) in inner.students.iter().chain(&inner.prestarts).enumerate() {
            let place = Place {
                ahead,
                about: inner.estimate.wait(ahead, self.concurrency),
            };
            waiter.place.send_if_modified(|old| {
                let changed = old.ahead != place.ahead;
                *old = place;
                changed
            });
        }
    }

    /// The queue's gauges.
    fn record(&self, inner: &Inner) {
        labssh_telemetry::metrics::start_queue(
            &self.agent,
            inner.students.len() as u64,
            inner.prestarts.len() as u64,
            inner.in_flight as u64,
        );
    }

    /// A waiter of `class` was admitted after `waited`.
    fn waited(&self, class: Class, waited: Duration) {
        let class = match class {
            Class::Student => "student",
            Class::Prestart => "prestart",
        };
        labssh_telemetry::metrics::start_wait(&self.agent, class, waited);
    }
}

#[cfg(test)]
mod tests;
