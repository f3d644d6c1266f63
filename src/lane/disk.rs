//! The storage of a lane of a durable route (`storage: disk`): a cursor over the route's log.
//!
//! The lane reads records in log order from its own file handle, into a buffer of up to
//! [`READ_AHEAD`] bytes at a time (the log was just written, so this is the page cache), and
//! keeps the positions it has taken and not yet finished (`inflight`). Its watermark, the
//! position before which it has finished with everything, is the lowest of those, or where it
//! reads next: that is what the log persists and deletes segments by. A worker that panics
//! gives its events back (`redo`), to be read again.
//!
//! Nothing is ever dropped here: the log is bounded by the route's `disk_buffer` at ingest.
//! At shutdown the lane stops taking events; what it did not finish stays in the log for the
//! next start.

use prometheus::IntGauge;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::taken::Taken;
use crate::event::Event;
use crate::log::{record, segment_path, Log, Tail};

/// Bytes a lane reads from its segment at a time.
const READ_AHEAD: usize = 256 * 1024;

/// How long a lane waits before reading again after an I/O error.
const RETRY_READ: Duration = Duration::from_millis(100);

pub struct Disk {
    pub log: Arc<Log>,
    /// The lane's place among its route's targets.
    index: usize,
    /// The lane's `fanout_lane_inflight`, counted as events are taken.
    inflight: IntGauge,
    cursor: Mutex<Cursor>,
    /// Set at shutdown: take no more events.
    stopped: AtomicBool,
}

#[derive(Default)]
struct Cursor {
    started: bool,
    /// The position of the next record to read, and the records before it.
    next: Tail,
    /// Positions taken and not yet finished, in log order.
    inflight: Taken,
    /// Positions given back by a worker that panicked, to read again first.
    redo: Vec<u64>,
    /// The segment being read: its base and file.
    segment: Option<(u64, File)>,
    /// Bytes read ahead, and the position of the first.
    buffer: Vec<u8>,
    buffer_at: u64,
}

