//! The storage of a lane of a durable route (`storage: disk`): a cursor over the route's log.
//!
//! The lane reads records in log order from its own file handle, into a buffer of up to
//! [`READ_AHEAD`] bytes at a time: what this process wrote is read from the page cache; the
//! backlog a previous process left is read from the disk in `block_in_place`, so the runtime
//! moves its other tasks off the thread meanwhile. Where it is and what it has taken live in its
//! [`Progress`], kept by the log, which saves it: the lane takes a record (`taken`), finishes it
//! (the ack), or gives it back after a panic (`redo`, read again first). Damage in the log is
//! skipped where the log says (`Log::skip_damage`), never waited on.
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

use crate::event::Event;
use crate::storage::wal::{record, segment_path, Log, Op, Progress, Tail};

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
    /// What the lane has read; locked before its progress when both are.
    cursor: Mutex<Cursor>,
    /// Set at shutdown: take no more events.
    stopped: AtomicBool,
}

/// The lane's reading state.
#[derive(Default)]
struct Cursor {
    /// The segment being read: its base and file.
    segment: Option<(u64, File)>,
    /// Bytes read ahead, and the position of the first.
    buffer: Vec<u8>,
    buffer_at: u64,
}

/// What is at a position of the log, for a lane about to read it.
enum Found {
    Record(Event, usize),
    /// No whole record (damage); the lane's segment ends at this position.
    Damage(u64),
    /// Past the segment's end: the next segment starts here.
    Next(u64),
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
        let progress = self.log.progress(self.index);
        !progress.redo.is_empty() || progress.next.position < tail.position
    }

    /// Takes the next record written, if there is one.
    pub fn try_take_now(&self) -> Option<(Event, u64)> {
        let tail = *self.log.tail()?.borrow();
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        self.try_take(tail)
    }

    /// Takes the next record below `tail` (or what is written by the time the lane's cursor is
    /// this worker's), if there is one.
    fn try_take(&self, tail: Tail) -> Option<(Event, u64)> {
        let mut cursor = self.lock();
        let tail = self.log.tail().map_or(tail, |now| *now.borrow());
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
        let mut cursor = self.lock();
        let Some(tail) = self.log.tail().map(|t| *t.borrow()) else {
            return (bytes, false);
        };
        let before = batch.len();
        let mut full = false;
        while batch.len() < max_events && !self.stopped.load(Ordering::Relaxed) {
            let Some((event, position)) = self.next_record(&mut cursor, tail) else {
                break;
            };
            let size = event.body_len() + 1;
            if !batch.is_empty() && bytes + size > max_bytes {
                // Not this one: give it back, to be read first next time.
                self.give_back(&[position]);
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
        let (redo, mut position) = {
            let progress = self.log.progress(self.index);
            (progress.redo.first(), progress.next.position)
        };
        if let Some(position) = redo {
            let found = self.read(cursor, position, tail.position);
            let mut progress = self.log.progress(self.index);
            match found {
                Ok(Found::Record(event, _)) => {
                    // Not `pop_first`: a worker may have given back a lower one meanwhile.
                    progress.redo.remove(position);
                    progress.taken.insert(position);
                    self.log.progressed(self.index, &mut progress);
                    return Some((event, position));
                }
                Ok(Found::Damage(_)) => {
                    // Recovery checked every position it gave back: damage found since.
                    progress.redo.remove(position);
                    self.log.progressed(self.index, &mut progress);
                    tracing::error!(
                        route = self.log.route.name,
                        position,
                        "log: a record to deliver again is unreadable; skipped"
                    );
                    return None;
                }
                // Past the tail this worker knew: given back by another worker since. It stays
                // to be read again, with the tail as it is now.
                Ok(Found::Next(_)) => return None,
                Err(_) => return self.unreadable(position),
            }
        }
        while position < tail.position {
            let found = self.read(cursor, position, tail.position);
            let resume = match found {
                Err(_) => return self.unreadable(position),
                Ok(Found::Record(event, size)) => {
                    let mut progress = self.log.progress(self.index);
                    progress.next.position += size as u64;
                    progress.next.records += 1;
                    progress.taken.insert(position);
                    self.log.progressed(self.index, &mut progress);
                    return Some((event, position));
                }
                Ok(Found::Damage(end)) => match self.damaged_bytes(cursor, position, end) {
                    Ok(bytes) => self.log.skip_damage(position, end, &bytes),
                    // Not read: no hole is recorded for what may be whole records.
                    Err(_) => return self.unreadable(position),
                },
                Ok(Found::Next(base)) => base,
            };
            let mut progress = self.log.progress(self.index);
            progress.next.position = resume;
            self.log.progressed(self.index, &mut progress);
            position = resume;
        }
        None
    }

    /// Logs that the record at `position` cannot be read now (an I/O error): the lane keeps
    /// its place and tries again ([`Disk::take`]), skipping nothing.
    fn unreadable(&self, position: u64) -> Option<(Event, u64)> {
        self.log.metrics.error(Op::Read).inc();
        tracing::error!(
            route = self.log.route.name,
            position,
            "log: cannot read a record; the lane tries again"
        );
        None
    }

    /// What is at `position` (below `tail`). A position at a segment's base is its header:
    /// the records start after it.
    fn read(&self, cursor: &mut Cursor, position: u64, tail: u64) -> std::io::Result<Found> {
        let (base, following) = self.log.segment_of(position);
        let header_end = base + record::HEADER as u64;
        if position < header_end {
            return Ok(Found::Next(header_end));
        }
        let end = following.map_or(tail, |next| next.min(tail));
        if position >= end {
            return Ok(Found::Next(following.unwrap_or(tail)));
        }
        let max = self.log.max_record();
        let available = (end - position) as usize;
        // Bytes last read at `position`; 0 before the first read.
        let mut asked = 0;
        loop {
            let offset = position.checked_sub(cursor.buffer_at).map(|o| o as usize);
            let buffered = offset.filter(|&o| o < cursor.buffer.len());
            match buffered.map(|o| (o, record::read(&cursor.buffer[o..], max))) {
                Some((offset, record::Read::Record(size))) if size <= available => {
                    let event = record::decode(&cursor.buffer[offset..offset + size]);
                    return Ok(Found::Record(event, size));
                }
                Some((_, record::Read::Partial(needed))) if asked < needed.min(available) => {
                    asked = needed.max(READ_AHEAD).min(available);
                }
                None if asked == 0 => asked = READ_AHEAD.min(available),
                _ => return Ok(Found::Damage(end)),
            }
            self.fill(cursor, base, position, asked)?;
        }
    }

    /// The bytes from `position` to `end` of its segment, to find the next whole record in.
    fn damaged_bytes(
        &self,
        cursor: &mut Cursor,
        position: u64,
        end: u64,
    ) -> std::io::Result<Vec<u8>> {
        let (base, _) = self.log.segment_of(position);
        self.fill(cursor, base, position, (end - position) as usize)?;
        Ok(std::mem::take(&mut cursor.buffer))
    }

    /// Reads up to `length` bytes at `position` of segment `base` into the buffer.
    fn fill(
        &self,
        cursor: &mut Cursor,
        base: u64,
        position: u64,
        length: usize,
    ) -> std::io::Result<()> {
        #[cfg(feature = "failpoints")]
        crate::failpoints::io("log::read")?;
        if cursor.segment.as_ref().map(|(b, _)| *b) != Some(base) {
            let file = File::open(segment_path(self.log.dir(), base))?;
            cursor.segment = Some((base, file));
        }
        let (_, file) = cursor.segment.as_ref().expect("just opened");
        cursor.buffer.resize(length, 0);
        let backlog = position < self.log.recovered_tail();
        let read = blocking(backlog, || {
            let mut read = 0;
            while read < length {
                match file.read_at(&mut cursor.buffer[read..], position - base + read as u64) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(read)
        });
        match read {
            Ok(read) => {
                cursor.buffer.truncate(read);
                cursor.buffer_at = position;
                Ok(())
            }
            Err(e) => {
                cursor.buffer.clear();
                Err(e)
            }
        }
    }

    /// The ack: the lane has finished with the records at `positions`.
    pub fn finish(&self, positions: &[u64]) {
        let mut progress = self.log.progress(self.index);
        for &position in positions {
            progress.taken.remove(position);
        }
        self.log.progressed(self.index, &mut progress);
    }

    /// Gives back the records at `positions`, taken by a worker that panicked (or one too
    /// many for a batch), to be read again first.
    pub fn give_back(&self, positions: &[u64]) {
        let mut progress = self.log.progress(self.index);
        for &position in positions {
            if progress.taken.remove(position) {
                progress.redo.insert(position);
            }
        }
        self.log.progressed(self.index, &mut progress);
    }

    /// Records written and not yet taken.
    pub fn depth(&self) -> usize {
        let Some(tail) = self.log.tail().map(|t| *t.borrow()) else {
            return 0;
        };
        let progress: &Progress = &self.log.progress(self.index);
        (tail.records.saturating_sub(progress.next.records) as usize) + progress.redo.len()
    }

    /// How long the oldest waiting record has waited (read by the log's keeper thread, not
    /// here: a scrape never touches the disk).
    pub fn oldest_age(&self) -> Duration {
        if self.depth() == 0 {
            return Duration::ZERO;
        }
        self.log.oldest_age(self.index)
    }

    /// Takes no more events: at shutdown, what is left stays in the log.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// Runs `read`, of the backlog a previous process left (`backlog`: likely not in the page
/// cache) where blocking is allowed: on a multi-threaded runtime the thread's other tasks move
/// elsewhere meanwhile. Records this process wrote are read from the page cache, in place.
fn blocking<R>(backlog: bool, read: impl FnOnce() -> R) -> R {
    let flavor = tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor());
    match flavor {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) if backlog => {
            tokio::task::block_in_place(read)
        }
        _ => read(),
    }
}
