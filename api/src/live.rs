//! Live data: what the pipeline committed, for subscriptions.
//!
//! A process that runs the pipeline sends each committed batch's records
//! and lifecycles on a [`tokio::sync::broadcast`] channel
//! ([`channel`]); every subscription receives from it. A process that
//! serves a store others fill sends what it polls from the store's live
//! feed instead ([`crate::feed`]).

use std::sync::Arc;

use exim_pilot_schema::Lifecycle;
use exim_pilot_store::{Batch, StoredRecord};
use tokio::sync::broadcast;

/// Batches kept for subscribers that fall behind.
const CAPACITY: usize = 64;

/// The part of a committed batch subscribers see.
#[derive(Clone, Debug, Default)]
pub struct LiveBatch {
    /// Raw records stored.
    pub records: Vec<StoredRecord>,
    /// Lifecycles new or changed.
    pub lifecycles: Vec<Lifecycle>,
}

impl LiveBatch {
    /// What subscribers see of a store batch.
    pub fn of(batch: &Batch) -> LiveBatch {
        LiveBatch {
            records: batch.records.clone(),
            lifecycles: batch.lifecycles.clone(),
        }
    }
}

/// A new channel; the sender goes to the pipeline and the API.
pub fn channel() -> broadcast::Sender<Arc<LiveBatch>> {
    broadcast::channel(CAPACITY).0
}
