//! Reading a route's log directory at start-up, and for `fanout log verify`: the segments in
//! order, their format, each record's checksum, every lane's saved progress, and what each
//! lane still has to do.
//!
//! Every header is checked before anything is changed: a segment of a format this build does
//! not know stops start-up and is left as it is. Recovery then repairs what it finds: a torn
//! or damaged tail of the last segment is cut back to the last whole record (a crash in the
//! middle of a write: never acknowledged); damage anywhere else is a *hole*, skipped by the
//! lanes (the records after it are found again by [`record::resync`]), counted and logged with
//! its position. Bytes of a segment past the base of the next one are what a failed write left
//! behind (sealed off: never acknowledged, never read). Verification changes nothing.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::progress;
use super::record::{self, Format, HEADER};
use super::{cursor_path, segment_path, Tail};
use crate::event::accepted_at;

/// What a log directory holds.
#[derive(Debug, Default)]
pub struct Scan {
    /// Where the next record goes, and the records before it (from the first segment kept).
    pub tail: Tail,
    /// Bases of the segments kept, sorted.
    pub segments: Vec<u64>,
    /// Per target: where its lane reads next, and the records before that.
    pub starts: Vec<Tail>,
    /// Per target: records below its start that it has not finished (read them first).
    pub redo: Vec<Vec<u64>>,
    /// Per target: the acceptance time of the oldest record it has not finished with.
    pub oldest: Vec<Option<SystemTime>>,
    /// Per target: whether its saved progress was unreadable (it starts at the first segment).
    pub lost_progress: Vec<bool>,
    /// Regions of segments that hold no readable record.
    pub damaged: Vec<Damage>,
    /// Bytes of segments past the base of the next segment: a failed write, never acknowledged.
    pub sealed_off: u64,
    /// Bytes of the segments kept, up to their last whole record.
    pub bytes: u64,
}

/// A region of a segment that holds no readable record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    pub segment: u64,
    /// Offset of the first bad byte in the segment file.
    pub offset: u64,
    pub bytes: u64,
    pub kind: DamageKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamageKind {
    /// The start of one record at the very end of the log: a write that did not finish (a
    /// crash mid-write, or a write under way while the log is read), never acknowledged.
    TornTail,
    /// Unreadable bytes at the end of the log, cut at recovery.
    DamagedTail,
    /// Unreadable bytes with the log going on after them: skipped.
    Hole,
}

impl Damage {
    /// Whether this is damage to records (not a write that never finished).
    pub fn is_corruption(&self) -> bool {
        self.kind != DamageKind::TornTail
    }

    /// The log positions the damage covers.
    pub fn positions(&self) -> (u64, u64) {
        let start = self.segment + self.offset;
        (start, start + self.bytes)
    }
}

impl Scan {
    /// Records lane `index` still has to deliver.
    pub fn pending(&self, index: usize) -> u64 {
        self.tail.records - self.starts[index].records + self.redo[index].len() as u64
    }

    /// Regions of damage to records (torn tails excluded).
    pub fn corrupt_regions(&self) -> usize {
        self.damaged.iter().filter(|d| d.is_corruption()).count()
    }

    /// Logs what recovery found and did.
    pub fn log(&self, route: &str, targets: &[&str]) {
        for damage in &self.damaged {
            let (position, _) = damage.positions();
            let (segment, offset, bytes) = (damage.segment, damage.offset, damage.bytes);
            match damage.kind {
                DamageKind::TornTail => tracing::warn!(route, segment, offset, position, bytes, "log: cut a torn tail (a write that never finished, never acknowledged)"),
                DamageKind::DamagedTail => tracing::error!(route, segment, offset, position, bytes, "log: corrupt records at the end of the log, cut (they are not delivered)"),
                DamageKind::Hole => tracing::error!(route, segment, offset, position, bytes, "log: corrupt records skipped (they are not delivered; the records after them are)"),
            }
        }
        for (target, lost) in targets.iter().zip(&self.lost_progress) {
            if *lost {
                tracing::warn!(route, target, "log: the lane's saved position is unreadable; it delivers again from the oldest record kept");
            }
        }
        tracing::info!(
            route,
            records = self.tail.records,
            bytes = self.bytes,
            segments = self.segments.len(),
            "log recovered"
        );
    }
}

