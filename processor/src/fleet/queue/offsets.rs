//! Which offsets of the queue topic may be committed.
//!
//! Every record read is open until what it carried was handed on (a
//! snapshot part, once its snapshot went to the sink; a result, once its
//! batch did) or dropped (a view reply, a stale part, bytes that are no
//! record). The offset committed in a partition is that of its oldest
//! open record, or just past the last record read when none is open:
//! after a crash, reading starts again at the first record not handed on.

use std::collections::{BTreeMap, BTreeSet};

/// Where a record sits in the queue topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// Per partition: the open records and how far reading and committing
/// got.
#[derive(Default)]
pub(crate) struct Offsets {
    partitions: BTreeMap<i32, Partition>,
}

#[derive(Default)]
struct Partition {
    open: BTreeSet<i64>,
    /// Just past the last record read.
    next: i64,
    committed: Option<i64>,
}

impl Offsets {
    /// A record was read: open until [`Offsets::done`].
    pub(crate) fn received(&mut self, position: Position) {
        let partition = self.partitions.entry(position.partition).or_default();
        partition.open.insert(position.offset);
        partition.next = partition.next.max(position.offset + 1);
    }

    /// What the record carried was handed on or dropped.
    pub(crate) fn done(&mut self, position: Position) {
        if let Some(partition) = self.partitions.get_mut(&position.partition) {
            partition.open.remove(&position.offset);
        }
    }

    /// Forgets a partition that went to another consumer.
    pub(crate) fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// The offset to commit in each partition whose commit point moved.
    pub(crate) fn to_commit(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .filter_map(|(&number, partition)| {
                let point = partition.open.first().copied().unwrap_or(partition.next);
                (partition.committed != Some(point)).then_some((number, point))
            })
            .collect()
    }

    /// Notes a commit that Kafka accepted.
    pub(crate) fn committed(&mut self, moved: &[(i32, i64)]) {
        for &(number, offset) in moved {
            if let Some(partition) = self.partitions.get_mut(&number) {
                partition.committed = Some(offset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> Position {
        Position { partition, offset }
    }

    #[test]
    fn an_incomplete_snapshot_holds_the_commit_point_back() {
        let mut offsets = Offsets::default();
        // Parts of mx1's snapshot at 0 and 2, mx2's whole one at 1.
        for offset in 0..3 {
            offsets.received(at(0, offset));
        }
        offsets.done(at(0, 1));
        assert_eq!(offsets.to_commit(), vec![(0, 0)]);
        offsets.committed(&[(0, 0)]);
        assert_eq!(offsets.to_commit(), vec![]);
        offsets.done(at(0, 0));
        offsets.done(at(0, 2));
        assert_eq!(offsets.to_commit(), vec![(0, 3)]);

        offsets.received(at(1, 9));
        offsets.forget(1);
        offsets.done(at(1, 9));
        assert_eq!(offsets.to_commit(), vec![(0, 3)]);
    }
}
