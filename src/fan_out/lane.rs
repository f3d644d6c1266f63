//! A lane: where the events of one route-target pair wait, beside what delivers them — the
//! target's resolved [`Endpoint`], its circuit breaker and its metrics — so the generated table
//! pairs nothing by index or name at run time.
//!
//! Where the events wait is the route's storage kind, one module per kind behind the methods
//! of [`Lane`]: ingest pushes (the generated `fanout` calls `reserve`/`push_*`), delivery
//! [`Lane::take`]s events and settles them through their [`Held`] guard (the ack: delivered or
//! finally failed; a durable lane keeps an event until then), and shutdown, drain and metrics
//! look through [`Lane::depth`], [`Lane::unsettled`], [`Lane::oldest_age`] and [`Lane::clear`].
//! Storage kinds: `memory.rs` (a bounded queue per lane) and `disk.rs` (a cursor per lane
//! over its durable route's log, `crate::storage::wal`). A new kind is a module and a variant of
//! `Storage`.
//!
//! Every event is in exactly one place of each lane at every moment: waiting (`depth`), held by
//! a worker ([`Held`], `fanout_lane_inflight`, counted in the same critical section that takes
//! it out), or settled (delivered, failed, dropped). A drain that sees both zero is done.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::event::Event;
use crate::metrics::LaneMetrics;
use crate::ops::startup::StartupError;
use crate::sink::breaker::Breaker;
use crate::sink::{Endpoint, Resolver};
use crate::spec::{RouteSpec, Storage as StorageKind, TargetSpec};
use crate::storage::dead_letter::{self, DeadLetters, LastAttempt};
use crate::storage::disk;
use crate::storage::memory;
use crate::storage::wal::{self, Commit, Log};

pub use crate::storage::memory::Reservation;

/// The pause after a failed dead-letter write; it doubles after each failure in a row.
const DEAD_LETTER_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two tries of a dead-letter write.
const DEAD_LETTER_MAX_PAUSE: Duration = Duration::from_secs(5);

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
    /// Where events given up go, once the data directory is open (if there is one).
    pub dead_letters: OnceLock<DeadLetters>,
}

/// Where the lane's events wait: the route's storage kind.
enum Storage {
    Memory(memory::Memory),
    Disk(disk::Disk),
}

/// Why an event was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// A reject lane of its route was full; the name of its target.
    LaneFull(&'static str),
    /// Its durable route's log is at its `disk_buffer`.
    DiskFull,
    /// Its durable route's log could not be written.
    DiskError,
    /// Its durable route's log is not open (yet, or any more).
    NotOpen,
}

impl From<wal::Refused> for Rejected {
    fn from(refused: wal::Refused) -> Rejected {
        match refused {
            wal::Refused::Full => Rejected::DiskFull,
            wal::Refused::NotOpen => Rejected::NotOpen,
            wal::Refused::Failed => Rejected::DiskError,
        }
    }
}

/// How a route took an event in.
#[must_use]
pub enum Admission {
    /// In every lane's queue, in memory.
    Queued,
    /// Appended to the route's log: answer once the commit is written.
    Logged(Commit),
}

/// How a held event ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    Failed,
}

/// Events a delivery worker has taken from its lane and not yet settled: they count in
/// `fanout_lane_inflight` until [`Held::settle`]. Dropped unsettled — the worker was stopped at
/// the end of a drain, or panicked — they count as dropped with reason `shutdown` or `panic`
/// in memory; a durable lane keeps them in its log (for the next start, or given back to be
/// read again after a panic).
#[must_use]
pub struct Held<'a> {
    lane: &'a Lane,
    events: u64,
    /// Log positions of the events, in a durable lane; empty in memory.
    positions: Vec<u64>,
    settled: bool,
}

