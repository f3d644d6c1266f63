//! The log of a durable route (`storage: disk`): every accepted event is written once, before
//! its 202, to an append-only log of segment files in the route's directory; each lane of the
//! route is a cursor over it (`lane/disk.rs`) that reads at its own pace and acks what it has
//! finished. Segments every lane has finished with are deleted.
//!
//! Writing is group commit: ingest appends the event's record to a shared buffer
//! ([`Log::append`]) and awaits its [`Commit`]. Whoever writes takes everything buffered and
//! writes it with one `write`, then completes every commit it covered at once (`writer.rs`):
//! - `fsync: always`: the route's writer thread, which syncs after each write, so 64
//!   concurrent clients share one fsync instead of queueing for one each;
//! - `never` or a period: the appending request itself when no write is under way (a
//!   request arriving meanwhile adds to the next write, made by the same writer before it
//!   lets go), so an event costs a `write` and no thread hop; the writer thread only syncs
//!   every period.
//!
//! Positions are byte offsets in the route's whole log, across segments: a segment file is
//! named after the position of its first byte, and a record never spans two. A lane's
//! *watermark* is the position before which it has finished with every record (delivered,
//! failed, dead-lettered); it is persisted lazily (`cursors/<target>`), so after a crash a lane
//! resumes at most a little before where it was: at-least-once, never a loss.

pub mod record;
mod recover;
mod writer;

pub use recover::{scan, Scan};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use tokio::sync::{watch, Notify};

use crate::event::Event;
use crate::spec::{Fsync, RouteSpec};
use crate::startup::StartupError;

/// The log of one durable route, shared by its lanes.
pub struct Log {
    pub route: &'static RouteSpec,
    /// Per lane (in the route's target order), its watermark.
    watermarks: Vec<AtomicU64>,
    /// Set once the data directory is open and the log recovered.
    open: OnceLock<Open>,
    /// Flips to true when `open` is set.
    opened: watch::Sender<bool>,
}

/// A recovered log, being written.
struct Open {
    dir: PathBuf,
    /// Bytes after which the writer starts a new segment.
    segment_size: u64,
    pending: Mutex<Pending>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// The segment being written.
    segment: Mutex<writer::Segment>,
    /// What is written (and synced as `fsync` says): readers read up to it.
    tail: watch::Sender<Tail>,
    /// Bases of the segments on disk, sorted.
    segments: Mutex<Vec<u64>>,
    /// Per lane, where it resumes: its persisted watermark and how many records precede it.
    starts: Vec<Tail>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A position in the log and how many records precede it (since the oldest segment kept at
/// start-up: what lanes count their depth against).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    pub position: u64,
    pub records: u64,
}

/// Records appended and not yet taken by a writer.
struct Pending {
    bytes: Vec<u8>,
    records: u64,
    /// Completes when the writer has written what `bytes` holds.
    batch: Arc<Batch>,
    /// The buffer of the last write, cleared, for the next one.
    spare: Vec<u8>,
    /// A request is writing (`never` or a period): appends leave the write to it.
    writing: bool,
    /// The writer thread waits for appends (`always`): the next append wakes it.
    idle: bool,
    closing: bool,
}

/// One write of the writer thread, and everyone waiting for it.
struct Batch {
    state: AtomicU8,
    done: Notify,
}

const WAITING: u8 = 0;
const WRITTEN: u8 = 1;
const FAILED: u8 = 2;

impl Batch {
    fn new() -> Arc<Batch> {
        Arc::new(Batch {
            state: AtomicU8::new(WAITING),
            done: Notify::new(),
        })
    }

    fn finish(&self, written: bool) {
        let state = if written { WRITTEN } else { FAILED };
        self.state.store(state, Ordering::Release);
        self.done.notify_waiters();
    }
}

/// Why the log did not take an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// It would take the log past the route's `disk_buffer`.
    Full,
    /// The log is not open (yet, or any more).
    NotOpen,
    /// The write that covered it failed.
    Failed,
}

/// An event appended to the log, to await before answering 202 (a clone awaits the same).
#[must_use]
#[derive(Clone)]
pub struct Commit(Arc<Batch>);

impl Commit {
    /// Completes once the event's record is written (and synced, with `fsync: always`), or
    /// could not be.
    pub async fn written(self) -> Result<(), Refused> {
        loop {
            let done = self.0.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            match self.0.state.load(Ordering::Acquire) {
                WRITTEN => return Ok(()),
                FAILED => return Err(Refused::Failed),
                _ => done.await,
            }
        }
    }
}

impl Log {
    pub fn new(route: &'static RouteSpec) -> Log {
        Log {
            route,
            watermarks: route.targets.iter().map(|_| AtomicU64::new(0)).collect(),
            open: OnceLock::new(),
            opened: watch::channel(false).0,
        }
    }

