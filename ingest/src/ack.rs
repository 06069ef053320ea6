//! Batches of records and their acknowledgement.
//!
//! The consumer pulls records in [`Batch`]es and acknowledges a batch once
//! it is safe: stored in the database (standalone) or acknowledged by the
//! broker (fleet). Only acknowledged positions reach a checkpoint. Batches
//! may be acknowledged in any order; the checkpoint advances over the
//! longest run of acknowledged batches from the oldest one, so a batch
//! acknowledged early never lets the checkpoint jump over an earlier batch
//! that is still in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use exim_pilot_schema::record::RawRecord;

/// Numbers the followers of this process, so an acknowledgement cannot be
/// applied to a follower that did not hand the batch out.
static NEXT_FOLLOWER_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique follower number.
pub(crate) fn next_follower_id() -> u64 {
    NEXT_FOLLOWER_ID.fetch_add(1, Ordering::Relaxed)
}

/// Records handed to the consumer, in file order per log.
#[derive(Debug)]
pub struct Batch {
    /// The records.
    pub records: Vec<RawRecord>,
    ack: Ack,
    /// `(file_id, inode)` of every file the records come from.
    pub(crate) inodes: Vec<(u64, u64)>,
}

impl Batch {
    pub(crate) fn new(records: Vec<RawRecord>, ack: Ack) -> Batch {
        Batch {
            records,
            ack,
            inodes: Vec::new(),
        }
    }

    pub(crate) fn with_inodes(mut self, inodes: Vec<(u64, u64)>) -> Batch {
        self.inodes = inodes;
        self
    }

    /// The inode of the file whose records carry `file_id`, as it was when
    /// the file was first read: a hint for people tracing a record back to
    /// a file (identity is the `file_id`).
    pub fn inode_of(&self, file_id: u64) -> Option<u64> {
        self.inodes
            .iter()
            .find(|&&(id, _)| id == file_id)
            .map(|&(_, inode)| inode)
    }

    /// The token that acknowledges this batch.
    pub fn ack(&self) -> Ack {
        self.ack.clone()
    }

    /// Splits the batch into its records and its token.
    pub fn into_parts(self) -> (Vec<RawRecord>, Ack) {
        (self.records, self.ack)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Acknowledges one batch. Small and cheap to clone and send between
/// threads; acknowledging a batch twice, or one this process did not hand
/// out, does nothing.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ack {
    pub(crate) parts: Vec<AckPart>,
}

/// The part of a batch that came from one follower.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct AckPart {
    pub follower: u64,
    pub batch: u64,
}

impl Ack {
    pub(crate) fn single(follower: u64, batch: u64) -> Ack {
        Ack {
            parts: vec![AckPart { follower, batch }],
        }
    }

    pub(crate) fn merge(parts: impl IntoIterator<Item = Ack>) -> Ack {
        Ack {
            parts: parts.into_iter().flat_map(|a| a.parts).collect(),
        }
    }
}

/// Acknowledges batches from another thread (a broker's delivery callback,
/// say). The acknowledgements take effect at the follower's or tailer's
/// next call.
#[derive(Clone, Debug, Default)]
pub struct Acker {
    queue: Arc<Mutex<Vec<Ack>>>,
}

impl Acker {
    /// Queues `ack`.
    pub fn ack(&self, ack: Ack) {
        // A poisoned lock only means another thread panicked while pushing;
        // the vector itself is still sound.
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push(ack);
    }

    /// Takes the queued acknowledgements.
    pub(crate) fn take(&self) -> Vec<Ack> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *queue)
    }
}

/// A batch handed out and not yet part of the checkpoint.
#[derive(Debug)]
struct Outstanding {
    batch: u64,
    /// Generation and end offset of the batch's last record.
    last: (u64, u64),
    records: u64,
    acked: bool,
}

/// The batches of one follower that are in flight.
#[derive(Debug, Default)]
pub(crate) struct AckWindow {
    next_batch: u64,
    outstanding: std::collections::VecDeque<Outstanding>,
}

/// What a run of acknowledged batches amounts to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Acknowledged {
    /// Generation and end offset of the last record acknowledged.
    pub last: (u64, u64),
    /// Number of records acknowledged.
    pub records: u64,
}

impl AckWindow {
    /// Records a batch handed out; returns its number.
    pub fn hand_out(&mut self, last: (u64, u64), records: u64) -> u64 {
        let batch = self.next_batch;
        self.next_batch += 1;
        self.outstanding.push_back(Outstanding {
            batch,
            last,
            records,
            acked: false,
        });
        batch
    }

    /// Batches handed out and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.outstanding.len()
    }

    /// Marks `batch` acknowledged; returns what became settled: the run
    /// of acknowledged batches from the oldest one.
    pub fn acknowledge(&mut self, batch: u64) -> Option<Acknowledged> {
        let found = self
            .outstanding
            .binary_search_by_key(&batch, |o| o.batch)
            .ok()?;
        self.outstanding[found].acked = true;

        let mut settled: Option<Acknowledged> = None;
        while self.outstanding.front().is_some_and(|o| o.acked) {
            let Some(done) = self.outstanding.pop_front() else {
                break;
            };
            let records = settled.as_ref().map_or(0, |s| s.records) + done.records;
            settled = Some(Acknowledged {
                last: done.last,
                records,
            });
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_acknowledgements_settle_in_order() {
        let mut window = AckWindow::default();
        let first = window.hand_out((1, 100), 3);
        let second = window.hand_out((1, 200), 2);
        let third = window.hand_out((2, 50), 1);
        assert_eq!(window.in_flight(), 3);

        assert_eq!(
            window.acknowledge(second),
            None,
            "the first batch is still in flight"
        );
        assert_eq!(
            window.acknowledge(second),
            None,
            "acknowledging twice does nothing"
        );
        assert_eq!(
            window.acknowledge(first),
            Some(Acknowledged {
                last: (1, 200),
                records: 5
            })
        );
        assert_eq!(window.acknowledge(99), None, "unknown batches are ignored");
        assert_eq!(
            window.acknowledge(third),
            Some(Acknowledged {
                last: (2, 50),
                records: 1
            })
        );
        assert_eq!(window.in_flight(), 0);
    }
}
