//! Which offsets of the queue topic may be committed.
//!
//! Every record read is open until what it carried was handed on (a
//! snapshot part, once its snapshot went to the sink; a result, once its
//! batch did) or dropped (a view reply, a stale part, bytes that are no
//! record). The offset committed in a partition is that of its oldest
//! open record, or just past the last record read when none is open:
//! after a crash, reading starts again at the first record not handed on.

pub(crate) use exim_pilot_schema::commit::{CommitPoints as Offsets, Position};

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
