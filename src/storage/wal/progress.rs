//! How far one lane of a durable route has got through the log, and how that is saved.
//!
//! A lane reads records in log order. `next` is where it reads next; below it, every record is
//! finished (delivered, failed, dead-lettered) except the few it has taken and not finished
//! (in flight) and those it must read again (given back after a panic or a batch overflow, or
//! unfinished when the process last stopped). Only those few are kept, so the bookkeeping is
//! bounded by what is in flight, however many records are finished behind a slow one.
//!
//! The saved form (`cursors/<target>`) is `next` and that short list: the *ack set* of the
//! lane is everything below `next` not in the list. After a crash a lane therefore delivers
//! again only what was unfinished at the last save, and what it took after it, never
//! everything after the oldest unfinished record.
//!
//! ```text
//! next:     u64 LE
//! count:    u32 LE
//! unfinished: count × u64 LE, ascending
//! crc32:    u32 LE   CRC-32 (IEEE) of everything before it
//! ```

use std::collections::VecDeque;

use super::Tail;

/// A lane's progress through the log.
#[derive(Debug, Default)]
pub struct Progress {
    /// The position of the next record to read, and the records before it.
    pub next: Tail,
    /// Positions below `next` taken and not finished.
    pub taken: Positions,
    /// Positions below `next` to read again first.
    pub redo: Positions,
    /// Bumped by every change, so the saver knows what it has saved.
    pub changes: u64,
}

impl Progress {
    /// The position before which the lane has finished with everything.
    pub fn watermark(&self) -> u64 {
        [self.taken.first(), self.redo.first()]
            .into_iter()
            .flatten()
            .fold(self.next.position, u64::min)
    }

    /// The oldest position waiting to be taken: one to read again, or `next`.
    pub fn oldest_waiting(&self) -> u64 {
        self.redo.first().unwrap_or(self.next.position)
    }

    /// The saved form (see the module's documentation).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.next.position.to_le_bytes());
        let mut unfinished: Vec<u64> = self.taken.iter().chain(self.redo.iter()).collect();
        unfinished.sort_unstable();
        out.extend_from_slice(&(unfinished.len() as u32).to_le_bytes());
        for position in unfinished {
            out.extend_from_slice(&position.to_le_bytes());
        }
        let crc = crc32fast::hash(out);
        out.extend_from_slice(&crc.to_le_bytes());
    }
}

/// What a saved progress file says: where the lane reads next, and what below it is
/// unfinished. `None` if the bytes are not a whole, intact saved progress.
pub fn decode(bytes: &[u8]) -> Option<(u64, Vec<u64>)> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let next = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let count = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?) as usize;
    let list = body.get(12..)?;
    if list.len() != count * 8 {
        return None;
    }
    let unfinished = list
        .chunks_exact(8)
        .map(|chunk| u64::from_le_bytes(chunk.try_into().expect("chunks of 8")))
        .filter(|&position| position < next)
        .collect();
    Some((next, unfinished))
}

/// Log positions in ascending order. Positions are taken in log order, so an insert is almost
/// always at the back, and the lowest is at hand without a tree.
#[derive(Debug, Default)]
pub struct Positions(VecDeque<u64>);

impl Positions {
    pub fn insert(&mut self, position: u64) {
        match self.0.back() {
            Some(&last) if last > position => {
                let at = self.0.partition_point(|&p| p < position);
                if self.0.get(at) != Some(&position) {
                    self.0.insert(at, position);
                }
            }
            Some(&last) if last == position => {}
            _ => self.0.push_back(position),
        }
    }

    /// Removes `position`; whether it was there.
    pub fn remove(&mut self, position: u64) -> bool {
        match self.0.binary_search(&position) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// The lowest position.
    pub fn first(&self) -> Option<u64> {
        self.0.front().copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<u64> for Positions {
    fn from_iter<I: IntoIterator<Item = u64>>(positions: I) -> Positions {
        let mut sorted: Vec<u64> = positions.into_iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        Positions(sorted.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_is_the_lowest_unfinished_position() {
        let mut progress = Progress {
            next: Tail {
                position: 100,
                records: 4,
            },
            ..Progress::default()
        };
        for position in [10, 20, 30] {
            progress.taken.insert(position);
        }
        progress.taken.remove(20);
        assert_eq!(
            progress.watermark(),
            10,
            "finished out of order: 10 holds it"
        );
        progress.taken.remove(10);
        assert_eq!(progress.watermark(), 30);
        progress.redo.insert(5);
        assert_eq!(progress.watermark(), 5, "a given-back position holds it");
        progress.redo.remove(5);
        progress.taken.remove(30);
        assert_eq!(
            progress.watermark(),
            100,
            "nothing unfinished: where it reads next"
        );
    }

    #[test]
    fn only_unfinished_positions_are_kept_and_saved() {
        let mut progress = Progress::default();
        for position in 0..10_000u64 {
            progress.taken.insert(position * 10);
            if position > 0 {
                progress.taken.remove(position * 10);
            }
        }
        progress.next.position = 100_000;
        assert_eq!(progress.taken.len(), 1, "only the slow one is kept");
        progress.redo.insert(55);
        let mut saved = Vec::new();
        progress.encode(&mut saved);
        assert_eq!(saved.len(), 8 + 4 + 2 * 8 + 4);
        assert_eq!(decode(&saved), Some((100_000, vec![0, 55])));
        let last = saved.len() - 1;
        saved[last] ^= 1;
        assert_eq!(decode(&saved), None, "a damaged file is not read");
        assert_eq!(decode(&saved[..7]), None);
    }
}
