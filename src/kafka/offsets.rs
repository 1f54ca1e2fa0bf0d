//! Which offset of a partition may be committed while commands finish out of order: the lowest
//! offset still unfinished (every offset below it is done: its effect and its reply are
//! durable). Pure bookkeeping, tested alone.

use std::collections::BTreeSet;

/// One partition's commands in flight, by offset.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    in_flight: BTreeSet<i64>,
    /// One past the highest offset started.
    next: Option<i64>,
    /// The first offset started: the position reading began at, so no move yet.
    floor: Option<i64>,
    /// The last offset handed out for commit.
    committed: Option<i64>,
}

impl OffsetTracker {
    /// A command at `offset` started (offsets arrive in increasing order).
    pub fn start(&mut self, offset: i64) {
        self.in_flight.insert(offset);
        self.floor.get_or_insert(offset);
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Commands in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The command at `offset` is done; answers the offset to commit now (Kafka's "next offset
    /// to read"), when it moved. An offset not in flight changes nothing.
    pub fn finish(&mut self, offset: i64) -> Option<i64> {
        if !self.in_flight.remove(&offset) {
            return None;
        }
        let commit = self.in_flight.first().copied().or(self.next)?;
        if self.committed.or(self.floor).is_some_and(|c| c >= commit) {
            return None;
        }
        self.committed = Some(commit);
        Some(commit)
    }

    /// The last offset handed out for commit.
    pub fn committed(&self) -> Option<i64> {
        self.committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_point_waits_for_the_lowest_unfinished_offset() {
        let mut t = OffsetTracker::default();
        for o in [10, 11, 12, 13] {
            t.start(o);
        }
        assert_eq!(t.finish(12), None, "10 and 11 are unfinished");
        assert_eq!(t.finish(11), None, "10 is unfinished");
        assert_eq!(t.finish(10), Some(13), "10..=12 done, 13 is next");
        assert_eq!(t.len(), 1);
        assert_eq!(t.finish(13), Some(14));
        assert!(t.is_empty());
        assert_eq!(t.finish(13), None, "finishing twice changes nothing");
        assert_eq!(
            t.finish(99),
            None,
            "an offset never started changes nothing"
        );
        assert_eq!(t.committed(), Some(14));
    }

    #[test]
    fn gaps_in_offsets_are_skipped() {
        let mut t = OffsetTracker::default();
        t.start(5);
        t.start(9);
        assert_eq!(t.finish(9), None);
        assert_eq!(t.finish(5), Some(10));
    }

    #[test]
    fn an_unfinished_command_holds_the_commit_forever() {
        let mut t = OffsetTracker::default();
        for o in 0..100 {
            t.start(o);
        }
        for o in 1..100 {
            assert_eq!(t.finish(o), None);
        }
        assert_eq!(t.committed(), None);
    }
}
