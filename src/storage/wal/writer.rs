//! Writing a durable route's log: [`write_pending`] takes everything appended since the last
//! write and writes it with one `write` into one segment, syncs as `fsync` says, and only then
//! publishes the new tail to the lanes and completes the commits it covered. With `fsync:
//! always` the route's writer thread does it, syncing after each write; otherwise the
//! appending request does (at most its own group: what was appended while it wrote is handed
//! to the thread), and the thread syncs every period.
//!
//! A group is all or nothing. A failed `write` (a full disk, an I/O error) fails every commit
//! of the group (their requests get 503) and cuts the segment back to where the group began,
//! so no lane ever sees one of its records. A failed `fdatasync` does the same with `fsync:
//! always`, and more: once an fsync has failed, Linux may have dropped the dirty pages and
//! report success the next time, so no later fsync of that file is trusted. The segment is
//! sealed at its last record known durable and the next group starts a new segment (if even
//! the cut-back failed, the bytes left past the seal are never read: a segment ends where the
//! next begins). The route keeps serving if the disk recovers; each failure is logged and
//! counted (`fanout_log_errors_total`). With a period, a failed sync of records already
//! acknowledged seals the segment the same way; those records are then as safe as a power
//! cut within the period leaves them.
//!
//! A segment is created under a temporary name with its header, synced, and renamed into
//! place, and the directory synced (`always`; with a period, the thread syncs it), so a
//! segment file either does not exist or has its whole header.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{lock, record, segment_path, Log, Op, Tail};
use crate::spec::Fsync;

/// The segment being written.
pub(super) struct Segment {
    file: Arc<File>,
    pub(super) base: u64,
    /// Bytes of the segment, header included, up to its last record.
    pub(super) len: u64,
    /// Records in the log, up to the end of this segment.
    pub(super) records: u64,
    /// Data written since the last sync.
    pub(super) unsynced: bool,
    pub(super) last_sync: Instant,
    /// Segments sealed since the last sync (`fsync` a period): the thread syncs them, and the
    /// directory that names them.
    pub(super) sealed: Vec<Arc<File>>,
    /// A write or sync of this segment failed: the next group starts a new segment.
    broken: bool,
    /// A failed write could not be cut back: the file may hold bytes past `len` (never
    /// acknowledged) until a later try ([`Segment::cut_back`]) succeeds.
    uncut: bool,
}

impl Segment {
    /// The last segment of `segments` (a new one at `tail` if there are none), written from
    /// `tail`.
    pub(super) fn open(
        dir: &Path,
        tail: Tail,
        segments: &[u64],
        sync: bool,
    ) -> io::Result<Segment> {
        let (base, file) = match segments.last() {
            Some(&base) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(segment_path(dir, base))?;
                (base, file)
            }
            None => (tail.position, create(dir, tail.position, sync)?),
        };
        let len = (tail.position - base).max(record::HEADER as u64);
        Ok(Segment {
            file: Arc::new(file),
            base,
            len,
            records: tail.records,
            unsynced: false,
            last_sync: Instant::now(),
            sealed: Vec::new(),
            broken: false,
            uncut: false,
        })
    }

    /// Tries again to cut the file back to `len` after a failed write whose cut failed: once
    /// a next segment exists recovery ends this one at its base anyway, but until then only
    /// the cut keeps a restart from reading what was refused.
    pub(super) fn cut_back(&mut self) {
        if self.uncut && self.file.set_len(self.len).is_ok() {
            self.uncut = false;
        }
    }

    /// Where the next record goes.
    pub(super) fn tail(&self) -> Tail {
        Tail {
            position: self.base + self.len,
            records: self.records,
        }
    }
}

/// Creates segment `base` in `dir` with its header: under a temporary name, then renamed into
/// place; with `sync`, the file and the directory are synced around the rename. The handle
/// returned is the one opened before the rename, so nothing can fail between the file
/// appearing under its name and the caller holding it but the directory's sync (after which
/// the caller must not write to the segment before this one: see [`roll`]).
pub(super) fn create(dir: &Path, base: u64, sync: bool) -> io::Result<File> {
    let path = segment_path(dir, base);
    let temporary = path.with_extension("seg.new");
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // Appending: after a failed write is cut back, the next write goes to the new end.
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&temporary)?;
    file.write_all(&record::header())?;
    if sync {
        file.sync_data()?;
    }
    std::fs::rename(&temporary, &path)?;
    #[cfg(feature = "failpoints")]
    crate::failpoints::io("log::roll_sync_dir")?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(file)
}

/// Syncs a directory, so that the names it holds survive a power cut.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes what is appended (the caller set `writing`; this clears it). A request writes one
/// group and hands what arrived meanwhile to the thread; the thread writes until nothing is
/// left.
pub(super) fn write_pending(log: &Log, request: bool) {
    let open = log.opened();
    loop {
        let (mut bytes, records, batch) = {
            let mut pending = lock(&open.pending);
            if pending.records == 0 {
                pending.writing = false;
                return;
            }
            let spare = std::mem::take(&mut pending.spare);
            let bytes = std::mem::replace(&mut pending.bytes, spare);
            let records = std::mem::take(&mut pending.records);
            let batch = std::mem::replace(&mut pending.batch, super::Batch::new());
            (bytes, records, batch)
        };
        batch.finish(write(log, &bytes, records));
        bytes.clear();
        let mut pending = lock(&open.pending);
        pending.spare = bytes;
        if request {
            pending.writing = false;
            if pending.records > 0 || pending.closing {
                drop(pending);
                open.wake.notify_one();
            }
            return;
        }
    }
}

