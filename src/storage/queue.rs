//! A route-target pair's view of its route's storage: where its events wait until a delivery
//! worker takes them, and what it must be told when they are settled.

use std::time::Duration;

use crate::event::Event;
use crate::storage::disk::Disk;
use crate::storage::memory::{Memory, Reservation};

/// Where one target's events wait: one variant per storage kind.
pub enum Queue {
    /// A bounded queue of its own, in memory.
    Memory(Memory),
    /// A cursor over its route's log.
    Disk(Disk),
}

/// Which taken events a queue must hear about when they are settled or given back, in the
/// storage's own terms: nothing in memory (the queue let them go when they were taken), their
/// log positions on disk. A JetStream queue would keep its messages' ack handles here.
pub enum Ack {
    Memory,
    Disk(Vec<u64>),
}

impl Ack {
    /// The part of the ack for the `index`th event (in the order taken), taken out of this
    /// one.
    pub fn split_off_one(&mut self, index: usize) -> Ack {
        match self {
            Ack::Memory => Ack::Memory,
            Ack::Disk(positions) if index < positions.len() => {
                Ack::Disk(vec![positions.remove(index)])
            }
            Ack::Disk(_) => Ack::Disk(Vec::new()),
        }
    }
}

impl Queue {
    /// Whether what waits here outlives the process (a durable route's log).
    pub fn is_durable(&self) -> bool {
        matches!(self, Queue::Disk(_))
    }

    /// Takes a slot for an event of `size` body bytes, if the queue has room. (Only memory
    /// queues are asked.)
    pub fn reserve(&self, size: usize) -> Option<Reservation<'_>> {
        match self {
            Queue::Memory(memory) => memory.reserve(size),
            Queue::Disk(_) => None,
        }
    }

    /// Enqueues `event`, evicting the oldest waiting events until it fits. (Only memory
    /// queues are asked.)
    pub fn push_drop_oldest(&self, event: Event) {
        if let Queue::Memory(memory) = self {
            memory.push_drop_oldest(event);
        }
    }

    /// Enqueues `event` unless the queue is full, in which case it is dropped. (Only memory
    /// queues are asked.)
    pub fn push_drop_newest(&self, event: Event) {
        if let Queue::Memory(memory) = self {
            memory.push_drop_newest(event);
        }
    }

    /// Waits for the next event and takes it.
    pub async fn take(&self) -> (Event, Ack) {
        match self {
            Queue::Memory(memory) => (memory.take().await, Ack::Memory),
            Queue::Disk(disk) => {
                let (event, position) = disk.take().await;
                (event, Ack::Disk(vec![position]))
            }
        }
    }

    /// Takes the oldest waiting event, if there is one.
    pub fn try_take(&self) -> Option<(Event, Ack)> {
        match self {
            Queue::Memory(memory) => Some((memory.try_take()?, Ack::Memory)),
            Queue::Disk(disk) => {
                let (event, position) = disk.try_take_now()?;
                Some((event, Ack::Disk(vec![position])))
            }
        }
    }

    /// Moves waiting events into `batch`, adding them to `ack`, within `limits` (events,
    /// bytes); `bytes` is what `batch` holds already. Returns the new byte count and whether
    /// the batch is full; if `wait` and it is not, [`Queue::batch_full`] completes once the
    /// queue holds the rest.
    pub fn take_more(
        &self,
        ack: &mut Ack,
        batch: &mut Vec<Event>,
        bytes: usize,
        limits: (usize, usize),
        wait: bool,
    ) -> (usize, bool) {
        match (self, ack) {
            (Queue::Memory(memory), _) => memory.take_more(batch, bytes, limits, wait),
            (Queue::Disk(disk), Ack::Disk(positions)) => {
                disk.take_more(batch, positions, bytes, limits)
            }
            (Queue::Disk(_), Ack::Memory) => unreachable!("a disk queue hands out disk acks"),
        }
    }

    /// Completes when the queue holds what a batch being gathered still wants; may complete
    /// early, so check again.
    pub async fn batch_full(&self) {
        match self {
            Queue::Memory(memory) => memory.batch_full().await,
            Queue::Disk(disk) => disk.written().await,
        }
    }

    /// The events of `ack` are settled (delivered, or failed for good): they leave the
    /// storage. Awaited, for a storage whose ack is a round trip.
    pub async fn settle(&self, ack: Ack) {
        if let (Queue::Disk(disk), Ack::Disk(positions)) = (self, ack) {
            disk.finish(&positions);
        }
    }

    /// The events of `ack` were taken by a worker that panicked: a durable queue hands them
    /// out again first; a memory queue has nothing left to give.
    pub fn give_back(&self, ack: Ack) {
        if let (Queue::Disk(disk), Ack::Disk(positions)) = (self, ack) {
            disk.give_back(&positions);
        }
    }

    /// Events waiting (not yet taken by a worker).
    pub fn depth(&self) -> usize {
        match self {
            Queue::Memory(memory) => memory.depth(),
            Queue::Disk(disk) => disk.depth(),
        }
    }

    /// How long the oldest waiting event has waited.
    pub fn oldest_age(&self) -> Duration {
        match self {
            Queue::Memory(memory) => memory.oldest_age(),
            Queue::Disk(disk) => disk.oldest_age(),
        }
    }

    /// At shutdown: a durable queue hands out no more events (they stay in its log).
    pub fn stop(&self) {
        if let Queue::Disk(disk) = self {
            disk.stop();
        }
    }

    /// At the end of a drain: removes every waiting event of a memory queue, returning how
    /// many there were. A durable queue keeps them.
    pub fn clear(&self) -> usize {
        match self {
            Queue::Memory(memory) => memory.clear(),
            Queue::Disk(_) => 0,
        }
    }
}
