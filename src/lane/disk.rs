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
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::event::Event;
use crate::log::{record, segment_path, Log, Tail};

/// Bytes a lane reads from its segment at a time.
const READ_AHEAD: usize = 256 * 1024;

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
            }
            if tail.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
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
        if let Some(position) = cursor.redo.pop() {
            if let Some((event, _)) = self.read(cursor, position, tail.position) {
                cursor.inflight.insert(position);
                return Some((event, position));
            }
        }
        while cursor.next.position < tail.position {
            let position = cursor.next.position;
            match self.read(cursor, position, tail.position) {
                Some((event, size)) => {
                    cursor.next.position += size as u64;
                    cursor.next.records += 1;
                    cursor.inflight.insert(position);
                    self.update_watermark(cursor);
                    return Some((event, position));
                }
                None => {
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

    /// Reads the record at `position` (below `tail`): its event and size. `None` if the file
    /// holds no whole, intact record there.
    fn read(&self, cursor: &mut Cursor, position: u64, tail: u64) -> Option<(Event, usize)> {
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
                        return Some((event, size));
                    }
                    record::Read::Corrupt => return None,
                    record::Read::Partial(needed) if asked >= needed.min(available) => return None,
                    record::Read::Partial(needed) => {
                        asked = needed.max(READ_AHEAD).min(available);
                    }
                },
                None if asked > 0 => return None,
                None => asked = READ_AHEAD.min(available),
            }
            self.fill(cursor, position, asked).ok()?;
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
        self.read(&mut cursor, position, tail.position)
            .map_or(Duration::ZERO, |(event, _)| event.age())
    }

    /// Takes no more events: at shutdown, what is left stays in the log.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// The positions a lane has taken and not finished, in log order: taken ones are appended
/// (a given-back one is inserted in its place), finished ones are marked and leave from the
/// front, so the lowest is at hand without a tree.
#[derive(Default)]
struct Taken(VecDeque<(u64, bool)>);

impl Taken {
    fn insert(&mut self, position: u64) {
        match self.0.back() {
            Some(&(last, _)) if last > position => {
                let at = self.0.partition_point(|&(p, _)| p < position);
                self.0.insert(at, (position, false));
            }
            _ => self.0.push_back((position, false)),
        }
    }

    /// Marks `position` finished.
    fn remove(&mut self, position: u64) {
        if let Ok(at) = self.0.binary_search_by_key(&position, |&(p, _)| p) {
            self.0[at].1 = true;
        }
        while self.0.front().is_some_and(|&(_, done)| done) {
            self.0.pop_front();
        }
    }

    /// The lowest position not finished.
    fn first(&self) -> Option<u64> {
        self.0.front().map(|&(position, _)| position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_unfinished_position_is_at_the_front() {
        let mut taken = Taken::default();
        for position in [10, 20, 30] {
            taken.insert(position);
        }
        taken.remove(20);
        assert_eq!(
            taken.first(),
            Some(10),
            "finished out of order: 10 still holds it"
        );
        taken.remove(10);
        assert_eq!(taken.first(), Some(30), "10 and 20 leave together");
        taken.insert(5);
        assert_eq!(
            taken.first(),
            Some(5),
            "a given-back position goes in its place"
        );
        taken.remove(5);
        taken.remove(30);
        assert_eq!(taken.first(), None);
    }
}
