//! Putting snapshot parts back together, one snapshot per host at a time.
//!
//! A host's parts arrive in one partition, in order, but a part may be
//! missing for good (the node dropped a snapshot a newer one replaced
//! after a failure) or arrive twice (read again after a restart). So:
//!
//! - a snapshot is complete once every index from 0 to its part count
//!   arrived; it is then handed on whole, and forgotten;
//! - a part of a newer snapshot of the same host abandons the older
//!   incomplete one: the node has moved on and its missing parts will
//!   not come;
//! - a part of a snapshot older than the one being assembled, or than the
//!   last one completed, is stale and skipped, as is a part seen twice or
//!   one whose index or count makes no sense.
//!
//! Each part is held with its Kafka position, so that the consumer commits
//! no offset past a part not handed on, and releases the positions of
//! what was abandoned or skipped.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use exim_pilot_schema::queue::QueueSnapshot;
use exim_pilot_schema::queue_wire::SnapshotPart;

use super::offsets::Position;

/// What became of a part offered.
#[derive(Debug, PartialEq)]
pub(crate) enum Offered {
    /// It completed its snapshot: here it is, with the positions of all
    /// its parts.
    Complete(QueueSnapshot, Vec<Position>),
    /// It waits for the rest of its snapshot.
    Waiting,
    /// It was skipped: stale, repeated or malformed, for the reason given.
    Skipped(&'static str),
}

/// The parts of one host's snapshot received so far.
struct Assembly {
    taken_at: DateTime<Utc>,
    parts: u32,
    received: BTreeMap<u32, (SnapshotPart, Position)>,
}

impl Assembly {
    fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        self.received.values().map(|(_, position)| *position)
    }
}

/// Snapshots being put together, by host.
#[derive(Default)]
pub(crate) struct Assembler {
    assembling: HashMap<String, Assembly>,
    /// When each host's last completed snapshot was taken.
    completed: HashMap<String, DateTime<Utc>>,
}

/// A snapshot left incomplete for a newer one, with the positions its
/// parts held.
#[derive(Debug, PartialEq)]
pub(crate) struct Abandoned {
    pub host: String,
    pub taken_at: DateTime<Utc>,
    pub received: usize,
    pub parts: u32,
    pub positions: Vec<Position>,
}

impl Assembler {
    /// Takes one part read at `position`; returns what became of it and
    /// the older snapshot it abandoned, if any.
    pub(crate) fn offer(
        &mut self,
        part: SnapshotPart,
        position: Position,
    ) -> (Offered, Option<Abandoned>) {
        if part.parts == 0 || part.part >= part.parts {
            return (Offered::Skipped("part index out of range"), None);
        }
        if self
            .completed
            .get(&part.host)
            .is_some_and(|&done| part.taken_at <= done)
        {
            return (Offered::Skipped("snapshot already complete or older"), None);
        }

        let abandoned = match self.assembling.get(&part.host) {
            Some(current) if current.taken_at > part.taken_at => {
                return (Offered::Skipped("older than the snapshot assembled"), None)
            }
            Some(current) if current.taken_at == part.taken_at => {
                if current.parts != part.parts {
                    return (
                        Offered::Skipped("part count differs from its other parts"),
                        None,
                    );
                }
                if current.received.contains_key(&part.part) {
                    return (Offered::Skipped("part received twice"), None);
                }
                None
            }
            Some(_) => self.abandon(&part.host),
            None => None,
        };

        let host = part.host.clone();
        let assembly = self.assembling.entry(host.clone()).or_insert(Assembly {
            taken_at: part.taken_at,
            parts: part.parts,
            received: BTreeMap::new(),
        });
        assembly.received.insert(part.part, (part, position));
        if assembly.received.len() < assembly.parts as usize {
            return (Offered::Waiting, abandoned);
        }
        (self.complete(&host), abandoned)
    }

    /// Hands on the complete snapshot of `host`.
    fn complete(&mut self, host: &str) -> Offered {
        let Some(assembly) = self.assembling.remove(host) else {
            return Offered::Skipped("no snapshot assembled");
        };
        self.completed.insert(host.to_string(), assembly.taken_at);
        let (parts, positions): (Vec<SnapshotPart>, Vec<Position>) =
            assembly.received.into_values().unzip();
        match SnapshotPart::join(parts) {
            Some(snapshot) => Offered::Complete(snapshot, positions),
            None => Offered::Skipped("parts do not form one snapshot"),
        }
    }

    fn abandon(&mut self, host: &str) -> Option<Abandoned> {
        let assembly = self.assembling.remove(host)?;
        Some(Abandoned {
            host: host.to_string(),
            taken_at: assembly.taken_at,
            received: assembly.received.len(),
            parts: assembly.parts,
            positions: assembly.positions().collect(),
        })
    }

    /// Drops what was read from `partition` (which went to another
    /// consumer): it is read again there.
    pub(crate) fn forget_partition(&mut self, partition: i32) {
        self.assembling
            .retain(|_, a| !a.positions().any(|p| p.partition == partition));
    }

