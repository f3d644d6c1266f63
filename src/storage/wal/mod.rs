//! The log of a durable route (`storage: disk`): every accepted event is written once, before
//! its 202, to an append-only log of segment files in the route's directory; each lane of the
//! route is a cursor over it (`lane/disk.rs`) that reads at its own pace and acks what it has
//! finished. Segments every lane has finished with are deleted.
//!
//! Writing is group commit: ingest appends the event's record to a shared buffer
//! ([`Log::append`]) and awaits its [`Commit`]. Whoever writes takes everything buffered and
//! writes it with one `write`, syncs as `fsync` says, and only then publishes it to the lanes
//! and completes every commit it covered at once (`writer.rs`: a group is all or nothing):
//! - `fsync: always`: the route's writer thread, which syncs after each write, so 64
//!   concurrent clients share one fsync instead of queueing for one each;
//! - `never` or a period: the appending request itself when no write is under way, for its
//!   own group (what arrives while it writes is the next group, which the thread writes), so
//!   an event costs a `write` and no thread hop; the keeper thread syncs every period.
//!
//! Positions are byte offsets in the route's whole log, across segments: a segment file is
//! named after the position of its first byte (its header: `record::HEADER`), and a record
//! never spans two. Each lane's [`Progress`] (where it reads next, and what it has taken or
//! must read again below that) is saved every [`HOUSEKEEPING`] (`cursors/<target>`), so after
//! a crash a lane delivers again only what was unfinished or taken since the last save:
//! at-least-once, never a loss. Its *watermark*, the position before which it has finished
//! with everything, is what the disk budget and segment deletion go by.

mod commit;
mod housekeeping;
mod metrics;
mod progress;
pub mod record;
mod recover;
mod verify;
mod writer;

pub use commit::Commit;
use commit::{Batch, Pending};
pub use housekeeping::HOUSEKEEPING;
pub use metrics::{LogMetrics, Op};
pub use progress::Progress;
pub use recover::check_formats;
use recover::{Damage, DamageKind};
pub use verify::verify;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

use crate::event::Event;
use crate::ops::startup::StartupError;
use crate::spec::{Fsync, RouteSpec};
use crate::storage::Refused;

/// The log of one durable route, shared by its lanes.
pub struct Log {
    pub route: &'static RouteSpec,
    /// Per lane (in the route's target order), its watermark: a copy of its progress's, read
    /// without a lock by every append (the log's live size).
    watermarks: Vec<AtomicU64>,
    /// Set once the data directory is open and the log recovered.
    open: OnceLock<Open>,
    /// Flips to true when `open` is set.
    opened: watch::Sender<bool>,
    pub metrics: LogMetrics,
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
    /// Per lane, its progress; locked by the lane for each record it takes or finishes, and
    /// by the keeper thread to save it.
    progress: Vec<Mutex<Progress>>,
    /// Per lane, the acceptance time (ms since the epoch) of its oldest waiting record, read
    /// by the keeper thread; 0 when none waits.
    oldest: Vec<AtomicU64>,
    /// Where the log ended when it was recovered: records before it were written by an
    /// earlier process.
    recovered: u64,
    /// Damaged regions of the log (start and end positions, sorted), skipped by the lanes.
    holes: Mutex<Vec<(u64, u64)>>,
    /// The writer and keeper threads (`housekeeping.rs`), joined at close.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Set at close once the writer has written everything: the keeper syncs and saves a
    /// last time, and stops.
    written_all: AtomicBool,
}

/// A position in the log and how many records precede it (since the oldest segment kept at
/// start-up: what lanes count their depth against).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    pub position: u64,
    pub records: u64,
}

