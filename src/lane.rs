//! A lane: the bounded queue between ingest and one target, with its overflow policy.
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
//! Every event is in exactly one place at every moment: waiting in the queue (`depth`), or held
//! by a worker ([`Held`], `fanout_lane_inflight`, counted in the same critical section that
//! takes it out of the queue), or settled (delivered, failed, dropped). A drain that sees both
//! zero has nothing left to wait for.

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
    /// Wakes the worker gathering a batch once the queue holds what the batch still wants
    /// ([`Queue::wanted`]): once per batch, not once per event.
    batch_ready: Notify,
    pub metrics: LaneMetrics,
    /// Keeps delivery from hammering a dead target.
    pub breaker: Breaker,
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
    fn fits(&self, spec: &TargetSpec, size: usize) -> bool {
        self.events.len() + self.reserved < spec.buffer
            && self.bytes + self.reserved_bytes + size <= spec.buffer_bytes
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
    size: usize,
}

/// How a held event ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    Failed,
}

/// Events a delivery worker has taken from its lane and not yet settled: they count in
/// `fanout_lane_inflight` until [`Held::settle`]. Dropped unsettled — the worker was stopped at
/// the end of a drain, or panicked — they count as dropped with reason `shutdown` or `panic`.
#[must_use]
pub struct Held<'a> {
    lane: &'a Lane,
    events: u64,
    settled: bool,
}

impl Lane {
    pub fn new(spec: &'static TargetSpec) -> Lane {
        Lane {
            spec,
            // Grows on demand up to `buffer`: an idle lane costs little however large it may get.
            queue: Mutex::new(Queue {
                events: VecDeque::with_capacity(spec.buffer.min(1024)),
                bytes: 0,
                reserved: 0,
                reserved_bytes: 0,
                wanted: None,
            }),
            ready: Notify::new(),
            batch_ready: Notify::new(),
            metrics: LaneMetrics::new(spec),
            breaker: Breaker::new(&spec.breaker),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves the queue consistent (no critical section
        // calls code that can panic between its updates), so a poisoned lock is still usable.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a slot for an event of `size` body bytes, or refuses if the lane is full.
    pub fn reserve(&self, size: usize) -> Result<Reservation<'_>, Rejected> {
        let mut queue = self.lock();
        if !queue.fits(self.spec, size) {
            return Err(Rejected {
                target: self.spec.name,
            });
        }
        queue.reserved += 1;
        queue.reserved_bytes += size;
        Ok(Reservation { lane: self, size })
    }

    /// Enqueues `event`, evicting the oldest waiting events until it fits. An event larger
    /// than the whole lane (`buffer_bytes` below the route's `max_body` is refused at build
    /// time, so only a lane of one event) replaces everything.
    pub fn push_drop_oldest(&self, event: Event) {
        let size = event.body_len();
        let evicted = {
            let mut queue = self.lock();
            let mut evicted = 0;
            while !queue.fits(self.spec, size) && queue.pop().is_some() {
                evicted += 1;
            }
            (evicted, queue.push(event))
        };
        if evicted.0 > 0 {
            self.metrics.dropped_overflow.inc_by(evicted.0);
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
            let fits = queue.fits(self.spec, event.body_len());
            fits.then(|| queue.push(event))
        };
        match pushed {
            Some(batch_full) => self.pushed(batch_full),
            None => self.metrics.dropped_overflow.inc(),
        }
    }

    /// Waits for the next event and takes it, held.
    pub async fn take(&self) -> (Event, Held<'_>) {
        loop {
            if let Some(taken) = self.try_take() {
                return taken;
            }
            self.ready.notified().await;
        }
    }

    /// Takes the oldest waiting event, held, if there is one.
    pub fn try_take(&self) -> Option<(Event, Held<'_>)> {
        let event = {
            let mut queue = self.lock();
            let event = queue.pop()?;
            self.metrics.inflight.inc();
            event
        };
        Some((event, Held::new(self, 1)))
    }

    /// Moves waiting events into `batch` (held by `held`), oldest first, while it holds fewer
    /// than `max_events` and their bodies (one line each) fit in `max_bytes`; `bytes` is what
    /// `batch` already holds. Returns the new byte count, and whether the batch is full (it
    /// holds `max_events`, or the next event would not fit). If `wait` and it is not full,
    /// [`Lane::batch_full`] completes once the queue holds the rest.
    pub fn take_more(
        &self,
        held: &mut Held<'_>,
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
        let taken = (batch.len() - before) as u64;
        self.metrics.inflight.add(taken as i64);
        held.events += taken;
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

    /// Events waiting or held by a worker: zero when the lane has nothing left to do. Reads the
    /// queue before the held count, so an event moving from one to the other is seen in one.
    pub fn unsettled(&self) -> u64 {
        let waiting = self.depth() as u64;
        waiting + self.metrics.inflight.get().max(0) as u64
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

impl<'a> Held<'a> {
    fn new(lane: &'a Lane, events: u64) -> Held<'a> {
        Held {
            lane,
            events,
            settled: false,
        }
    }

    /// How many events are held.
    pub fn count(&self) -> u64 {
        self.events
    }

    /// Counts the held events as delivered or failed: they leave the lane for good.
    pub fn settle(mut self, how: Settled) {
        let metrics = &self.lane.metrics;
        match how {
            Settled::Delivered => metrics.delivered.inc_by(self.events),
            Settled::Failed => metrics.failed.inc_by(self.events),
        }
        self.settled = true;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let metrics = &self.lane.metrics;
        if !self.settled {
            if std::thread::panicking() {
                metrics.dropped_panic.inc_by(self.events);
            } else {
                metrics.dropped_shutdown.inc_by(self.events);
            }
        }
        metrics.inflight.sub(self.events as i64);
    }
}
