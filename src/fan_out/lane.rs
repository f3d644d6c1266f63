//! A lane: one route-target pair of a fan-out route — the target's [`Queue`] in its route's
//! storage (where its events wait, `crate::storage`) beside the [`Target`] they go to (its
//! endpoint and breaker, `crate::sink`), their counters and dead letters — so the generated
//! table pairs nothing by index or name at run time.
//!
//! Ingest pushes (the generated `fanout` calls `reserve`/`push_*` of a memory route's queues,
//! or appends once to a durable route's storage); delivery [`Lane::take`]s events and settles
//! them through their [`Held`] guard (the ack: delivered or finally failed; a durable queue
//! keeps an event until then); shutdown, drain and metrics look through [`Lane::depth`],
//! [`Lane::unsettled`], [`Lane::oldest_age`] and the queue.
//!
//! Every event is in exactly one place of each lane at every moment: waiting (`depth`), held by
//! a worker ([`Held`], `fanout_lane_inflight`, counted in the same critical section that takes
//! it out), or settled (delivered, failed, dropped). A drain that sees both zero is done.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::event::Event;
use crate::metrics::LaneMetrics;
use crate::ops::startup::StartupError;
use crate::sink::{Resolver, Target};
use crate::spec::{RouteSpec, TargetSpec};
use crate::storage::dead_letter::{self, DeadLetters, LastAttempt};
use crate::storage::memory::Reservation;
use crate::storage::{Ack, Commit, Queue, Refused, RouteStorage};

/// The pause after a failed dead-letter write; it doubles after each failure in a row.
const DEAD_LETTER_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two tries of a dead-letter write.
const DEAD_LETTER_MAX_PAUSE: Duration = Duration::from_secs(5);

pub struct Lane {
    /// Where the target's events wait.
    pub queue: Queue,
    /// Where they go.
    pub target: Target,
    pub metrics: LaneMetrics,
    /// Held by the one delivery worker gathering a batch (batch lanes only).
    pub gathering: tokio::sync::Mutex<()>,
    /// Where events given up go, once the data directory is open (if there is one).
    pub dead_letters: OnceLock<DeadLetters>,
}

/// Why an event was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// A reject lane of its route was full; the name of its target.
    LaneFull(&'static str),
    /// Its route's storage is at its bound (a log's `disk_buffer`).
    StorageFull,
    /// Its route's storage could not store it.
    StorageFailed,
    /// Its route's storage is not open (yet, or any more).
    NotOpen,
}

impl From<Refused> for Rejected {
    fn from(refused: Refused) -> Rejected {
        match refused {
            Refused::Full => Rejected::StorageFull,
            Refused::NotOpen => Rejected::NotOpen,
            Refused::Failed => Rejected::StorageFailed,
        }
    }
}

/// How a route took an event in.
#[must_use]
pub enum Admission {
    /// In every lane's queue, in memory.
    Queued,
    /// In its route's storage once the commit completes: answer then.
    Committing(Commit),
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
/// in memory; a durable queue keeps them (for the next start, or given back to be read again
/// after a panic).
#[must_use]
pub struct Held<'a> {
    lane: &'a Lane,
    events: u64,
    /// What the queue must hear when they are settled; `None` once it has.
    ack: Option<Ack>,
}

impl Lane {
    /// An empty lane for target `spec` of `route`, its queue in the route's `storage`, its
    /// target resolved.
    pub fn new(
        spec: &'static TargetSpec,
        route: &'static RouteSpec,
        storage: &RouteStorage,
        resolver: &mut Resolver<'_>,
    ) -> Result<Arc<Lane>, StartupError> {
        let metrics = LaneMetrics::new(spec);
        Ok(Arc::new(Lane {
            queue: storage.queue(route, spec, &metrics.inflight, &metrics.dropped_overflow),
            target: Target::resolve(spec, resolver)?,
            metrics,
            gathering: tokio::sync::Mutex::new(()),
            dead_letters: OnceLock::new(),
        }))
    }