/// Reads the log in `dir` for the lanes of `targets`; `max_record` bounds a credible record.
/// With `repair`, cuts the tail of the last segment back to its last whole record, completes a
/// segment whose creation did not finish, and deletes the segments every lane has finished.
pub fn scan(dir: &Path, targets: &[&str], max_record: usize, repair: bool) -> io::Result<Scan> {
    check_formats(dir)?;
    let mut segments = list(dir, repair)?;
    let first = segments.first().copied().unwrap_or(0);
    let mut lost_progress = Vec::new();
    let saved: Vec<(u64, Vec<u64>)> = targets
        .iter()
        .map(|target| {
            let bytes = match std::fs::read(cursor_path(dir, target)) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    lost_progress.push(false);
                    return Ok((first, Vec::new()));
                }
                Err(e) => return Err(e),
            };
            let decoded = progress::decode(&bytes);
            lost_progress.push(decoded.is_none());
            let (next, mut unfinished) = decoded.unwrap_or((first, Vec::new()));
            unfinished.retain(|&p| p >= first);
            Ok((next.max(first), unfinished))
        })
        .collect::<io::Result<_>>()?;
    let low = saved
        .iter()
        .map(|(next, unfinished)| unfinished.first().copied().unwrap_or(*next).min(*next))
        .min()
        .unwrap_or(first);
    // Segments every lane had finished with when the process stopped.
    let finished = segments
        .windows(2)
        .take_while(|pair| pair[1] <= low)
        .count();
    if repair {
        for base in &segments[..finished] {
            std::fs::remove_file(segment_path(dir, *base))?;
        }
    }
    segments.drain(..finished);
    let mut lanes: Vec<Lane> = saved.into_iter().map(Lane::new).collect();
    let mut scan = Scan {
        tail: Tail {
            position: segments.first().map_or(0, |&base| base + HEADER as u64),
            records: 0,
        },
        lost_progress,
        ..Scan::default()
    };
    for (index, &base) in segments.iter().enumerate() {
        let following = segments.get(index + 1).copied();
        let path = segment_path(dir, base);
        let mut bytes = std::fs::read(&path)?;
        if bytes.len() < HEADER {
            // Created but not finished (only the last can be): an empty segment.
            if repair {
                std::fs::write(&path, record::header())?;
            }
            bytes = record::header().to_vec();
        }
        let extent = following.map_or(bytes.len(), |next| {
            let extent = (next - base) as usize;
            scan.sealed_off += bytes.len().saturating_sub(extent) as u64;
            extent.min(bytes.len())
        });
        let end = scan_segment(
            &mut scan,
            &mut lanes,
            base,
            &bytes[..extent],
            max_record,
            following.is_none(),
        );
        if repair && end < bytes.len() && following.is_none() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(end as u64)?;
        }
        scan.bytes += end as u64;
        if following.is_none() {
            scan.tail.position = base + end as u64;
        }
    }
    for lane in lanes {
        let (start, redo, oldest) = lane.finish(scan.tail);
        scan.starts.push(start);
        scan.redo.push(redo);
        scan.oldest.push(oldest);
    }
    scan.segments = segments;
    Ok(scan)
}

/// Stops with an error if a segment in `dir` (a route's directory, if it exists) is not of
/// this build's format; reads only headers.
pub fn check_formats(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let segments = list(dir, false)?;
    for &base in &segments {
        check_format(dir, base, segments.last() == Some(&base))?;
    }
    Ok(())
}