impl Log {
    pub fn new(route: &'static RouteSpec) -> Log {
        Log {
            route,
            watermarks: route.targets.iter().map(|_| AtomicU64::new(0)).collect(),
            open: OnceLock::new(),
            opened: watch::channel(false).0,
            metrics: LogMetrics::new(route),
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
        create_dirs(dir).map_err(|e| fail("create", e))?;
        let targets: Vec<&str> = self.route.targets.iter().map(|t| t.name).collect();
        let scan = recover::scan(dir, &targets, self.max_record(), true)
            .map_err(|e| fail("recover", e))?;
        scan.log(self.route.name, &targets);
        self.metrics
            .corrupt_records
            .inc_by(scan.corrupt_regions() as u64);
        let holes = scan
            .damaged
            .iter()
            .filter(|d| d.kind == DamageKind::Hole)
            .map(Damage::positions)
            .collect();
        let sync = self.route.disk.fsync != Fsync::Never;
        let segment = writer::Segment::open(dir, scan.tail, &scan.segments, sync)
            .map_err(|e| fail("write in", e))?;
        let mut segments = scan.segments;
        if segments.is_empty() {
            segments.push(segment.base);
        }
        let progress: Vec<Mutex<Progress>> = scan
            .starts
            .iter()
            .zip(scan.redo)
            .map(|(&next, redo)| {
                Mutex::new(Progress {
                    next,
                    redo: redo.into_iter().collect(),
                    ..Progress::default()
                })
            })
            .collect();
        for (watermark, progress) in self.watermarks.iter().zip(&progress) {
            watermark.store(lock(progress).watermark(), Ordering::Relaxed);
        }
        let open = Open {
            dir: dir.to_owned(),
            segment_size: (self.route.disk.budget / 8).clamp(1 << 20, 64 << 20),
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
            tail: watch::channel(segment.tail()).0,
            segment: Mutex::new(segment),
            segments: Mutex::new(segments),
            oldest: scan.oldest.iter().map(|_| AtomicU64::new(0)).collect(),
            progress,
            holes: Mutex::new(holes),
            recovered: scan.tail.position,
            threads: Mutex::new(Vec::new()),
            written_all: AtomicBool::new(false),
        };
        if self.open.set(open).is_err() {
            return Err(fail("open twice", std::io::ErrorKind::Other.into()));
        }
        let threads = housekeeping::start(self).map_err(|e| fail("write in", e))?;
        lock(&self.opened().threads).extend(threads);
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
            writer::write_pending(self, true);
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

    /// Lane `lane`'s progress. The caller holds it only briefly and calls
    /// [`Log::progressed`] after changing it.
    pub fn progress(&self, lane: usize) -> MutexGuard<'_, Progress> {
        lock(&self.opened().progress[lane])
    }

    /// Marks lane `lane`'s progress changed, and its watermark moved.
    pub fn progressed(&self, lane: usize, progress: &mut Progress) {
        progress.changes += 1;
        self.watermarks[lane].store(progress.watermark(), Ordering::Relaxed);
    }

    /// What is written; `None` before the log is open.
    pub fn tail(&self) -> Option<watch::Receiver<Tail>> {
        self.open.get().map(|open| open.tail.subscribe())
    }

    /// Where the log ended when this process recovered it.
    pub fn recovered_tail(&self) -> u64 {
        self.opened().recovered
    }

    /// How long lane `lane`'s oldest waiting record has waited (as of the keeper thread's last
    /// look, at most [`HOUSEKEEPING`] ago).
    pub fn oldest_age(&self, lane: usize) -> Duration {
        let Some(open) = self.open.get() else {
            return Duration::ZERO;
        };
        match open.oldest[lane].load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            millis => SystemTime::now()
                .duration_since(UNIX_EPOCH + Duration::from_millis(millis))
                .unwrap_or_default(),
        }
    }

    /// Where the lane reading at `position` (no whole record there, below `end`) goes on: past
    /// the damage there, to the next whole record before `end`, or `end`. Damage found by
    /// recovery is known; damage found now is logged and counted first.
    pub fn skip_damage(&self, position: u64, end: u64, bytes: &[u8]) -> u64 {
        let mut holes = lock(&self.opened().holes);
        let at = holes.partition_point(|&(start, _)| start < position);
        if let Some(&(start, hole_end)) = holes.get(at) {
            if start == position {
                return hole_end;
            }
        }
        let skip =
            record::resync(bytes, self.max_record()).map_or(end, |offset| position + offset as u64);
        holes.insert(at, (position, skip));
        self.metrics.corrupt_records.inc();
        tracing::error!(
            route = self.route.name,
            position,
            bytes = skip - position,
            "log: corrupt records skipped (they are not delivered; the records after them are)"
        );
        skip
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

    /// Writes what is buffered, syncs it, saves every lane's progress and stops the writer. The
    /// log refuses appends from then on.
    pub fn close(&self) {
        let Some(open) = self.open.get() else {
            return;
        };
        lock(&open.pending).closing = true;
        open.wake.notify_one();
        let mut threads = std::mem::take(&mut *lock(&open.threads)).into_iter();
        if let Some(writer) = threads.next() {
            let _ = writer.join();
        }
        lock(&open.segment).cut_back();
        open.written_all.store(true, Ordering::Release);
        for keeper in threads {
            keeper.thread().unpark();
            let _ = keeper.join();
        }
    }
}

/// The path of segment `base` in `dir`.
pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The path of a lane's saved progress.
pub fn cursor_path(dir: &Path, target: &str) -> PathBuf {
    dir.join("cursors").join(target)
}

/// Creates a route's directory and its `cursors`, syncing each new directory's parent so
/// that the names survive a power cut.
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    let cursors = dir.join("cursors");
    let mut missing = Vec::new();
    let mut path = cursors.as_path();
    while !path.exists() {
        missing.push(path.to_owned());
        match path.parent() {
            Some(parent) => path = parent,
            None => break,
        }
    }
    std::fs::create_dir_all(&cursors)?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            writer::sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Directories of `data_dir/routes` that are not the directory of one of `routes` (a route
/// renamed or removed): reported, never deleted.
pub fn unknown_route_dirs(data_dir: &Path, routes: &[&str]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("routes")) else {
        return Vec::new();
    };
    let mut unknown: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|entry| !routes.iter().any(|r| entry.file_name() == *r))
        .map(|entry| entry.path())
        .collect();
    unknown.sort();
    unknown
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
