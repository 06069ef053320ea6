//! The consumer's callbacks.
//!
//! librdkafka calls them from inside a poll, on the polling thread, while
//! the loop holds its own state mutably borrowed elsewhere; so they only
//! note what happened, and the loop acts on the notes right after the poll
//! returns (see `Processor::rebalanced`). Nothing else runs between the
//! callback and that point, so no record of a revoked partition can slip
//! through.
//!
//! One thing the callbacks do themselves: before partitions are taken
//! away, they wait for the partition state being saved beside the loop
//! (see `saves`), so that it cannot land after the next owner started.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Statistics};

use super::saves::StateSaves;
use super::FleetMetrics;

/// How long a rebalance waits for a partition state being saved.
const SAVE_PATIENCE: Duration = Duration::from_secs(60);

/// A change of the partitions this processor owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// These partitions were assigned.
    Assigned(Vec<i32>),
    /// These partitions were taken away.
    Revoked(Vec<i32>),
    /// The group failed to rebalance; librdkafka dropped every partition.
    Lost,
}

/// Notes rebalances and takes the consumer lag from librdkafka's
/// statistics.
pub struct FleetContext {
    topic: String,
    changes: Mutex<Vec<Assignment>>,
    metrics: FleetMetrics,
    saves: StateSaves,
}

impl FleetContext {
    pub fn new(topic: &str, metrics: FleetMetrics, saves: StateSaves) -> FleetContext {
        FleetContext {
            topic: topic.to_string(),
            changes: Mutex::new(Vec::new()),
            metrics,
            saves,
        }
    }

    /// Waits for the state save in flight before partitions go.
    fn let_save_finish(&self) {
        if !self.saves.wait(SAVE_PATIENCE) {
            tracing::warn!(
                waited_s = SAVE_PATIENCE.as_secs(),
                "A partition state is still being saved while partitions are taken away"
            );
        }
    }

    /// The changes noted since the last call, oldest first.
    pub fn take_changes(&self) -> Vec<Assignment> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn note(&self, change: Assignment) {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(change);
    }
}

impl ClientContext for FleetContext {
    /// Sums the lag of the partitions this consumer fetches. librdkafka
    /// reports -1 for a partition whose lag it does not know yet.
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let lag: i64 = topic
            .partitions
            .values()
            .filter(|p| p.partition >= 0)
            .map(|p| p.consumer_lag.max(0))
            .sum();
        self.metrics.lag(lag);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Reaching the end of a partition is news, not trouble; the loop
        // learns of it from the poll.
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!(reason, "End of partition");
            return;
        }
        self.metrics.client_error(&error, reason);
    }
}

impl ConsumerContext for FleetContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                self.let_save_finish();
                let partitions = list
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                self.note(Assignment::Revoked(partitions));
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                self.let_save_finish();
                tracing::warn!(error = %e, "Consumer group rebalance failed");
                self.note(Assignment::Lost);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let partitions = list
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            self.note(Assignment::Assigned(partitions));
        }
    }
}
