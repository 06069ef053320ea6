//! The batch waiting for the store's acknowledgement.
//!
//! It is built once per round and then only offered again, unchanged,
//! until the store takes it: a retry never processes or appends its
//! records a second time. A partition revoked meanwhile loses its part.

use std::collections::BTreeMap;

use exim_pilot_store::Batch;

use super::saves::StateCopy;

/// One partition's share of a round.
pub struct Part {
    /// What the partition's pipeline made of its records, with its state.
    pub batch: Batch,
    /// The offset just past the partition's last Kafka record.
    pub next_offset: i64,
    /// Log records in it (processed ones and undecodable ones).
    pub records: usize,
    /// Whether the batch carries the pipeline's state: only then may the
    /// partition's offset be committed once it is stored.
    pub with_state: bool,
    /// A copy of the pipeline's state as of the share's last record, to
    /// save once the share is stored.
    pub state: Option<StateCopy>,
}

/// Every partition's share of a round.
#[derive(Default)]
pub struct Pending {
    parts: BTreeMap<i32, Part>,
}

impl Pending {
    /// Adds a partition's share.
    pub fn insert(&mut self, partition: i32, part: Part) {
        self.parts.insert(partition, part);
    }

    /// Drops a partition's share (the partition was revoked).
    pub fn remove(&mut self, partition: i32) {
        self.parts.remove(&partition);
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.parts.clear();
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Log records waiting.
    pub fn records(&self) -> usize {
        self.parts.values().map(|p| p.records).sum()
    }

    /// The store batch: every part, in partition order. The parts are
    /// kept for another attempt.
    pub fn to_batch(&self) -> Batch {
        let mut batch = Batch::default();
        for part in self.parts.values() {
            super::merge(&mut batch, &part.batch);
        }
        batch
    }

    /// Takes the state copies out of the parts.
    pub fn take_states(&mut self) -> Vec<StateCopy> {
        self.parts
            .values_mut()
            .filter_map(|part| part.state.take())
            .collect()
    }

    /// Each partition's offset just past its share, and whether its
    /// state goes with it.
    pub fn offsets(&self) -> Vec<(i32, i64, bool)> {
        self.parts
            .iter()
            .map(|(partition, part)| (*partition, part.next_offset, part.with_state))
            .collect()
    }
}