impl Lane {
    /// An empty lane for `spec` in storage of `route`'s kind, its target resolved.
    pub fn new(
        spec: &'static TargetSpec,
        route: &'static RouteSpec,
        resolver: &mut Resolver<'_>,
    ) -> Result<Arc<Lane>, StartupError> {
        let metrics = LaneMetrics::new(spec);
        let storage = match route.storage {
            StorageKind::Memory => Storage::Memory(memory::Memory::new(
                &spec.lane,
                metrics.dropped_overflow.clone(),
                metrics.inflight.clone(),
            )),
            StorageKind::Disk => {
                let index = route
                    .targets
                    .iter()
                    .position(|target| std::ptr::eq(*target, spec))
                    .expect("a lane's target is one of its route's");
                let log = resolver.log(route);
                Storage::Disk(disk::Disk::new(log, index, metrics.inflight.clone()))
            }
        };
        Ok(Arc::new(Lane {
            spec,
            storage,
            endpoint: Endpoint::resolve(spec, resolver)?,
            metrics,
            breaker: Breaker::new(&spec.delivery.breaker),
            gathering: tokio::sync::Mutex::new(()),
            dead_letters: OnceLock::new(),
        }))
    }

    /// The route's log, if the lane is durable.
    pub fn log(&self) -> Option<&Arc<Log>> {
        match &self.storage {
            Storage::Disk(disk) => Some(&disk.log),
            Storage::Memory(_) => None,
        }
    }

    /// Appends `event` to the route's log, for every lane of a durable route. (A memory lane
    /// is never asked: its route pushes to each lane.)
    pub fn append(&self, event: Event) -> Result<Admission, Rejected> {
        match &self.storage {
            Storage::Disk(disk) => disk
                .log
                .append(&event)
                .map(Admission::Logged)
                .map_err(Rejected::from),
            Storage::Memory(memory) => {
                memory.push_drop_newest(event);
                Ok(Admission::Queued)
            }
        }
    }

    /// Takes a slot for an event of `size` body bytes, or refuses if the lane is full. (Only
    /// memory lanes are asked.)
    pub fn reserve(&self, size: usize) -> Result<Reservation<'_>, Rejected> {
        let reserved = match &self.storage {
            Storage::Memory(memory) => memory.reserve(size),
            Storage::Disk(_) => None,
        };
        reserved.ok_or(Rejected::LaneFull(self.spec.name))
    }

    /// Enqueues `event`, evicting the oldest waiting events until it fits. (Only memory lanes
    /// are asked.)
    pub fn push_drop_oldest(&self, event: Event) {
        if let Storage::Memory(memory) = &self.storage {
            memory.push_drop_oldest(event);
        }
    }

    /// Enqueues `event` unless the lane is full, in which case this lane drops it. (Only
    /// memory lanes are asked.)
    pub fn push_drop_newest(&self, event: Event) {
        if let Storage::Memory(memory) = &self.storage {
            memory.push_drop_newest(event);
        }
    }

    /// Waits for the next event and takes it, held.
    pub async fn take(&self) -> (Event, Held<'_>) {
        match &self.storage {
            Storage::Memory(memory) => (memory.take().await, Held::new(self, 1, Vec::new())),
            Storage::Disk(disk) => {
                let (event, position) = disk.take().await;
                (event, Held::new(self, 1, vec![position]))
            }
        }
    }

    /// Takes the oldest waiting event, held, if there is one.
    pub fn try_take(&self) -> Option<(Event, Held<'_>)> {
        match &self.storage {
            Storage::Memory(memory) => Some((memory.try_take()?, Held::new(self, 1, Vec::new()))),
            Storage::Disk(disk) => {
                let (event, position) = disk.try_take_now()?;
                Some((event, Held::new(self, 1, vec![position])))
            }
        }
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
            Storage::Disk(disk) => disk.take_more(batch, &mut held.positions, bytes, limits),
        };
        held.events += (batch.len() - before) as u64;
        taken
    }

    /// Completes when the lane holds what a batch being gathered still wants; may complete
    /// early, so check again.
    pub async fn batch_full(&self) {
        match &self.storage {
            Storage::Memory(memory) => memory.batch_full().await,
            Storage::Disk(disk) => disk.written().await,
        }
    }

    /// Events waiting (not yet taken by a worker).
    pub fn depth(&self) -> usize {
        match &self.storage {
            Storage::Memory(memory) => memory.depth(),
            Storage::Disk(disk) => disk.depth(),
        }
    }

    /// Events waiting or held by a worker: zero when the lane has nothing left to do. Reads the
    /// waiting ones before the held ones, so an event moving from one to the other is seen.
    pub fn unsettled(&self) -> u64 {
        let waiting = self.depth() as u64;
        waiting + self.metrics.inflight.get().max(0) as u64
    }

    /// What a drain waits for: every event of a memory lane; only the held ones of a durable
    /// lane, whose waiting events stay in its log for the next start.
    pub fn undrained(&self) -> u64 {
        match &self.storage {
            Storage::Memory(_) => self.unsettled(),
            Storage::Disk(_) => self.metrics.inflight.get().max(0) as u64,
        }
    }

    /// How long the oldest waiting event has waited.
    pub fn oldest_age(&self) -> Duration {
        match &self.storage {
            Storage::Memory(memory) => memory.oldest_age(),
            Storage::Disk(disk) => disk.oldest_age(),
        }
    }

    /// At shutdown: a durable lane takes no more events (they stay in its log).
    pub fn stop(&self) {
        if let Storage::Disk(disk) = &self.storage {
            disk.stop();
        }
    }

    /// At the end of a drain: removes every waiting event of a memory lane, returning how many
    /// there were. A durable lane keeps them in its log.
    pub fn clear(&self) -> usize {
        match &self.storage {
            Storage::Memory(memory) => memory.clear(),
            Storage::Disk(_) => 0,
        }
    }

    /// Writes `events` to the lane's dead letters if it has a data directory, counting them,
    /// off the runtime's worker threads. A write that fails is counted, logged and tried again
    /// after a pause (doubling up to [`DEAD_LETTER_MAX_PAUSE`]) until it succeeds: the caller
    /// holds the events meanwhile, so a dead letter that cannot be written is never settled
    /// (a durable lane keeps it in its log), and a shutdown that stops the worker leaves it
    /// where any held event goes (`Held`'s drop).
    pub async fn dead_letter(&self, events: &[Event], last: &LastAttempt<'_>) {
        let Some(dead_letters) = self.dead_letters.get() else {
            return;
        };
        let lines = bytes::Bytes::from(dead_letter::lines(self.spec, events, last));
        let mut pause = DEAD_LETTER_PAUSE;
        loop {
            let (writer, lines) = (dead_letters.clone(), lines.clone());
            let written = tokio::task::spawn_blocking(move || writer.write(&lines))
                .await
                .unwrap_or_else(|stopped| Err(std::io::Error::other(stopped)));
            let error = match written {
                Ok(()) => {
                    let written = &self.metrics.dead_letters[last.reason as usize];
                    return written.inc_by(events.len() as u64);
                }
                Err(error) => error,
            };
            self.metrics.dead_letter_errors.inc();
            tracing::error!(
                route = self.spec.route,
                target = self.spec.name,
                %error,
                events = events.len(),
                retry_in = ?pause,
                "cannot write dead letters: their events stay held until they are written"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(DEAD_LETTER_MAX_PAUSE);
        }
    }
}

