//! Where accepted events wait for delivery, and where given-up ones end, apart from where they
//! go (`crate::sink`).
//!
//! A route has one [`RouteStorage`], made from its spec at start-up: it takes an event in for
//! every target at once where the storage is shared ([`RouteStorage::append`], a durable
//! route's write-ahead log, [`wal`]), answering with a [`Commit`] to await before the 202. Each
//! route-target pair reads through a [`Queue`] made by its route's storage: a bounded queue
//! in memory ([`memory`]), or a cursor over the route's log ([`disk`]). A queue hands events
//! out with an [`Ack`], its own record of which events they are, which it takes back when they
//! are settled ([`Queue::settle`], awaited: a storage whose ack is a round trip, JetStream's,
//! settles asynchronously) or given back ([`Queue::give_back`]). Dead letters
//! ([`dead_letter`]) are where a lane writes what it gives up.
//!
//! A new kind (JetStream: a stream per route, a durable consumer per target) is a variant of
//! [`RouteStorage`], [`Commit`], [`Queue`] and [`Ack`], and of the spec's `Storage`.

pub mod dead_letter;
pub mod disk;
pub mod memory;
mod queue;
pub mod wal;

use std::sync::Arc;

use crate::event::Event;
use crate::spec::{RouteSpec, Storage, TargetSpec};
use crate::storage::wal::Log;

pub use queue::{Ack, Queue};

/// A route's storage: where it takes events in.
pub enum RouteStorage {
    /// Each target's queue in memory: the route pushes to each (the generated `fanout`).
    Memory,
    /// The route's write-ahead log, which every target's queue reads.
    Disk(Arc<Log>),
}

/// Why a route's storage did not take an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// It would take the storage past its bound (a log's `disk_buffer`).
    Full,
    /// The storage is not open (yet, or any more).
    NotOpen,
    /// The write that covered it failed.
    Failed,
}

/// An event a route's storage took in, to await before answering 202 (a clone awaits the
/// same): its log's write; a JetStream PubAck would complete one the same way.
#[must_use]
#[derive(Clone)]
pub enum Commit {
    Log(wal::Commit),
}

impl Commit {
    /// Completes once the event is stored as the route's storage promises, or could not be.
    pub async fn written(self) -> Result<(), Refused> {
        match self {
            Commit::Log(commit) => commit.written().await,
        }
    }
}

impl RouteStorage {
    /// The storage `route`'s spec asks for, not open yet (a log opens with the data
    /// directory).
    pub fn new(route: &'static RouteSpec) -> RouteStorage {
        match route.storage {
            Storage::Memory => RouteStorage::Memory,
            Storage::Disk => RouteStorage::Disk(Arc::new(Log::new(route))),
        }
    }

    /// The route's log, if its storage is one.
    pub fn log(&self) -> Option<&Arc<Log>> {
        match self {
            RouteStorage::Disk(log) => Some(log),
            RouteStorage::Memory => None,
        }
    }

    /// Takes `event` in for every target of a route whose storage is shared. A route in
    /// memory is never asked: it pushes to each target's queue.
    pub fn append(&self, event: &Event) -> Result<Commit, Refused> {
        match self {
            RouteStorage::Disk(log) => log.append(event).map(Commit::Log),
            RouteStorage::Memory => unreachable!("a route in memory pushes to each queue"),
        }
    }

    /// The queue of target `spec` of `route`; `inflight` and `dropped_overflow` are its
    /// counters of events held by workers and evicted from a full queue.
    pub fn queue(
        &self,
        route: &'static RouteSpec,
        spec: &'static TargetSpec,
        inflight: &prometheus::IntGauge,
        dropped_overflow: &prometheus::IntCounter,
    ) -> Queue {
        match self {
            RouteStorage::Memory => Queue::Memory(memory::Memory::new(
                &spec.lane,
                dropped_overflow.clone(),
                inflight.clone(),
            )),
            RouteStorage::Disk(log) => {
                let index = route
                    .targets
                    .iter()
                    .position(|target| std::ptr::eq(*target, spec))
                    .expect("a queue's target is one of its route's");
                Queue::Disk(disk::Disk::new(log.clone(), index, inflight.clone()))
            }
        }
    }
}