    /// Recovers the log in `dir` (creating it if new) and starts its writer. Called once, with
    /// the data directory locked.
    pub fn open(self: &Arc<Log>, dir: &Path) -> Result<(), StartupError> {
        let fail = |what: &str, e: std::io::Error| {
            StartupError(format!(
                "route \"{}\": cannot {what} {}: {e}",
                self.route.name,
                dir.display()
            ))
        };
        std::fs::create_dir_all(dir.join("cursors")).map_err(|e| fail("create", e))?;
        let targets: Vec<&str> = self.route.targets.iter().map(|t| t.name).collect();
        let scan = recover::scan(dir, &targets, true).map_err(|e| fail("recover", e))?;
        scan.log(self.route.name);
        let (tail, mut segments, starts) = (scan.tail, scan.segments, scan.starts);
        if segments.is_empty() {
            segments.push(tail.position);
        }
        for (watermark, start) in self.watermarks.iter().zip(&starts) {
            watermark.store(start.position, Ordering::Relaxed);
        }
        let segment_size = (self.route.disk.budget / 8).clamp(1 << 20, 64 << 20);
        let open = Open {
            dir: dir.to_owned(),
            segment_size,
            pending: Mutex::new(Pending {
                bytes: Vec::with_capacity(64 * 1024),
                records: 0,
                batch: Batch::new(),
                spare: Vec::with_capacity(64 * 1024),
                writing: false,
                idle: false,
                closing: false,
            }),
            wake: Condvar::new(),
            segment: Mutex::new(
                writer::Segment::open(dir, tail, &segments).map_err(|e| fail("write in", e))?,
            ),
            tail: watch::channel(tail).0,
            segments: Mutex::new(segments),
            starts,
            thread: Mutex::new(None),
        };
        if self.open.set(open).is_err() {
            return Err(fail("open twice", std::io::ErrorKind::Other.into()));
        }
        let thread = writer::start(self.clone()).map_err(|e| fail("write in", e))?;
        *lock(&self.opened().thread) = Some(thread);
        self.opened.send_replace(true);
        Ok(())
    }

    fn opened(&self) -> &Open {
        self.open.get().expect("only called once the log is open")
    }

    /// Completes once the log is open.
    pub async fn ready(&self) {
        let mut opened = self.opened.subscribe();
        let _ = opened.wait_for(|open| *open).await;
    }

    pub fn is_open(&self) -> bool {
        self.open.get().is_some()
    }

    /// Appends `event` for every lane of the route, unless that would take the log past its
    /// `disk_buffer`.
    pub fn append(&self, event: &Event) -> Result<Commit, Refused> {
        let Some(open) = self.open.get() else {
            return Err(Refused::NotOpen);
        };
        let size = record::size(event) as u64;
        let mut pending = lock(&open.pending);
        if pending.closing {
            return Err(Refused::NotOpen);
        }
        let live = open.tail.borrow().position + pending.bytes.len() as u64 - self.low_water();
        if live + size > self.route.disk.budget {
            return Err(Refused::Full);
        }
        record::encode(event, &mut pending.bytes);
        pending.records += 1;
        let commit = Commit(pending.batch.clone());
        if self.route.disk.fsync == Fsync::Always {
            let wake = std::mem::take(&mut pending.idle);
            drop(pending);
            if wake {
                open.wake.notify_one();
            }
        } else if !std::mem::replace(&mut pending.writing, true) {
            drop(pending);
            writer::write_pending(self);
        }
        Ok(commit)
    }

    /// The lowest watermark of the route's lanes: every record before it is finished with.
    fn low_water(&self) -> u64 {
        self.watermarks
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Sets lane `lane`'s watermark.
    pub fn set_watermark(&self, lane: usize, position: u64) {
        self.watermarks[lane].store(position, Ordering::Relaxed);
    }

    /// What is written; `None` before the log is open.
    pub fn tail(&self) -> Option<watch::Receiver<Tail>> {
        self.open.get().map(|open| open.tail.subscribe())
    }

    /// Where lane `lane` resumes.
    pub fn start(&self, lane: usize) -> Tail {
        self.opened().starts[lane]
    }

    /// The route's directory.
    pub fn dir(&self) -> &Path {
        &self.opened().dir
    }

    /// The base of the segment holding `position`, and of the one after it if any.
    pub fn segment_of(&self, position: u64) -> (u64, Option<u64>) {
        let segments = lock(&self.opened().segments);
        let index = segments.partition_point(|&base| base <= position);
        let base = index.checked_sub(1).map_or(0, |i| segments[i]);
        (base, segments.get(index).copied())
    }

    /// The largest record the log may hold, to tell a credible length from damage.
    pub fn max_record(&self) -> usize {
        self.route.max_body as usize + 64 * 1024
    }

    /// Writes what is buffered, syncs it, persists every watermark and stops the writer. The
    /// log refuses appends from then on.
    pub fn close(&self) {
        let Some(open) = self.open.get() else {
            return;
        };
        lock(&open.pending).closing = true;
        open.wake.notify_one();
        if let Some(thread) = lock(&open.thread).take() {
            let _ = thread.join();
        }
    }
}

/// The path of segment `base` in `dir`.
pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The path of a lane's persisted watermark.
pub fn cursor_path(dir: &Path, target: &str) -> PathBuf {
    dir.join("cursors").join(target)
}

/// The directory of route `route` in data directory `data_dir`.
pub fn route_dir(data_dir: &Path, route: &str) -> PathBuf {
    data_dir.join("routes").join(route)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
