//! The writer thread of a durable route's log: takes everything appended since its last turn,
//! writes it with one `write` (rolling to a new segment where a record would not fit), syncs as
//! `fsync` says, publishes the new tail to the lanes and completes the commits it covered. On
//! its idle turns (at least every [`HOUSEKEEPING`]) it persists the lanes' watermarks and
//! deletes the segments every lane has finished with.
//!
//! A failed write (a full disk, a permission taken away) fails the commits it covered (their
//! requests get 503), is logged, and is undone: the segment is cut back to its last whole
//! record, so no record is ever half-written. The next batch tries again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{cursor_path, lock, record, segment_path, Batch, Log, Tail};
use crate::spec::Fsync;

/// How often watermarks are persisted and finished segments deleted.
const HOUSEKEEPING: Duration = Duration::from_millis(100);

struct Writer {
    log: Arc<Log>,
    file: File,
    /// Base and length of the segment being written.
    base: u64,
    len: u64,
    records: u64,
    /// Data written since the last sync.
    unsynced: bool,
    last_sync: Instant,
    /// The watermarks as last persisted.
    persisted: Vec<u64>,
    /// The last write failed: the next one starts a new segment.
    broken: bool,
}

pub(super) fn start(log: Arc<Log>) -> io::Result<std::thread::JoinHandle<()>> {
    let open = log.opened();
    let tail = *open.tail.borrow();
    let base = *lock(&open.segments).last().unwrap_or(&0);
    let path = segment_path(&open.dir, base);
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    lock(&open.segments).dedup();
    if lock(&open.segments).is_empty() {
        lock(&open.segments).push(base);
    }
    let persisted = log
        .watermarks
        .iter()
        .map(|w| w.load(Ordering::Relaxed))
        .collect();
    let mut writer = Writer {
        log: log.clone(),
        file,
        base,
        len: tail.position - base,
        records: tail.records,
        unsynced: false,
        last_sync: Instant::now(),
        persisted,
        broken: false,
    };
    std::thread::Builder::new()
        .name(format!("log-{}", log.route.name))
        .spawn(move || writer.run())
}

impl Writer {
    fn run(&mut self) {
        let log = self.log.clone();
        let open = log.opened();
        let mut spare = Vec::with_capacity(64 * 1024);
        loop {
            let (records, batch, closing) = {
                let mut pending = lock(&open.pending);
                if pending.bytes.is_empty() && !pending.closing {
                    let wait = self.sync_due().unwrap_or(HOUSEKEEPING).min(HOUSEKEEPING);
                    pending = open
                        .wake
                        .wait_timeout(pending, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                std::mem::swap(&mut pending.bytes, &mut spare);
                let records = std::mem::take(&mut pending.records);
                let batch =
                    (records > 0).then(|| std::mem::replace(&mut pending.batch, Batch::new()));
                (records, batch, pending.closing)
            };
            if let Some(batch) = batch {
                let written = self.write(&spare, records);
                batch.finish(written);
                spare.clear();
            }
            if self.sync_due() == Some(Duration::ZERO) {
                self.sync_or_log();
            }
            self.housekeep();
            if closing && lock(&open.pending).bytes.is_empty() {
                self.sync_or_log();
                self.housekeep();
                return;
            }
        }
    }

    /// How long until the next periodic sync is due, if data waits for one.
    fn sync_due(&self) -> Option<Duration> {
        match self.log.route.disk.fsync {
            Fsync::Every(period) if self.unsynced => {
                Some(period.saturating_sub(self.last_sync.elapsed()))
            }
            _ => None,
        }
    }

    /// Writes `bytes` (`records` whole records), syncs per policy and publishes the tail.
    /// Returns whether all of it is written.
    fn write(&mut self, bytes: &[u8], records: u64) -> bool {
        let result = self.write_all(bytes);
        let result = result.and_then(|()| match self.log.route.disk.fsync {
            Fsync::Always => self.sync(),
            _ => Ok(()),
        });
        if let Err(error) = &result {
            tracing::error!(
                route = self.log.route.name,
                %error,
                records,
                "cannot write the route's log: its requests get 503 until it can"
            );
        }
        self.publish();
        result.is_ok()
    }

    /// Writes `bytes` into the current segment, rolling where a record would not fit. On an
    /// error, cuts the segment back to its last whole record.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let limit = self.log.opened().segment_size;
        let mut offset = 0;
        while offset < bytes.len() {
            if self.broken {
                self.roll()?;
            }
            let mut end = offset;
            let mut count = 0;
            while end < bytes.len() {
                let size = record_size(&bytes[end..]);
                if self.len + (end - offset + size) as u64 > limit
                    && self.len + (end - offset) as u64 > 0
                {
                    break;
                }
                end += size;
                count += 1;
            }
            if end == offset {
                self.roll()?;
                continue;
            }
            if let Err(error) = self.file.write_all(&bytes[offset..end]) {
                if self.file.set_len(self.len).is_err() {
                    self.broken = true;
                }
                return Err(error);
            }
            self.len += (end - offset) as u64;
            self.records += count;
            self.unsynced = true;
            offset = end;
        }
        Ok(())
    }

    /// Seals the current segment (synced, unless `fsync: never`) and starts the next.
    fn roll(&mut self) -> io::Result<()> {
        if self.log.route.disk.fsync != Fsync::Never {
            self.sync()?;
        }
        let open = self.log.opened();
        let base = self.base + self.len;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&open.dir, base))?;
        file.set_len(0)?;
        if self.log.route.disk.fsync != Fsync::Never {
            File::open(&open.dir)?.sync_all()?;
        }
        self.file = file;
        self.base = base;
        self.len = 0;
        self.broken = false;
        lock(&open.segments).push(base);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn sync_or_log(&mut self) {
        if let Err(error) = self.sync() {
            tracing::error!(route = self.log.route.name, %error, "cannot sync the route's log");
        }
    }

    /// Tells the lanes what is written.
    fn publish(&self) {
        let tail = Tail {
            position: self.base + self.len,
            records: self.records,
        };
        self.log.opened().tail.send_replace(tail);
    }

    /// Persists the watermarks that moved, and deletes segments every lane is past.
    fn housekeep(&mut self) {
        let open = self.log.opened();
        for (index, target) in self.log.route.targets.iter().enumerate() {
            let watermark = self.log.watermarks[index].load(Ordering::Relaxed);
            if watermark != self.persisted[index] {
                match persist_cursor(&open.dir, target.name, watermark) {
                    Ok(()) => self.persisted[index] = watermark,
                    Err(error) => {
                        tracing::warn!(route = self.log.route.name, target = target.name, %error, "cannot persist the lane's position")
                    }
                }
            }
        }
        let low = self.log.low_water();
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
                tracing::warn!(route = self.log.route.name, %error, "cannot delete a finished segment");
            }
        }
        lock(&open.segments).drain(..finished.len());
    }
}

/// The size of the record at the start of `bytes` (written by `record::encode`).
fn record_size(bytes: &[u8]) -> usize {
    record::FRAME + u32::from_le_bytes(bytes[..4].try_into().expect("a frame")) as usize
}

/// Writes a lane's watermark: 8 bytes and their CRC, replacing the file atomically.
fn persist_cursor(dir: &std::path::Path, target: &str, position: u64) -> io::Result<()> {
    let path = cursor_path(dir, target);
    let temporary = path.with_extension("new");
    let mut bytes = position.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&position.to_le_bytes()).to_le_bytes());
    std::fs::write(&temporary, &bytes)?;
    std::fs::rename(&temporary, &path)
}
