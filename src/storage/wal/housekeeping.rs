//! The threads of a durable route's log, off the async runtime. The writer writes (and with
//! `fsync: always` syncs) every group a request did not write itself. The keeper syncs every
//! period (`fsync` a period) and every [`HOUSEKEEPING`] keeps house, apart from the writer so
//! that its syncs never hold up a commit:
//! - saves each lane's progress that changed (`cursors/<target>`: written to a temporary
//!   file, synced, renamed, and the directory synced), so a crash delivers again at most what
//!   was unfinished at the last save and what was taken after it;
//! - deletes the segments every lane has finished with;
//! - reads the acceptance time of each lane's oldest waiting record, for
//!   `fanout_lane_oldest_age_seconds` (a read of the disk, kept away from the scrape).

use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::writer::{sync_dir, sync_period, write_pending};
use super::{cursor_path, lock, record, segment_path, Log, Op};
use crate::event::accepted_at;
use crate::spec::Fsync;

/// How often progress is saved, finished segments deleted and oldest ages read.
pub const HOUSEKEEPING: Duration = Duration::from_millis(100);

/// Starts the route's writer and keeper threads.
pub(super) fn start(log: &Arc<Log>) -> io::Result<[std::thread::JoinHandle<()>; 2]> {
    let (writer, keeper) = (log.clone(), log.clone());
    let spawn = |name: &str| std::thread::Builder::new().name(format!("{name}-{}", log.route.name));
    Ok([
        spawn("log").spawn(move || write(&writer))?,
        spawn("keep").spawn(move || keep(&keeper))?,
    ])
}

/// The writer thread: writes (and with `fsync: always` syncs) every group a request did not
/// write itself, until the log closes and nothing is left.
fn write(log: &Log) {
    let open = log.opened();
    let always = log.route.disk.fsync == Fsync::Always;
    loop {
        let take = {
            let mut pending = lock(&open.pending);
            // A request writing at close clears `writing` and wakes this thread.
            while pending.writing || (pending.records == 0 && !pending.closing) {
                pending.idle = always;
                pending = open.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
                pending.idle = false;
            }
            let take = !pending.writing && pending.records > 0;
            if take {
                pending.writing = true;
            } else if pending.closing && !pending.writing {
                return;
            }
            take
        };
        if take {
            write_pending(log, false);
        }
    }
}

/// The keeper thread: syncs every period (`fsync` a period), saves progress, deletes finished
/// segments and reads oldest ages every [`HOUSEKEEPING`], apart from the writer, so that a
/// save's syncs never hold up a commit. Once the writer is done at close, it syncs and saves
/// a last time.
fn keep(log: &Log) {
    let open = log.opened();
    let mut saved = vec![u64::MAX; log.route.targets.len()];
    let mut buffer = Vec::new();
    let mut kept = Instant::now();
    loop {
        let last = open.written_all.load(Ordering::Acquire);
        if sync_due(log) == Some(Duration::ZERO) || last {
            sync_period(log);
        }
        if kept.elapsed() >= HOUSEKEEPING || last {
            housekeep(log, &mut saved, &mut buffer);
            kept = Instant::now();
        }
        if last {
            if log.route.disk.fsync == Fsync::Never {
                sync_segments(log);
            }
            return;
        }
        // With a period, a write after an idle moment is to be synced within the period too:
        // nobody wakes this thread for it, so it never sleeps longer than a period.
        let house = HOUSEKEEPING.saturating_sub(kept.elapsed());
        let period = match log.route.disk.fsync {
            Fsync::Every(period) => period,
            _ => house,
        };
        std::thread::park_timeout(sync_due(log).unwrap_or(period).min(house));
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

/// With `fsync: never`, at a clean shutdown: syncs every segment kept (the rolled ones were
/// never synced), and the directory naming them.
fn sync_segments(log: &Log) {
    let open = log.opened();
    let bases = lock(&open.segments).clone();
    let synced = bases
        .iter()
        .try_for_each(|&base| std::fs::File::open(segment_path(&open.dir, base))?.sync_data())
        .and_then(|()| sync_dir(&open.dir));
    match synced {
        Ok(()) => log.metrics.syncs.inc(),
        Err(error) => {
            log.metrics.error(Op::Sync).inc();
            tracing::error!(route = log.route.name, %error, "cannot sync the route's log at shutdown");
        }
    }
}

/// Saves the progress that changed, deletes segments every lane is past, reads oldest ages.
fn housekeep(log: &Log, saved: &mut [u64], buffer: &mut Vec<u8>) {
    let open = log.opened();
    let tail = open.tail.borrow().position;
    let mut wrote = false;
    for (index, target) in log.route.targets.iter().enumerate() {
        let oldest = {
            let progress = lock(&open.progress[index]);
            if progress.changes != saved[index] {
                progress.encode(buffer);
                saved[index] = progress.changes;
                wrote = true;
            } else {
                buffer.clear();
            }
            progress.oldest_waiting()
        };
        if !buffer.is_empty() {
            if let Err(error) = save(&open.dir, target.name, buffer) {
                saved[index] = u64::MAX;
                log.metrics.error(Op::SavePosition).inc();
                tracing::warn!(route = log.route.name, target = target.name, %error, "cannot save the lane's position (a crash would deliver again what it finished since the last save)");
            }
        }
        let at = (oldest < tail)
            .then(|| accepted_millis(log, oldest))
            .flatten();
        open.oldest[index].store(at.unwrap_or(0), Ordering::Relaxed);
    }
    if wrote {
        if let Err(error) = sync_dir(&open.dir.join("cursors")) {
            log.metrics.error(Op::SavePosition).inc();
            tracing::warn!(route = log.route.name, %error, "cannot sync the lanes' saved positions");
        }
    }
    delete_finished(log);
}

/// Writes a lane's saved progress: a temporary file, synced, renamed over the last one.
fn save(dir: &Path, target: &str, bytes: &[u8]) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    crate::failpoints::io("log::save_position")?;
    let path = cursor_path(dir, target);
    let temporary = path.with_extension("new");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&temporary, &path)
}

/// The acceptance time (ms since the epoch) of the record at `position`, or of the first
/// record of the segment starting there.
fn accepted_millis(log: &Log, position: u64) -> Option<u64> {
    let (base, _) = log.segment_of(position);
    let offset = (position - base).max(record::HEADER as u64);
    let file = std::fs::File::open(segment_path(log.dir(), base)).ok()?;
    let mut frame = [0; record::FRAME + 16];
    file.read_exact_at(&mut frame, offset).ok()?;
    let at = accepted_at(record::id(&frame));
    Some(at.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// Deletes the segments every lane has finished with.
fn delete_finished(log: &Log) {
    let open = log.opened();
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
