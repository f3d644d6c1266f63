//! The positions a durable lane has taken and not finished, in log order: what its
//! watermark is made from.

use std::collections::VecDeque;

/// The positions a lane has taken and not finished, in log order: taken ones are appended
/// (a given-back one is inserted in its place), finished ones are marked and leave from the
/// front, so the lowest is at hand without a tree.
#[derive(Default)]
pub(super) struct Taken(VecDeque<(u64, bool)>);

impl Taken {
    pub(super) fn insert(&mut self, position: u64) {
        match self.0.back() {
            Some(&(last, _)) if last > position => {
                let at = self.0.partition_point(|&(p, _)| p < position);
                self.0.insert(at, (position, false));
            }
            _ => self.0.push_back((position, false)),
        }
    }

    /// Marks `position` finished.
    pub(super) fn remove(&mut self, position: u64) {
        if let Ok(at) = self.0.binary_search_by_key(&position, |&(p, _)| p) {
            self.0[at].1 = true;
        }
        while self.0.front().is_some_and(|&(_, done)| done) {
            self.0.pop_front();
        }
    }

    /// The lowest position not finished.
    pub(super) fn first(&self) -> Option<u64> {
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