    /// Takes a slot for an event of `size` body bytes, or refuses if the lane is full. (Only
    /// memory lanes are asked.)
    pub fn reserve(&self, size: usize) -> Result<Reservation<'_>, Rejected> {
        self.queue
            .reserve(size)
            .ok_or(Rejected::LaneFull(self.target.spec.name))
    }

    /// Enqueues `event`, evicting the oldest waiting events until it fits.
    pub fn push_drop_oldest(&self, event: Event) {
        self.queue.push_drop_oldest(event);
    }

    /// Enqueues `event` unless the lane is full, in which case this lane drops it.
    pub fn push_drop_newest(&self, event: Event) {
        self.queue.push_drop_newest(event);
    }

    /// Waits for the next event and takes it, held.
    pub async fn take(&self) -> (Event, Held<'_>) {
        let (event, ack) = self.queue.take().await;
        (event, Held::new(self, 1, ack))
    }

    /// Takes the oldest waiting event, held, if there is one.
    pub fn try_take(&self) -> Option<(Event, Held<'_>)> {
        let (event, ack) = self.queue.try_take()?;
        Some((event, Held::new(self, 1, ack)))
    }

    /// Moves waiting events into `batch`, held by `held`, within `(max_events, max_bytes)`;
    /// `bytes` is what `batch` holds already. Returns the new byte count and whether the batch
    /// is full. If `wait` and it is not, [`Queue::batch_full`] completes once the lane holds
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
        let ack = held.ack.as_mut().expect("an unsettled hold has its ack");
        let taken = self.queue.take_more(ack, batch, bytes, limits, wait);
        held.events += (batch.len() - before) as u64;
        taken
    }

    /// Events waiting (not yet taken by a worker).
    pub fn depth(&self) -> usize {
        self.queue.depth()
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
        match self.queue.is_durable() {
            false => self.unsettled(),
            true => self.metrics.inflight.get().max(0) as u64,
        }
    }

    /// How long the oldest waiting event has waited.
    pub fn oldest_age(&self) -> Duration {
        self.queue.oldest_age()
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
        let lines = bytes::Bytes::from(dead_letter::lines(self.target.spec, events, last));
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
                route = self.target.spec.route,
                target = self.target.spec.name,
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
    fn new(lane: &'a Lane, events: u64, ack: Ack) -> Held<'a> {
        Held {
            lane,
            events,
            ack: Some(ack),
        }
    }

    /// How many events are held.
    pub fn count(&self) -> u64 {
        self.events
    }

    /// Settles the `index`th event held (in the order taken) alone, as `how`; the others stay
    /// held.
    pub async fn settle_one(&mut self, index: usize, how: Settled) {
        let ack = self.ack.as_mut().expect("an unsettled hold has its ack");
        let one = Held::new(self.lane, 1, ack.split_off_one(index));
        self.events -= 1;
        one.settle(how).await;
    }

    /// The ack: counts the held events as delivered or failed, and they leave the lane for
    /// good. Counted before the storage hears it: if this is dropped before the storage has
    /// it (a storage whose ack is a round trip), the events are delivered again (at least
    /// once), never counted twice.
    pub async fn settle(mut self, how: Settled) {
        let metrics = &self.lane.metrics;
        match how {
            Settled::Delivered => metrics.delivered.inc_by(self.events),
            Settled::Failed => metrics.failed.inc_by(self.events),
        }
        let ack = self.ack.take().expect("an unsettled hold has its ack");
        self.lane.queue.settle(ack).await;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let metrics = &self.lane.metrics;
        if let Some(ack) = self.ack.take() {
            let panicking = std::thread::panicking();
            match (self.lane.queue.is_durable(), panicking) {
                (true, true) => self.lane.queue.give_back(ack),
                (true, false) => {}
                (false, true) => metrics.dropped_panic.inc_by(self.events),
                (false, false) => metrics.dropped_shutdown.inc_by(self.events),
            }
        }
        metrics.inflight.sub(self.events as i64);
    }
}
