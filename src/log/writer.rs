//! Writing a durable route's log: [`write_pending`] takes everything appended since the last
//! write, writes it with one `write` (rolling to a new segment where a record would not fit),
//! syncs as `fsync` says, publishes the new tail to the lanes and completes the commits it
//! covered. With `fsync: always` the route's writer thread does it, syncing after each write;
//! otherwise the appending request does, and the thread syncs every period. On its idle turns
//! (at least every [`HOUSEKEEPING`]) the thread also persists the lanes' watermarks and deletes
//! the segments every lane has finished with.
//!
//! A failed write (a full disk, a permission taken away) fails the commits it covered (their
//! requests get 503), is logged, and is undone: the segment is cut back to its last whole
//! record, so no record is ever half-written. The next write tries again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{cursor_path, lock, record, segment_path, Log, Tail};
use crate::spec::Fsync;

/// How often watermarks are persisted and finished segments deleted.
const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// The segment being written.
pub(super) struct Segment {
    file: Arc<File>,
    base: u64,
    len: u64,
    /// Records in the log, up to the end of this segment.
    records: u64,
    /// Data written since the last sync.
    unsynced: bool,
    last_sync: Instant,
    /// Segments sealed since the last sync (`fsync` a period): the thread syncs them, and the
    /// directory that names them.
    sealed: Vec<Arc<File>>,
    /// The last write failed: the next one starts a new segment.
    broken: bool,
}

impl Segment {
    /// The last segment of `segments` (a new one if there are none), written from `tail`.
    pub(super) fn open(dir: &Path, tail: Tail, segments: &[u64]) -> io::Result<Segment> {
        let base = segments.last().copied().unwrap_or(tail.position);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, base))?;
        Ok(Segment {
            file: Arc::new(file),
            base,
            len: tail.position - base,
            records: tail.records,
            unsynced: false,
            last_sync: Instant::now(),
            sealed: Vec::new(),
            broken: false,
        })
    }
}

/// Writes what is appended until nothing is (the caller set `writing`; this clears it).
pub(super) fn write_pending(log: &Log) {
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
        lock(&open.pending).spare = bytes;
    }
}

/// Writes `bytes` (`records` whole records), syncs if `fsync: always`, publishes the tail.
/// Returns whether all of it is written.
fn write(log: &Log, bytes: &[u8], records: u64) -> bool {
    let open = log.opened();
    let mut segment = lock(&open.segment);
    let mut result = write_all(log, &mut segment, bytes);
    if result.is_ok() && log.route.disk.fsync == Fsync::Always {
        result = sync(&mut segment);
    }
    if let Err(error) = &result {
        tracing::error!(
            route = log.route.name,
            %error,
            records,
            "cannot write the route's log: its requests get 503 until it can"
        );
    }
    let tail = Tail {
        position: segment.base + segment.len,
        records: segment.records,
    };
    drop(segment);
    open.tail.send_replace(tail);
    result.is_ok()
}

/// Writes `bytes` into the current segment, rolling where a record would not fit. On an
/// error, cuts the segment back to its last whole record.
fn write_all(log: &Log, segment: &mut Segment, bytes: &[u8]) -> io::Result<()> {
    let limit = log.opened().segment_size;
    let mut offset = 0;
    while offset < bytes.len() {
        if segment.broken {
            roll(log, segment)?;
        }
        let (mut end, mut count) = (offset, 0);
        while end < bytes.len() {
            let size = record_size(&bytes[end..]);
            let used = segment.len + (end - offset) as u64;
            if used > 0 && used + size as u64 > limit {
                break;
            }
            end += size;
            count += 1;
        }
        if end == offset {
            roll(log, segment)?;
            continue;
        }
        if let Err(error) = (&*segment.file).write_all(&bytes[offset..end]) {
            if segment.file.set_len(segment.len).is_err() {
                segment.broken = true;
            }
            return Err(error);
        }
        segment.len += (end - offset) as u64;
        segment.records += count;
        segment.unsynced = true;
        offset = end;
    }
    Ok(())
}

/// Seals the current segment and starts the next. A sealed segment is synced now with
/// `fsync: always`, by the thread within the period with a period, never with `never`.
fn roll(log: &Log, segment: &mut Segment) -> io::Result<()> {
    let open = log.opened();
    let fsync = log.route.disk.fsync;
    if fsync == Fsync::Always {
        sync(segment)?;
    }
    let base = segment.base + segment.len;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(&open.dir, base))?;
    file.set_len(0)?;
    if fsync == Fsync::Always {
        File::open(&open.dir)?.sync_all()?;
    }
    let sealed = std::mem::replace(&mut segment.file, Arc::new(file));
    if matches!(fsync, Fsync::Every(_)) && segment.unsynced {
        segment.sealed.push(sealed);
    }
    segment.base = base;
    segment.len = 0;
    segment.broken = false;
    lock(&open.segments).push(base);
    Ok(())
}

