//! The in-memory storage of a lane (`storage: memory`): a bounded queue with the lane's
//! overflow policy.
//!
//! Ingest pushes (never waits), delivery workers take (and wait when it is empty). The queue is
//! a `VecDeque` under a mutex held for a few instructions and never across an await: that
//! gives each policy exactly — drop-oldest evicts and inserts in one step, reject reserves a
//! slot before any lane of the route is written to, and the oldest waiting event can be looked
//! at for `fanout_lane_oldest_age_seconds`.
//!
//! A lane is bounded twice: `buffer` events and `buffer_bytes` body bytes; whichever is reached
//! first makes it full, and the overflow policy treats both alike.
//!
//! An event taken out is counted in flight (`fanout_lane_inflight`) in the same critical
//! section, so it is never in neither place.

use prometheus::{IntCounter, IntGauge};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

use crate::event::Event;
use crate::spec::LanePolicy;

pub struct Memory {
    policy: &'static LanePolicy,
    /// The lane's `fanout_lane_dropped_total{reason="overflow"}`.
    dropped_overflow: IntCounter,
    /// The lane's `fanout_lane_inflight`, counted as events leave the queue.
    inflight: IntGauge,
    queue: Mutex<Queue>,
    /// Wakes one idle delivery worker per pushed event (a permit is kept if none is idle).
    ready: Notify,
    /// Wakes the worker gathering a batch once the queue holds what the batch still wants
    /// ([`Queue::wanted`]): once per batch, not once per event.
    batch_ready: Notify,
}

struct Queue {
    events: VecDeque<Event>,
    /// Body bytes of `events`.
    bytes: usize,
    /// Slots promised to reject-lane reservations that have not pushed yet.
    reserved: usize,
    /// Body bytes promised to those reservations.
    reserved_bytes: usize,
    /// Events and body bytes (one line each) the worker gathering a batch waits for, if one
    /// is waiting: reaching either fills its batch.
    wanted: Option<(usize, usize)>,
}

impl Queue {
    /// Whether one more event of `size` body bytes fits beside what is held and promised.
    fn fits(&self, policy: &LanePolicy, size: usize) -> bool {
        self.events.len() + self.reserved < policy.buffer
            && self.bytes + self.reserved_bytes + size <= policy.buffer_bytes
    }

    /// Appends `event`; true if a gathering worker now has its batch's worth.
    fn push(&mut self, event: Event) -> bool {
        self.bytes += event.body_len();
        self.events.push_back(event);
        let full = self.wanted.is_some_and(|(events, bytes)| {
            self.events.len() >= events || self.bytes + self.events.len() >= bytes
        });
        if full {
            self.wanted = None;
        }
        full
    }

    fn pop(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        self.bytes -= event.body_len();
        Some(event)
    }
}

/// A slot held in a reject lane. Dropping it unused gives the slot back, so a route whose
/// second reject lane is full leaves the first one as it was.
#[must_use]
pub struct Reservation<'a> {
    lane: &'a Memory,
    size: usize,
}

