//! Partition states saved beside the loop.
//!
//! A partition's pipeline state holds every message in flight: it is by
//! far the largest write of the store, and serialising it takes about as
//! long again. Done inside a round, it held up every record polled during
//! that round and after it. So a round that is due for a save only takes
//! a copy of the state ([`PipelineState`]); once the round's batch is
//! stored, a thread of its own serialises the copy and stores it as the
//! partition's blob while the loop goes on polling, processing and
//! storing the next rounds. The loop commits the partition's offset just
//! past that round once the save is done.
//!
//! What keeps this as safe as a state stored with its batch:
//!
//! - A save starts only after the data it describes is stored, so a
//!   state is never ahead of the stored records.
//! - An offset is committed only once the state it goes with is stored.
//!   A state stored later than the rounds after it (their records
//!   stored, their offsets not) is fine: records read again are skipped
//!   by the state's applied positions, or applied to it for the first
//!   time.
//! - One save runs at a time, so states land in the order they were taken.
//! - Before the processor gives up a partition (a rebalance, noticed in
//!   the consumer's callback) or saves a final state, it waits for the
//!   save in flight: no state of this processor lands after the
//!   partition's next owner has started from the stored one.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use exim_pilot_store::{Batch, Blob, Store, StoreError};
use tokio::runtime::Handle;

use crate::pipeline::PipelineState;

/// One partition's state to save.
pub struct StateCopy {
    /// The partition.
    pub partition: i32,
    /// The offset just past the last record the state covers.
    pub next_offset: i64,
    /// The blob it is saved as.
    pub blob: String,
    /// The state.
    pub state: PipelineState,
}

/// What a finished save covered.
#[derive(Debug)]
pub struct Saved {
    /// Each partition and the offset just past what its state covers.
    pub offsets: Vec<(i32, i64)>,
    /// When the save started.
    pub started: Instant,
    /// The rebalance count when the save started.
    pub rebalances: u64,
    /// Bytes written.
    pub bytes: usize,
    /// How long the serialising took.
    pub encode: Duration,
    /// How long the store took.
    pub store: Duration,
}

#[derive(Default)]
enum Slot {
    #[default]
    Idle,
    Running,
    Finished(Box<Result<Saved, StoreError>>),
}

#[derive(Default)]
struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
}

/// The save in flight, if any; cloned into the consumer's callbacks so
/// that they can wait for it.
#[derive(Clone, Default)]
pub struct StateSaves {
    shared: Arc<Shared>,
}

impl StateSaves {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.shared.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while a save runs or its outcome waits to be taken.
    pub fn busy(&self) -> bool {
        !matches!(*self.slot(), Slot::Idle)
    }

    /// Starts saving `copies` in one store write, on a thread of its
    /// own; `rebalances` is the processor's count, handed back with the
    /// outcome. Does nothing when another save is busy or there is nothing
    /// to save.
    pub fn start(
        &self,
        runtime: &Handle,
        store: &Arc<dyn Store>,
        copies: Vec<StateCopy>,
        rebalances: u64,
    ) {
        if copies.is_empty() {
            return;
        }
        {
            let mut slot = self.slot();
            if !matches!(*slot, Slot::Idle) {
                return;
            }
            *slot = Slot::Running;
        }
        let (shared, runtime, store) = (self.shared.clone(), runtime.clone(), store.clone());
        let started = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("state-save".into())
            .spawn(move || {
                let outcome = save(&runtime, &*store, copies, started, rebalances);
                let mut slot = shared.slot.lock().unwrap_or_else(|p| p.into_inner());
                *slot = Slot::Finished(Box::new(outcome));
                shared.changed.notify_all();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "Cannot start a thread to save partition states");
            *self.slot() = Slot::Idle;
        }
    }

    /// The outcome of a finished save, once.
    pub fn take_finished(&self) -> Option<Result<Saved, StoreError>> {
        let mut slot = self.slot();
        if !matches!(*slot, Slot::Finished(_)) {
            return None;
        }
        match std::mem::take(&mut *slot) {
            Slot::Finished(outcome) => Some(*outcome),
            _ => None,
        }
    }

    /// Waits up to `patience` for the save in flight to finish. False
    /// when it still runs.
    pub fn wait(&self, patience: Duration) -> bool {
        let slot = self.slot();
        let (slot, _) = self
            .shared
            .changed
            .wait_timeout_while(slot, patience, |s| matches!(s, Slot::Running))
            .unwrap_or_else(|p| p.into_inner());
        !matches!(*slot, Slot::Running)
    }
}

/// Serialises the copies and stores them as one batch of blobs.
fn save(
    runtime: &Handle,
    store: &dyn Store,
    copies: Vec<StateCopy>,
    started: Instant,
    rebalances: u64,
) -> Result<Saved, StoreError> {
    let began = Instant::now();
    let mut offsets = Vec::with_capacity(copies.len());
    let mut blobs = Vec::with_capacity(copies.len());
    for copy in copies {
        offsets.push((copy.partition, copy.next_offset));
        blobs.push(Blob {
            name: copy.blob,
            data: copy.state.encode(),
        });
    }
    let bytes = blobs.iter().map(|b| b.data.len()).sum();
    let encoded = Instant::now();
    let batch = Batch {
        blobs,
        ..Batch::default()
    };
    runtime.block_on(store.commit_batch(batch))?;
    Ok(Saved {
        offsets,
        started,
        rebalances,
        bytes,
        encode: encoded - began,
        store: encoded.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use exim_pilot_schema::Zone;
    use exim_pilot_store::SqliteStore;

    use super::*;
    use crate::correlate::CorrelatorConfig;
    use crate::pipeline::Pipeline;

    fn copy(partition: i32, next_offset: i64) -> StateCopy {
        let pipeline = Pipeline::new(Zone::Utc, CorrelatorConfig::default());
        StateCopy {
            partition,
            next_offset,
            blob: format!("state-{partition}"),
            state: pipeline.state(),
        }
    }

    #[test]
    fn a_save_is_stored_then_handed_back_once_and_one_runs_at_a_time() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_dir(dir.path()).unwrap());
        let saves = StateSaves::default();
        assert!(!saves.busy());

        saves.start(rt.handle(), &store, vec![copy(0, 10), copy(2, 7)], 3);
        assert!(saves.busy());
        // Another save while one is busy is not started.
        saves.start(rt.handle(), &store, vec![copy(5, 1)], 3);
        assert!(saves.wait(Duration::from_secs(30)));
        assert!(saves.busy(), "busy until its outcome is taken");

        let saved = saves.take_finished().unwrap().unwrap();
        assert_eq!(saved.offsets, vec![(0, 10), (2, 7)]);
        assert_eq!(saved.rebalances, 3);
        assert!(saves.take_finished().is_none());
        assert!(!saves.busy());
        for name in ["state-0", "state-2"] {
            let data = rt.block_on(store.load_blob(name)).unwrap().unwrap();
            Pipeline::restore(Zone::Utc, &data).unwrap();
        }
        assert_eq!(rt.block_on(store.load_blob("state-5")).unwrap(), None);
    }

    #[test]
    fn nothing_to_save_starts_nothing() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_dir(dir.path()).unwrap());
        let saves = StateSaves::default();
        saves.start(rt.handle(), &store, Vec::new(), 0);
        assert!(!saves.busy());
        assert!(saves.wait(Duration::ZERO));
        assert!(saves.take_finished().is_none());
    }
}
