//! A lane: the bounded queue between ingest and one target, with its overflow policy.
//!
//! Ingest pushes (never waits), delivery workers pop (and wait when it is empty). The queue is
//! a `VecDeque` under a mutex held for a few instructions and never across an await: that
//! gives each policy exactly — drop-oldest evicts and inserts in one step, reject reserves a
//! slot before any lane of the route is written to, and the oldest waiting event can be looked
//! at for `fanout_lane_oldest_age_seconds`.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

use crate::breaker::Breaker;
use crate::event::Event;
use crate::metrics::LaneMetrics;
use crate::spec::TargetSpec;

pub struct Lane {
    pub spec: &'static TargetSpec,
    queue: Mutex<Queue>,
    /// Wakes one idle delivery worker per pushed event (a permit is kept if none is idle).
    ready: Notify,
    pub metrics: LaneMetrics,
    /// Keeps delivery from hammering a dead target.
    pub breaker: Breaker,
}

struct Queue {
    events: VecDeque<Event>,
    /// Slots promised to reject-lane reservations that have not pushed yet.
    reserved: usize,
}

/// Why an event was refused: a reject lane of its route was full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Name of the full target.
    pub target: &'static str,
}

/// A slot held in a reject lane. Dropping it unused gives the slot back, so a route whose
/// second reject lane is full leaves the first one as it was.
#[must_use]
pub struct Reservation<'a> {
    lane: &'a Lane,
}

impl Lane {
    pub fn new(spec: &'static TargetSpec) -> Lane {
        Lane {
            spec,
            // Grows on demand up to `buffer`: an idle lane costs little however large it may get.
            queue: Mutex::new(Queue {
                events: VecDeque::with_capacity(spec.buffer.min(1024)),
                reserved: 0,
            }),
            ready: Notify::new(),
            metrics: LaneMetrics::new(spec),
            breaker: Breaker::new(&spec.breaker),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves the queue consistent (every critical section
        // is a single VecDeque call), so a poisoned lock is still usable.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a slot for an event, or refuses if the lane is full.
    pub fn reserve(&self) -> Result<Reservation<'_>, Rejected> {
        let mut queue = self.lock();
        if queue.events.len() + queue.reserved >= self.spec.buffer {
            return Err(Rejected {
                target: self.spec.name,
            });
        }
        queue.reserved += 1;
        Ok(Reservation { lane: self })
    }

    /// Enqueues `event`, evicting the oldest waiting event if the lane is full.
    pub fn push_drop_oldest(&self, event: Event) {
        let evicted = {
            let mut queue = self.lock();
            let evicted = if queue.events.len() >= self.spec.buffer {
                queue.events.pop_front()
            } else {
                None
            };
            queue.events.push_back(event);
            evicted
        };
        if evicted.is_some() {
            self.metrics.dropped_overflow.inc();
        }
        self.ready.notify_one();
    }

    /// Enqueues `event` unless the lane is full, in which case this lane drops it.
    pub fn push_drop_newest(&self, event: Event) {
        let pushed = {
            let mut queue = self.lock();
            if queue.events.len() + queue.reserved >= self.spec.buffer {
                false
            } else {
                queue.events.push_back(event);
                true
            }
        };
        if pushed {
            self.ready.notify_one();
        } else {
            self.metrics.dropped_overflow.inc();
        }
    }

    /// Takes the oldest waiting event, if any.
    pub fn pop(&self) -> Option<Event> {
        self.lock().events.pop_front()
    }

    /// Moves waiting events into `batch`, oldest first, while it holds fewer than
    /// `max_events` and their bodies (one line each) fit in `max_bytes`; `bytes` is what
    /// `batch` already holds. Takes at least one event when `batch` is empty. Returns the new
    /// byte count.
    pub fn pop_into(
        &self,
        batch: &mut Vec<Event>,
        mut bytes: usize,
        max_events: usize,
        max_bytes: usize,
    ) -> usize {
        let mut queue = self.lock();
        while batch.len() < max_events {
            let Some(next) = queue.events.front() else {
                break;
            };
            let size = next.body_len() + 1;
            if !batch.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            batch.extend(queue.events.pop_front());
        }
        bytes
    }

    /// Waits for the next event.
    pub async fn next(&self) -> Event {
        loop {
            if let Some(event) = self.pop() {
                return event;
            }
            self.ready.notified().await;
        }
    }

    /// Events waiting (not yet taken by a worker).
    pub fn depth(&self) -> usize {
        self.lock().events.len()
    }

    /// How long the oldest waiting event has waited.
    pub fn oldest_age(&self) -> Duration {
        self.lock()
            .events
            .front()
            .map_or(Duration::ZERO, |event| event.accepted_at().elapsed())
    }

    /// Removes every waiting event, returning how many there were.
    pub fn clear(&self) -> usize {
        let mut queue = self.lock();
        let count = queue.events.len();
        queue.events.clear();
        count
    }
}

impl Reservation<'_> {
    /// Enqueues `event` in the reserved slot.
    pub fn push(self, event: Event) {
        let lane = self.lane;
        std::mem::forget(self);
        {
            let mut queue = lane.lock();
            queue.reserved -= 1;
            queue.events.push_back(event);
        }
        lane.ready.notify_one();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.lane.lock().reserved -= 1;
    }
}