impl Memory {
    pub fn new(
        policy: &'static LanePolicy,
        dropped_overflow: IntCounter,
        inflight: IntGauge,
    ) -> Memory {
        Memory {
            policy,
            dropped_overflow,
            inflight,
            // Grows on demand up to `buffer`: an idle lane costs little however large it may get.
            queue: Mutex::new(Queue {
                events: VecDeque::with_capacity(policy.buffer.min(1024)),
                bytes: 0,
                reserved: 0,
                reserved_bytes: 0,
                wanted: None,
            }),
            ready: Notify::new(),
            batch_ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves the queue consistent (no critical section
        // calls code that can panic between its updates), so a poisoned lock is still usable.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a slot for an event of `size` body bytes, unless the lane is full.
    pub fn reserve(&self, size: usize) -> Option<Reservation<'_>> {
        let mut queue = self.lock();
        if !queue.fits(self.policy, size) {
            return None;
        }
        queue.reserved += 1;
        queue.reserved_bytes += size;
        Some(Reservation { lane: self, size })
    }

    /// Enqueues `event`, evicting the oldest waiting events until it fits. An event larger
    /// than the whole lane (`buffer_bytes` below the route's `max_body` is refused at build
    /// time, so only a lane of one event) replaces everything.
    pub fn push_drop_oldest(&self, event: Event) {
        let size = event.body_len();
        let evicted = {
            let mut queue = self.lock();
            let mut evicted = 0;
            while !queue.fits(self.policy, size) && queue.pop().is_some() {
                evicted += 1;
            }
            (evicted, queue.push(event))
        };
        if evicted.0 > 0 {
            self.dropped_overflow.inc_by(evicted.0);
        }
        self.pushed(evicted.1);
    }

    /// Wakes a worker for the event just pushed, and the gathering one if its batch is full.
    fn pushed(&self, batch_full: bool) {
        self.ready.notify_one();
        if batch_full {
            self.batch_ready.notify_one();
        }
    }

    /// Enqueues `event` unless the lane is full, in which case this lane drops it.
    pub fn push_drop_newest(&self, event: Event) {
        let pushed = {
            let mut queue = self.lock();
            let fits = queue.fits(self.policy, event.body_len());
            fits.then(|| queue.push(event))
        };
        match pushed {
            Some(batch_full) => self.pushed(batch_full),
            None => self.dropped_overflow.inc(),
        }
    }

    /// Waits for the next event and takes it (counted in flight).
    pub async fn take(&self) -> Event {
        loop {
            // Registered before looking, so every push wakes a waiting worker of its own
            // (permits do not pile up while no worker waits: only one would be kept).
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(event) = self.try_take() {
                return event;
            }
            ready.await;
        }
    }

    /// Takes the oldest waiting event (counted in flight), if there is one.
    pub fn try_take(&self) -> Option<Event> {
        let mut queue = self.lock();
        let event = queue.pop()?;
        self.inflight.inc();
        Some(event)
    }

    /// Moves waiting events into `batch` (held by `held`), oldest first, while it holds fewer
    /// than `max_events` and their bodies (one line each) fit in `max_bytes`; `bytes` is what
    /// `batch` already holds. Returns the new byte count, and whether the batch is full (it
    /// holds `max_events`, or the next event would not fit). If `wait` and it is not full,
    /// [`Lane::batch_full`] completes once the queue holds the rest.
    pub fn take_more(
        &self,
        batch: &mut Vec<Event>,
        mut bytes: usize,
        (max_events, max_bytes): (usize, usize),
        wait: bool,
    ) -> (usize, bool) {
        let mut queue = self.lock();
        let before = batch.len();
        let mut full = false;
        while batch.len() < max_events {
            let Some(next) = queue.events.front() else {
                break;
            };
            let size = next.body_len() + 1;
            if !batch.is_empty() && bytes + size > max_bytes {
                full = true;
                break;
            }
            bytes += size;
            batch.extend(queue.pop());
        }
        self.inflight.add((batch.len() - before) as i64);
        let full = full || batch.len() >= max_events || bytes >= max_bytes;
        queue.wanted = (wait && !full).then(|| (max_events - batch.len(), max_bytes - bytes));
        (bytes, full)
    }

    /// Completes when the queue holds what a batch being gathered still wants (see
    /// [`Lane::take_more`]); may complete early, so check again.
    pub async fn batch_full(&self) {
        self.batch_ready.notified().await;
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
            .map_or(Duration::ZERO, Event::age)
    }

    /// Removes every waiting event, returning how many there were.
    pub fn clear(&self) -> usize {
        let mut queue = self.lock();
        let count = queue.events.len();
        queue.events.clear();
        queue.bytes = 0;
        count
    }
}

impl Reservation<'_> {
    /// Enqueues `event` in the reserved slot.
    pub fn push(self, event: Event) {
        let lane = self.lane;
        let size = self.size;
        std::mem::forget(self);
        let batch_full = {
            let mut queue = lane.lock();
            queue.reserved -= 1;
            queue.reserved_bytes -= size;
            queue.push(event)
        };
        lane.pushed(batch_full);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut queue = self.lane.lock();
        queue.reserved -= 1;
        queue.reserved_bytes -= self.size;
    }
}