impl Disk {
    pub fn new(log: Arc<Log>, index: usize, inflight: IntGauge) -> Disk {
        Disk {
            log,
            index,
            inflight,
            cursor: Mutex::new(Cursor::default()),
            stopped: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cursor> {
        self.cursor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for the next record and takes it: the event and its position.
    pub async fn take(&self) -> (Event, u64) {
        if !self.log.is_open() {
            self.log.ready().await;
        }
        let mut tail = self.log.tail().expect("the log is open");
        loop {
            let written = *tail.borrow_and_update();
            if !self.stopped.load(Ordering::Relaxed) {
                if let Some(taken) = self.try_take(written) {
                    return taken;
                }
                if self.behind(written) {
                    // Written but not read: an I/O error (logged). Try again shortly.
                    tokio::time::sleep(RETRY_READ).await;
                    continue;
                }
            }
            if tail.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Whether records below `tail` wait to be read (or read again).
    fn behind(&self, tail: Tail) -> bool {
        let cursor = self.lock();
        !cursor.redo.is_empty() || (cursor.started && cursor.next.position < tail.position)
    }

    /// Takes the next record written, if there is one.
    pub fn try_take_now(&self) -> Option<(Event, u64)> {
        let tail = *self.log.tail()?.borrow();
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        self.try_take(tail)
    }

    /// Takes the next record below `tail`, if there is one.
    fn try_take(&self, tail: Tail) -> Option<(Event, u64)> {
        let mut cursor = self.lock();
        let taken = self.next_record(&mut cursor, tail)?;
        self.inflight.inc();
        Some(taken)
    }

    /// Moves records into `batch` (their positions into `positions`), oldest first, while it
    /// holds fewer than `max_events` and their bodies (one line each) fit in `max_bytes`.
    /// Returns the new byte count and whether the batch is full.
    pub fn take_more(
        &self,
        batch: &mut Vec<Event>,
        positions: &mut Vec<u64>,
        mut bytes: usize,
        (max_events, max_bytes): (usize, usize),
    ) -> (usize, bool) {
        let Some(tail) = self.log.tail().map(|t| *t.borrow()) else {
            return (bytes, false);
        };
        let mut cursor = self.lock();
        let before = batch.len();
        let mut full = false;
        while batch.len() < max_events && !self.stopped.load(Ordering::Relaxed) {
            let Some((event, position)) = self.next_record(&mut cursor, tail) else {
                break;
            };
            let size = event.body_len() + 1;
            if !batch.is_empty() && bytes + size > max_bytes {
                // Not this one: give it back, to be read first next time.
                cursor.inflight.remove(position);
                cursor.redo.push(position);
                full = true;
                break;
            }
            bytes += size;
            batch.push(event);
            positions.push(position);
        }
        self.inflight.add((batch.len() - before) as i64);
        (
            bytes,
            full || batch.len() >= max_events || bytes >= max_bytes,
        )
    }

    /// Completes when more records may have been written.
    pub async fn written(&self) {
        self.log.ready().await;
        let mut tail = self.log.tail().expect("the log is open");
        tail.borrow_and_update();
        let _ = tail.changed().await;
    }

    /// The next record to deliver (given back ones first), marked as taken.
    fn next_record(&self, cursor: &mut Cursor, tail: Tail) -> Option<(Event, u64)> {
        if !cursor.started {
            cursor.next = self.log.start(self.index);
            cursor.started = true;
        }
        if let Some(&position) = cursor.redo.last() {
            match self.read(cursor, position, tail.position) {
                Ok(Some((event, _))) => {
                    cursor.redo.pop();
                    cursor.inflight.insert(position);
                    return Some((event, position));
                }
                // Read once already: not damage, so an error; it stays given back.
                Ok(None) | Err(_) => return self.unreadable(position),
            }
        }
        while cursor.next.position < tail.position {
            let position = cursor.next.position;
            match self.read(cursor, position, tail.position) {
                Err(_) => return self.unreadable(position),
                Ok(Some((event, size))) => {
                    cursor.next.position += size as u64;
                    cursor.next.records += 1;
                    cursor.inflight.insert(position);
                    self.update_watermark(cursor);
                    return Some((event, position));
                }
                Ok(None) => {
                    // No whole record here though the log is written past it: the rest of
                    // this segment was cut at recovery. Go on at the next segment.
                    let (_, following) = self.log.segment_of(position);
                    match following {
                        Some(base) if base > position => cursor.next.position = base,
                        _ => {
                            tracing::error!(
                                route = self.log.route.name,
                                position,
                                "log: no record where one was written; the lane waits"
                            );
                            return None;
                        }
                    }
                }
            }
        }
        None
    }

    /// Logs that the record at `position` cannot be read now (an I/O error): the lane keeps
    /// its place and tries again ([`Disk::take`]), skipping nothing.
    fn unreadable(&self, position: u64) -> Option<(Event, u64)> {
        tracing::error!(
            route = self.log.route.name,
            position,
            "log: cannot read a record; the lane tries again"
        );
        None
    }

    /// Reads the record at `position` (below `tail`): its event and size. `None` if the file
    /// holds no whole, intact record there; an error if it could not be read.
    fn read(
        &self,
        cursor: &mut Cursor,
        position: u64,
        tail: u64,
    ) -> std::io::Result<Option<(Event, usize)>> {
        let max = self.log.max_record();
        let available = (tail - position) as usize;
        // Bytes last read at `position`; 0 before the first read.
        let mut asked = 0;
        loop {
            let offset = position.checked_sub(cursor.buffer_at).map(|o| o as usize);
            match offset.filter(|&o| o < cursor.buffer.len()) {
                Some(offset) => match record::read(&cursor.buffer[offset..], max) {
                    record::Read::Record(size) => {
                        let event = record::decode(&cursor.buffer[offset..offset + size]);
                        return Ok(Some((event, size)));
                    }
                    record::Read::Corrupt => return Ok(None),
                    record::Read::Partial(needed) if asked >= needed.min(available) => {
                        return Ok(None)
                    }
                    record::Read::Partial(needed) => {
                        asked = needed.max(READ_AHEAD).min(available);
                    }
                },
                None if asked > 0 => return Ok(None),
                None => asked = READ_AHEAD.min(available),
            }
            self.fill(cursor, position, asked)?;
        }
    }

    /// Reads up to `length` bytes at `position` into the buffer.
    fn fill(&self, cursor: &mut Cursor, position: u64, length: usize) -> std::io::Result<()> {
        let (base, _) = self.log.segment_of(position);
        if cursor.segment.as_ref().map(|(b, _)| *b) != Some(base) {
            let file = File::open(segment_path(self.log.dir(), base))?;
            cursor.segment = Some((base, file));
        }
        let (_, file) = cursor.segment.as_ref().expect("just opened");
        cursor.buffer.resize(length, 0);
        let mut read = 0;
        while read < length {
            match file.read_at(&mut cursor.buffer[read..], position - base + read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    cursor.buffer.clear();
                    return Err(e);
                }
            }
        }
        cursor.buffer.truncate(read);
        cursor.buffer_at = position;
        Ok(())
    }

    /// The watermark: the lowest position taken and not finished, given back, or next to read.
    fn update_watermark(&self, cursor: &Cursor) {
        let watermark = cursor
            .inflight
            .first()
            .into_iter()
            .chain(cursor.redo.iter().copied())
            .fold(cursor.next.position, u64::min);
        self.log.set_watermark(self.index, watermark);
    }

    /// The ack: the lane has finished with the records at `positions`.
    pub fn finish(&self, positions: &[u64]) {
        let mut cursor = self.lock();
        for &position in positions {
            cursor.inflight.remove(position);
        }
        self.update_watermark(&cursor);
    }

    /// Gives back the records at `positions`, taken by a worker that panicked.
    pub fn give_back(&self, positions: &[u64]) {
        let mut cursor = self.lock();
        for &position in positions {
            cursor.inflight.remove(position);
            cursor.redo.push(position);
        }
        self.update_watermark(&cursor);
    }

    /// Records written and not yet taken.
    pub fn depth(&self) -> usize {
        let Some(tail) = self.log.tail().map(|t| *t.borrow()) else {
            return 0;
        };
        let cursor = self.lock();
        let next = if cursor.started {
            cursor.next
        } else {
            self.log.start(self.index)
        };
        (tail.records.saturating_sub(next.records) as usize) + cursor.redo.len()
    }

    /// How long the oldest waiting record has waited.
    pub fn oldest_age(&self) -> Duration {
        let Some(tail) = self.log.tail().map(|t| *t.borrow()) else {
            return Duration::ZERO;
        };
        let mut cursor = self.lock();
        if !cursor.started {
            return Duration::ZERO;
        }
        let position = cursor
            .redo
            .iter()
            .copied()
            .min()
            .unwrap_or(cursor.next.position);
        if position >= tail.position {
            return Duration::ZERO;
        }
        match self.read(&mut cursor, position, tail.position) {
            Ok(Some((event, _))) => event.age(),
            _ => Duration::ZERO,
        }
    }

    /// Takes no more events: at shutdown, what is left stays in the log.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}