/// Writes `bytes` (`records` whole records) into one segment, syncs if `fsync: always`, and
/// publishes the new tail. Returns whether all of it is written; if not, none of it is.
fn write(log: &Log, bytes: &[u8], records: u64) -> bool {
    let open = log.opened();
    let always = log.route.disk.fsync == Fsync::Always;
    let mut segment = lock(&open.segment);
    let full =
        segment.len > record::HEADER as u64 && segment.len + bytes.len() as u64 > open.segment_size;
    if segment.broken || full {
        if let Err(error) = roll(log, &mut segment) {
            // The next segment's file may exist even so (a rename done, its directory not
            // synced): recovery would end this segment at its base, so nothing more may go
            // here. The next roll makes the same file again.
            segment.broken = true;
            drop(segment);
            return failed(log, Op::Roll, &error, records);
        }
    }
    let before = segment.len;
    let mut written = write_failpoint().and_then(|()| (&*segment.file).write_all(bytes));
    let mut op = Op::Write;
    if written.is_ok() {
        segment.len += bytes.len() as u64;
        segment.unsynced = true;
        if always {
            written = sync(log, &mut segment);
            op = Op::Sync;
        }
    }
    if let Err(error) = written {
        // Sealed at `before`: every record there was synced (`always`) or is acknowledged.
        segment.len = before;
        segment.uncut = segment.file.set_len(before).is_err();
        segment.broken = segment.uncut || op == Op::Sync;
        drop(segment);
        return failed(log, op, &error, records);
    }
    segment.records += records;
    let tail = segment.tail();
    drop(segment);
    open.tail.send_replace(tail);
    true
}

/// Logs and counts a failed group; returns false.
fn failed(log: &Log, op: Op, error: &io::Error, records: u64) -> bool {
    log.metrics.error(op).inc();
    tracing::error!(
        route = log.route.name,
        %error,
        operation = op.as_str(),
        records,
        "cannot write the route's log: its requests get 503 until it can"
    );
    false
}

#[cfg(feature = "failpoints")]
fn write_failpoint() -> io::Result<()> {
    crate::failpoints::io("log::write")
}

#[cfg(not(feature = "failpoints"))]
fn write_failpoint() -> io::Result<()> {
    Ok(())
}

/// Seals the current segment and starts the next, at the current segment's end. A sealed
/// segment is synced now with `fsync: always`, by the thread within the period with a period,
/// never with `never`.
fn roll(log: &Log, segment: &mut Segment) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    crate::failpoints::io("log::roll")?;
    let open = log.opened();
    let fsync = log.route.disk.fsync;
    segment.cut_back();
    let base = segment.base + segment.len;
    let file = create(&open.dir, base, fsync != Fsync::Never)?;
    let sealed = std::mem::replace(&mut segment.file, Arc::new(file));
    // Acknowledged and not yet synced: the thread syncs it within the period (after a failed
    // sync that is a try, not a promise).
    if matches!(fsync, Fsync::Every(_)) && segment.unsynced {
        segment.sealed.push(sealed);
    }
    segment.base = base;
    segment.len = record::HEADER as u64;
    segment.unsynced = false;
    segment.broken = false;
    lock(&open.segments).push(base);
    Ok(())
}

/// Syncs the current segment, counting the sync.
fn sync(log: &Log, segment: &mut Segment) -> io::Result<()> {
    if segment.unsynced {
        #[cfg(feature = "failpoints")]
        crate::failpoints::io("log::sync")?;
        segment.file.sync_data()?;
        log.metrics.syncs.inc();
        segment.unsynced = false;
    }
    segment.last_sync = Instant::now();
    Ok(())
}

/// With `fsync` a period: syncs what is written and not synced (sealed segments, the
/// directory naming them, the current segment), outside the segment's lock so writers go on.
/// A failure seals the current segment: no later sync of it would be trusted.
pub(super) fn sync_period(log: &Log) {
    let open = log.opened();
    let (current, sealed) = {
        let mut segment = lock(&open.segment);
        let current = segment.unsynced.then(|| segment.file.clone());
        segment.unsynced = false;
        segment.last_sync = Instant::now();
        (current, std::mem::take(&mut segment.sealed))
    };
    let mut result = Ok(());
    for file in sealed.iter().chain(&current) {
        #[cfg(feature = "failpoints")]
        {
            result = result.and_then(|()| crate::failpoints::io("log::sync"));
        }
        result = result.and_then(|()| file.sync_data());
    }
    if !sealed.is_empty() {
        result = result.and_then(|()| sync_dir(&open.dir));
    }
    match result {
        Ok(()) => {
            if current.is_some() || !sealed.is_empty() {
                log.metrics.syncs.inc();
            }
        }
        Err(error) => {
            lock(&open.segment).broken = true;
            log.metrics.error(Op::Sync).inc();
            tracing::error!(route = log.route.name, %error, "cannot sync the route's log: its segment is sealed, writing goes on in a new one");
        }
    }
}