fn sync(segment: &mut Segment) -> io::Result<()> {
    if segment.unsynced {
        segment.file.sync_data()?;
        segment.unsynced = false;
    }
    segment.last_sync = Instant::now();
    Ok(())
}

/// Starts the route's writer thread.
pub(super) fn start(log: Arc<Log>) -> io::Result<std::thread::JoinHandle<()>> {
    let persisted = log
        .watermarks
        .iter()
        .map(|w| w.load(Ordering::Relaxed))
        .collect();
    std::thread::Builder::new()
        .name(format!("log-{}", log.route.name))
        .spawn(move || run(&log, persisted))
}

/// The writer thread: writes and syncs (`always`) or syncs every period, and keeps house,
/// until the log closes.
fn run(log: &Log, mut persisted: Vec<u64>) {
    let open = log.opened();
    let always = log.route.disk.fsync == Fsync::Always;
    loop {
        let closing = {
            let mut pending = lock(&open.pending);
            let nothing = !always || pending.records == 0;
            if nothing && !pending.closing {
                pending.idle = always;
                let wait = sync_due(log).unwrap_or(HOUSEKEEPING).min(HOUSEKEEPING);
                pending = open
                    .wake
                    .wait_timeout(pending, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                pending.idle = false;
            }
            let take = (always || !pending.writing) && pending.records > 0;
            if take {
                pending.writing = true;
            }
            (pending.closing, take)
        };
        let (closing, take) = closing;
        if take {
            write_pending(log);
        }
        if sync_due(log) == Some(Duration::ZERO) || closing {
            sync_or_log(log);
        }
        housekeep(log, &mut persisted);
        if closing && lock(&open.pending).records == 0 && !lock(&open.pending).writing {
            return;
        }
    }
}

/// With `fsync` a period: how long until the next sync is due, if data waits for one.
fn sync_due(log: &Log) -> Option<Duration> {
    let Fsync::Every(period) = log.route.disk.fsync else {
        return None;
    };
    let segment = lock(&log.opened().segment);
    (segment.unsynced || !segment.sealed.is_empty())
        .then(|| period.saturating_sub(segment.last_sync.elapsed()))
}

/// Syncs what is written and not synced: sealed segments, the directory naming them, and the
/// current segment. The files are synced outside the segment's lock, so writers go on.
fn sync_or_log(log: &Log) {
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
        result = result.and_then(|()| file.sync_data());
    }
    if !sealed.is_empty() {
        result = result.and_then(|()| File::open(&open.dir)?.sync_all());
    }
    if let Err(error) = result {
        lock(&open.segment).unsynced = true;
        tracing::error!(route = log.route.name, %error, "cannot sync the route's log");
    }
}

/// Persists the watermarks that moved, and deletes segments every lane is past.
fn housekeep(log: &Log, persisted: &mut [u64]) {
    let open = log.opened();
    for (index, target) in log.route.targets.iter().enumerate() {
        let watermark = log.watermarks[index].load(Ordering::Relaxed);
        if watermark != persisted[index] {
            match persist_cursor(&open.dir, target.name, watermark) {
                Ok(()) => persisted[index] = watermark,
                Err(error) => {
                    tracing::warn!(route = log.route.name, target = target.name, %error, "cannot persist the lane's position")
                }
            }
        }
    }
    let low = log.low_water();
    let finished: Vec<u64> = {
        let segments = lock(&open.segments);
        segments
            .windows(2)
            .take_while(|pair| pair[1] <= low)
            .map(|pair| pair[0])
            .collect()
    };
    if finished.is_empty() {
        return;
    }
    for base in &finished {
        if let Err(error) = std::fs::remove_file(segment_path(&open.dir, *base)) {
            tracing::warn!(route = log.route.name, %error, "cannot delete a finished segment");
        }
    }
    lock(&open.segments).drain(..finished.len());
}

/// The size of the record at the start of `bytes` (written by `record::encode`).
fn record_size(bytes: &[u8]) -> usize {
    record::FRAME + u32::from_le_bytes(bytes[..4].try_into().expect("a frame")) as usize
}

/// Writes a lane's watermark: 8 bytes and their CRC, replacing the file atomically.
fn persist_cursor(dir: &Path, target: &str, position: u64) -> io::Result<()> {
    let path = cursor_path(dir, target);
    let temporary = path.with_extension("new");
    let mut bytes = position.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&position.to_le_bytes()).to_le_bytes());
    std::fs::write(&temporary, &bytes)?;
    std::fs::rename(&temporary, &path)
}
