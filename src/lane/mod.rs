//! A lane: where the events of one route-target pair wait, beside what delivers them — the
//! target's resolved [`Endpoint`], its circuit breaker and its metrics — so the generated table
//! pairs nothing by index or name at run time.
//!
//! Where the events wait is the route's storage kind, one module per kind behind the methods
//! of [`Lane`]: ingest pushes (the generated `fanout` calls `reserve`/`push_*`), delivery
//! [`Lane::take`]s events and settles them through their [`Held`] guard (the ack: delivered or
//! finally failed; a durable lane keeps an event until then), and shutdown, drain and metrics
//! look through [`Lane::depth`], [`Lane::unsettled`], [`Lane::oldest_age`] and [`Lane::clear`].
//! A new storage kind (a cursor over a route's log on disk, say) is a module and a variant of
//! `Storage`.
//!
//! Every event is in exactly one place of each lane at every moment: waiting (`depth`), held by
//! a worker ([`Held`], `fanout_lane_inflight`, counted in the same critical section that takes
//! it out), or settled (delivered, failed, dropped). A drain that sees both zero is done.

mod memory;

use std::time::Duration;

use crate::breaker::Breaker;
use crate::event::Event;
use crate::metrics::LaneMetrics;
use crate::sink::{Endpoint, Resolver};
use crate::spec::{Storage as StorageKind, TargetSpec};
use crate::startup::StartupError;

pub use memory::Reservation;

pub struct Lane {
    pub spec: &'static TargetSpec,
    storage: Storage,
    /// The target, resolved at start-up; each worker connects through it.
    pub endpoint: Endpoint,
    pub metrics: LaneMetrics,
    /// Keeps delivery from hammering a dead target.
    pub breaker: Breaker,
    /// Held by the one delivery worker gathering a batch (batch lanes only).
    pub gathering: tokio::sync::Mutex<()>,
}

/// Where the lane's events wait: the route's storage kind.
enum Storage {
    Memory(memory::Memory),
}

/// Why an event was refused: a reject lane of its route was full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Name of the full target.
    pub target: &'static str,
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
    /// An empty lane for `spec` in storage of the route's kind, its target resolved.
    pub fn new(
        spec: &'static TargetSpec,
        storage: StorageKind,
        resolver: &mut Resolver<'_>,
    ) -> Result<std::sync::Arc<Lane>, StartupError> {
        let metrics = LaneMetrics::new(spec);
        let storage = match storage {
            StorageKind::Memory => Storage::Memory(memory::Memory::new(
                &spec.lane,
                metrics.dropped_overflow.clone(),
                metrics.inflight.clone(),
            )),
        };
        Ok(std::sync::Arc::new(Lane {
            spec,
            storage,
            endpoint: Endpoint::resolve(spec, resolver)?,
            metrics,
            breaker: Breaker::new(&spec.delivery.breaker),
            gathering: tokio::sync::Mutex::new(()),
        }))
    }

    /// Takes a slot for an event of `size` body bytes, or refuses if the lane is full.
    pub fn reserve(&self, size: usize) -> Result<Reservation<'_>, Rejected> {
        let reserved = match &self.storage {
            Storage::Memory(memory) => memory.reserve(size),
        };
        reserved.ok_or(Rejected {
            target: self.spec.name,
        })
    }

    /// Enqueues `event`, evicting the oldest waiting events until it fits.
    pub fn push_drop_oldest(&self, event: Event) {
        match &self.storage {
            Storage::Memory(memory) => memory.push_drop_oldest(event),
        }
    }

    /// Enqueues `event` unless the lane is full, in which case this lane drops it.
    pub fn push_drop_newest(&self, event: Event) {
        match &self.storage {
            Storage::Memory(memory) => memory.push_drop_newest(event),
        }
    }

    /// Waits for the next event and takes it, held.
    pub async fn take(&self) -> (Event, Held<'_>) {
        let event = match &self.storage {
            Storage::Memory(memory) => memory.take().await,
        };
        (event, Held::new(self, 1))
    }

    /// Takes the oldest waiting event, held, if there is one.
    pub fn try_take(&self) -> Option<(Event, Held<'_>)> {
        let event = match &self.storage {
            Storage::Memory(memory) => memory.try_take()?,
        };
        Some((event, Held::new(self, 1)))
    }

    /// Moves waiting events into `batch`, held by `held`, within `(max_events, max_bytes)`;
    /// `bytes` is what `batch` holds already. Returns the new byte count and whether the batch
    /// is full. If `wait` and it is not, [`Lane::batch_full`] completes once the lane holds
    /// the rest.
    pub fn take_more(
        &self,
        held: &mut Held<'_>,
        batch: &mut Vec<Event>,
        bytes: usize,
        limits: (usize, usize),
        wait: bool,
    ) -> (usize, bool) {
        let before = batch.len();
        let taken = match &self.storage {
            Storage::Memory(memory) => memory.take_more(batch, bytes, limits, wait),
        };
        held.events += (batch.len() - before) as u64;
        taken
    }

    /// Completes when the lane holds what a batch being gathered still wants; may complete
    /// early, so check again.
    pub async fn batch_full(&self) {
        match &self.storage {
            Storage::Memory(memory) => memory.batch_full().await,
        }
    }

    /// Events waiting (not yet taken by a worker).
    pub fn depth(&self) -> usize {
        match &self.storage {
            Storage::Memory(memory) => memory.depth(),
        }
    }

    /// Events waiting or held by a worker: zero when the lane has nothing left to do. Reads the
    /// waiting ones before the held ones, so an event moving from one to the other is seen.
    pub fn unsettled(&self) -> u64 {
        let waiting = self.depth() as u64;
        waiting + self.metrics.inflight.get().max(0) as u64
    }

    /// How long the oldest waiting event has waited.
    pub fn oldest_age(&self) -> Duration {
        match &self.storage {
            Storage::Memory(memory) => memory.oldest_age(),
        }
    }

    /// At the end of a drain: removes every waiting event, returning how many there were.
    pub fn clear(&self) -> usize {
        match &self.storage {
            Storage::Memory(memory) => memory.clear(),
        }
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

    /// The ack: counts the held events as delivered or failed, and they leave the lane for
    /// good.
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