impl<'a> Held<'a> {
    fn new(lane: &'a Lane, events: u64, positions: Vec<u64>) -> Held<'a> {
        Held {
            lane,
            events,
            positions,
            settled: false,
        }
    }

    /// How many events are held.
    pub fn count(&self) -> u64 {
        self.events
    }

    /// Settles the `index`th event held (in the order taken) alone, as `how`; the others stay
    /// held.
    pub fn settle_one(&mut self, index: usize, how: Settled) {
        let mut one = Held::new(self.lane, 1, Vec::new());
        if let (Storage::Disk(_), true) = (&self.lane.storage, index < self.positions.len()) {
            one.positions.push(self.positions.remove(index));
        }
        self.events -= 1;
        one.settle(how);
    }

    /// The ack: counts the held events as delivered or failed, and they leave the lane for
    /// good.
    pub fn settle(mut self, how: Settled) {
        let metrics = &self.lane.metrics;
        match how {
            Settled::Delivered => metrics.delivered.inc_by(self.events),
            Settled::Failed => metrics.failed.inc_by(self.events),
        }
        if let Storage::Disk(disk) = &self.lane.storage {
            disk.finish(&self.positions);
        }
        self.settled = true;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let metrics = &self.lane.metrics;
        if !self.settled {
            let panicking = std::thread::panicking();
            match &self.lane.storage {
                Storage::Disk(disk) if panicking => disk.give_back(&self.positions),
                Storage::Disk(_) => {}
                Storage::Memory(_) if panicking => metrics.dropped_panic.inc_by(self.events),
                Storage::Memory(_) => metrics.dropped_shutdown.inc_by(self.events),
            }
        }
        metrics.inflight.sub(self.events as i64);
    }
}