    /// Snapshots waiting for parts.
    pub(crate) fn incomplete(&self) -> usize {
        self.assembling.len()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use exim_pilot_schema::queue::QueuedMessage;
    use exim_pilot_schema::queue_wire::PartLimits;

    use super::*;

    fn snapshot(host: &str, taken_at: DateTime<Utc>, messages: usize) -> QueueSnapshot {
        QueueSnapshot {
            host: host.into(),
            taken_at,
            messages: (0..messages)
                .map(|n| QueuedMessage {
                    id: format!("1qAbCK-{n:06}-Xy").parse().unwrap(),
                    age_secs: Some(1),
                    size: Some(1),
                    sender: String::new(),
                    recipients: Vec::new(),
                    frozen: false,
                    spool_error: None,
                })
                .collect(),
        }
    }

    fn parts(snapshot: &QueueSnapshot) -> Vec<SnapshotPart> {
        let limits = PartLimits {
            max_messages: 2,
            max_bytes: 1 << 20,
        };
        SnapshotPart::split(snapshot.clone(), limits)
    }

    fn at(offset: i64) -> Position {
        Position {
            partition: 0,
            offset,
        }
    }

    #[test]
    fn parts_in_any_order_make_the_snapshot_once() {
        let whole = snapshot("mx1", Utc::now(), 5);
        let mut p = parts(&whole);
        assert_eq!(p.len(), 3);
        let mut assembler = Assembler::default();
        let last = p.remove(1);
        assert_eq!(
            assembler.offer(p[1].clone(), at(1)),
            (Offered::Waiting, None)
        );
        assert_eq!(
            assembler.offer(p[0].clone(), at(2)),
            (Offered::Waiting, None)
        );
        assert_eq!(
            assembler.offer(p[0].clone(), at(3)),
            (Offered::Skipped("part received twice"), None)
        );
        assert_eq!(assembler.incomplete(), 1);
        let (offered, _) = assembler.offer(last.clone(), at(4));
        assert_eq!(offered, Offered::Complete(whole, vec![at(2), at(4), at(1)]));
        assert_eq!(assembler.incomplete(), 0);

        // Read again: the snapshot was handed on already.
        assert!(matches!(
            assembler.offer(last, at(5)).0,
            Offered::Skipped(_)
        ));
    }

    #[test]
    fn a_newer_snapshot_abandons_an_incomplete_one_and_older_parts_are_stale() {
        let now = Utc::now();
        let old = snapshot("mx1", now - TimeDelta::seconds(30), 5);
        let new = snapshot("mx1", now, 1);
        let other = snapshot("mx2", now - TimeDelta::seconds(60), 1);
        let mut assembler = Assembler::default();

        assembler.offer(parts(&old)[0].clone(), at(1));
        assembler.offer(parts(&old)[1].clone(), at(2));
        // Another host's snapshot does not disturb it.
        let (offered, abandoned) = assembler.offer(parts(&other)[0].clone(), at(3));
        assert!(matches!(offered, Offered::Complete(..)) && abandoned.is_none());

        let (offered, abandoned) = assembler.offer(parts(&new)[0].clone(), at(4));
        assert_eq!(offered, Offered::Complete(new, vec![at(4)]));
        let abandoned = abandoned.unwrap();
        assert_eq!((abandoned.received, abandoned.parts), (2, 3));
        assert_eq!(abandoned.positions, vec![at(1), at(2)]);

        // The old snapshot's last part comes late: stale.
        assert!(matches!(
            assembler.offer(parts(&old)[2].clone(), at(5)).0,
            Offered::Skipped(_)
        ));
    }

    #[test]
    fn malformed_parts_are_skipped() {
        let whole = snapshot("mx1", Utc::now(), 3);
        let mut assembler = Assembler::default();
        let mut bad = parts(&whole)[0].clone();
        bad.part = 7;
        assert!(matches!(assembler.offer(bad, at(1)).0, Offered::Skipped(_)));
        let mut zero = parts(&whole)[0].clone();
        zero.parts = 0;
        assert!(matches!(
            assembler.offer(zero, at(2)).0,
            Offered::Skipped(_)
        ));
        assembler.offer(parts(&whole)[0].clone(), at(3));
        let mut other_count = parts(&whole)[1].clone();
        other_count.parts = 5;
        assert!(matches!(
            assembler.offer(other_count, at(4)).0,
            Offered::Skipped(_)
        ));
    }

    #[test]
    fn a_revoked_partition_is_forgotten() {
        let whole = snapshot("mx1", Utc::now(), 3);
        let mut assembler = Assembler::default();
        assembler.offer(parts(&whole)[0].clone(), at(1));
        assembler.forget_partition(1);
        assert_eq!(assembler.incomplete(), 1);
        assembler.forget_partition(0);
        assert_eq!(assembler.incomplete(), 0);
    }
}
