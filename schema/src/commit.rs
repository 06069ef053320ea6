//! Commit points of a topic read by a consumer that hands records on
//! out of order: every record read stays open until its work is done,
//! and a partition's commit point is its oldest open record, or just past
//! the last record read when none is open. After a crash, reading starts
//! again at the first record whose work was not done. The queue node
//! (commands) and the processors' queue consumer (snapshots, results)
//! both keep their offsets so.

use std::collections::{BTreeMap, BTreeSet};

/// Where a record sits in the queue topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The partition.
    pub partition: i32,
    /// The offset in it.
    pub offset: i64,
}

/// Per partition: the open records and how far reading and committing
/// got.
#[derive(Default)]
pub struct CommitPoints {
    partitions: BTreeMap<i32, Partition>,
}

#[derive(Default)]
struct Partition {
    open: BTreeSet<i64>,
    /// Just past the last record read.
    next: i64,
    committed: Option<i64>,
}

impl CommitPoints {
    /// A record was read: open until [`CommitPoints::done`].
    pub fn received(&mut self, position: Position) {
        let partition = self.partitions.entry(position.partition).or_default();
        partition.open.insert(position.offset);
        partition.next = partition.next.max(position.offset + 1);
    }

    /// What the record carried was handed on or dropped.
    pub fn done(&mut self, position: Position) {
        if let Some(partition) = self.partitions.get_mut(&position.partition) {
            partition.open.remove(&position.offset);
        }
    }

    /// Forgets a partition that went to another consumer.
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// The offset to commit in each partition whose commit point moved.
    pub fn to_commit(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .filter_map(|(&number, partition)| {
                let point = partition.open.first().copied().unwrap_or(partition.next);
                (partition.committed != Some(point)).then_some((number, point))
            })
            .collect()
    }

    /// Notes a commit that Kafka accepted.
    pub fn committed(&mut self, moved: &[(i32, i64)]) {
        for &(number, offset) in moved {
            if let Some(partition) = self.partitions.get_mut(&number) {
                partition.committed = Some(offset);
            }
        }
    }
}