/// The bases of the segments in `dir`, sorted. A segment being created when the process
/// stopped (`*.seg.new`) was never written to: with `repair` it is deleted.
fn list(dir: &Path, repair: bool) -> io::Result<Vec<u64>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = name.strip_suffix(".seg").and_then(|b| b.parse().ok()) {
            segments.push(base);
        } else if repair && name.ends_with(".seg.new") {
            std::fs::remove_file(dir.join(&*name))?;
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Stops with an error if segment `base` is not of this build's format.
fn check_format(dir: &Path, base: u64, last: bool) -> io::Result<()> {
    let path = segment_path(dir, base);
    let mut header = Vec::with_capacity(HEADER);
    io::Read::read_to_end(
        &mut io::Read::take(std::fs::File::open(&path)?, HEADER as u64),
        &mut header,
    )?;
    let problem = match record::format(&header) {
        Format::Current => return Ok(()),
        Format::Short if last => return Ok(()),
        Format::Short => "is shorter than a segment header".to_owned(),
        Format::Version(version) => format!(
            "is of log format version {version}; this fanout reads version {}: run the fanout that wrote it until its lanes are drained, or move the directory away",
            record::VERSION
        ),
        Format::Foreign => "is not a fanout log segment (no FANOUTLG header; a fanout from before log format version 1 wrote none: drain the log with that fanout, then move the directory away)".to_owned(),
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} {problem}; nothing was changed", path.display()),
    ))
}

/// Reads the records of segment `base` (`bytes`, up to the next segment's base), skipping
/// damage; returns the offset after its last whole record.
fn scan_segment(
    scan: &mut Scan,
    lanes: &mut [Lane],
    base: u64,
    bytes: &[u8],
    max_record: usize,
    last: bool,
) -> usize {
    let mut offset = HEADER;
    let mut end = HEADER;
    while offset < bytes.len() {
        let read = record::read(&bytes[offset..], max_record);
        if let record::Read::Record(size) = read {
            let position = base + offset as u64;
            let id = record::id(&bytes[offset..]);
            for lane in lanes.iter_mut() {
                lane.record(position, size as u64, id);
            }
            scan.tail.records += 1;
            offset += size;
            end = offset;
            continue;
        }
        let damage = |bytes: u64, kind| Damage {
            segment: base,
            offset: offset as u64,
            bytes,
            kind,
        };
        match record::resync(&bytes[offset..], max_record) {
            Some(skip) => {
                scan.damaged.push(damage(skip as u64, DamageKind::Hole));
                offset += skip;
            }
            None => {
                let rest = (bytes.len() - offset) as u64;
                let kind = match (last, read) {
                    (true, record::Read::Partial(_)) => DamageKind::TornTail,
                    (true, _) => DamageKind::DamagedTail,
                    (false, _) => DamageKind::Hole,
                };
                scan.damaged.push(damage(rest, kind));
                if !last {
                    end = bytes.len();
                }
                break;
            }
        }
    }
    end
}

/// One lane's saved progress, checked against the records as they are read.
struct Lane {
    next: u64,
    /// Records before `next`.
    records: u64,
    /// Saved as unfinished, ascending; `found` marks those that are records.
    unfinished: Vec<u64>,
    found: Vec<bool>,
    oldest: Option<SystemTime>,
}

impl Lane {
    fn new((next, unfinished): (u64, Vec<u64>)) -> Lane {
        Lane {
            next,
            records: 0,
            found: vec![false; unfinished.len()],
            unfinished,
            oldest: None,
        }
    }

    /// Counts the record of `size` bytes at `position`, with `id`.
    fn record(&mut self, position: u64, size: u64, id: [u8; 16]) {
        if position < self.next && position + size > self.next {
            // A saved position inside a record (it cannot be one): read that record again.
            self.next = position;
        }
        let waiting = if position < self.next {
            self.records += 1;
            match self.unfinished.binary_search(&position) {
                Ok(at) => {
                    self.found[at] = true;
                    true
                }
                Err(_) => false,
            }
        } else {
            true
        };
        if waiting && self.oldest.is_none() {
            self.oldest = Some(accepted_at(id));
        }
    }

    /// Where the lane starts, what it reads again first, and its oldest waiting record.
    fn finish(self, tail: Tail) -> (Tail, Vec<u64>, Option<SystemTime>) {
        let start = if self.next >= tail.position {
            tail
        } else {
            Tail {
                position: self.next,
                records: self.records,
            }
        };
        let redo = self
            .unfinished
            .into_iter()
            .zip(self.found)
            .filter_map(|(position, found)| found.then_some(position))
            .collect();
        (start, redo, self.oldest)
    }
}
