//! Reading a route's log directory at start-up, and for `fanout log verify`: the segments in
//! order, each record's checksum, every lane's persisted watermark, and what each lane still
//! has to do. Recovery repairs what it finds: a segment is cut back to its last whole record
//! (a torn tail after a crash, or damage), and what was cut is logged. Verification changes
//! nothing.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::{cursor_path, record, segment_path, Tail};
use crate::event::accepted_at;

/// What a log directory holds.
#[derive(Debug, Default)]
pub struct Scan {
    /// Where the next record goes, and the records before it (from the first segment kept).
    pub tail: Tail,
    /// Bases of the segments kept, sorted.
    pub segments: Vec<u64>,
    /// Per target: where its lane resumes, and the records before that.
    pub starts: Vec<Tail>,
    /// Per target: the acceptance time of the oldest record it has not finished with.
    pub oldest: Vec<Option<SystemTime>>,
    /// Damage found: (segment base, offset of the first bad byte, bytes from there to the
    /// segment's end).
    pub damaged: Vec<(u64, u64, u64)>,
    /// Whether the only damage is the start of one record at the very end of the last
    /// segment: a torn write (a crash mid-write, or a write under way while the log is read),
    /// which was never acknowledged.
    pub torn_tail_only: bool,
    /// Bytes of the segments kept.
    pub bytes: u64,
}

impl Scan {
    /// Records lane `index` still has to deliver.
    pub fn pending(&self, index: usize) -> u64 {
        self.tail.records - self.starts[index].records
    }

    /// Logs what recovery found and did.
    pub fn log(&self, route: &str) {
        for &(segment, offset, bytes) in &self.damaged {
            tracing::warn!(
                route,
                segment,
                offset,
                bytes,
                "log: skipped a torn or damaged tail of a segment (records from there on are not delivered)"
            );
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

/// Reads the log in `dir` for the lanes of `targets`. With `repair`, cuts damaged segments
/// back to their last whole record and deletes the segments every lane has finished with.
pub fn scan(dir: &Path, targets: &[&str], repair: bool) -> io::Result<Scan> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = name
            .strip_suffix(".seg")
            .and_then(|b| b.parse::<u64>().ok())
        {
            segments.push(base);
        }
    }
    segments.sort_unstable();
    let first = segments.first().copied().unwrap_or(0);
    let positions: Vec<u64> = targets
        .iter()
        .map(|target| read_cursor(dir, target).unwrap_or(first).max(first))
        .collect();
    let low = positions.iter().copied().min().unwrap_or(first);
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
    let mut scan = Scan {
        tail: Tail {
            position: segments.first().copied().unwrap_or(0),
            records: 0,
        },
        starts: positions
            .iter()
            .map(|&position| Tail {
                position,
                records: 0,
            })
            .collect(),
        oldest: vec![None; targets.len()],
        ..Scan::default()
    };
    scan.torn_tail_only = true;
    for (index, &base) in segments.iter().enumerate() {
        let path = segment_path(dir, base);
        let bytes = std::fs::read(&path)?;
        let valid = scan_segment(&mut scan, base, &bytes);
        if valid < bytes.len() {
            let last = index + 1 == segments.len();
            let partial = matches!(
                record::read(&bytes[valid..], usize::MAX >> 1),
                record::Read::Partial(_)
            );
            scan.torn_tail_only &= last && partial;
            scan.damaged
                .push((base, valid as u64, (bytes.len() - valid) as u64));
            if repair {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)?
                    .set_len(valid as u64)?;
            }
        }
        scan.bytes += valid as u64;
        scan.tail.position = base + valid as u64;
    }
    for start in &mut scan.starts {
        if start.position > scan.tail.position {
            *start = scan.tail;
        }
    }
    scan.segments = segments;
    Ok(scan)
}

/// Counts the whole records at the start of segment `base`'s `bytes`; returns how many bytes
/// they take.
fn scan_segment(scan: &mut Scan, base: u64, bytes: &[u8]) -> usize {
    let mut offset = 0;
    while offset < bytes.len() {
        let record::Read::Record(size) = record::read(&bytes[offset..], usize::MAX >> 1) else {
            break;
        };
        let position = base + offset as u64;
        for (index, start) in scan.starts.iter_mut().enumerate() {
            if position < start.position {
                start.records += 1;
            } else if scan.oldest[index].is_none() {
                let id = record::id(&bytes[offset..]);
                scan.oldest[index] = Some(accepted_at(id));
            }
        }
        scan.tail.records += 1;
        offset += size;
    }
    offset
}

/// A lane's persisted watermark, if it has one and it is intact.
fn read_cursor(dir: &Path, target: &str) -> Option<u64> {
    let bytes = std::fs::read(cursor_path(dir, target)).ok()?;
    let position: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    let crc: [u8; 4] = bytes.get(8..12)?.try_into().ok()?;
    (crc32fast::hash(&position) == u32::from_le_bytes(crc)).then(|| u64::from_le_bytes(position))
}
