//! What a fleet processor reports.
//!
//! Each observable thing is one method that writes its `tracing` event and
//! moves its Prometheus metric together, so logs and metrics agree. The
//! metrics are registered in the registry the caller passes, which the
//! binary serves at `/metrics`. No label carries a value from the logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exim_pilot_store::{BatchSummary, StoreError};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use crate::pipeline::PipelineCounts;

/// Why the metrics could not be registered.
pub type MetricsError = prometheus::Error;

/// Every metric of a fleet processor. Cloning shares them.
#[derive(Clone)]
pub struct FleetMetrics {
    messages: IntCounter,
    records: IntCounter,
    undecodable: IntCounter,
    unparsed: IntCounter,
    rejects: IntCounter,
    lifecycle_updates: IntCounter,
    batches: IntCounter,
    store_errors: IntCounter,
    store_retries: IntCounter,
    commit_seconds: Histogram,
    offset_commit_errors: IntCounter,
    consumer_errors: IntCounter,
    pending: IntGauge,
    partitions: IntGauge,
    lag: IntGauge,
    /// When each Kafka error was last logged as a warning.
    warned: Arc<Mutex<HashMap<String, Instant>>>,
}

/// How long the same Kafka error is not logged again. While a broker is
/// down, librdkafka reports it at every poll, ten times a second.
const REPEAT_WARNING_AFTER: Duration = Duration::from_secs(30);

impl FleetMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<FleetMetrics, MetricsError> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, MetricsError> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let commit_seconds = Histogram::with_opts(HistogramOpts::new(
            "exim_pilot_store_commit_seconds",
            "Time of one successful store commit.",
        ))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        Ok(FleetMetrics {
            messages: counter(
                "exim_pilot_kafka_records_consumed_total",
                "Kafka records consumed from the raw topic.",
            )?,
            records: counter(
                "exim_pilot_records_processed_total",
                "Log records parsed and correlated.",
            )?,
            undecodable: counter(
                "exim_pilot_kafka_records_undecodable_total",
                "Kafka records that are no record batch (stored whole).",
            )?,
            unparsed: counter(
                "exim_pilot_records_unparsed_total",
                "Records the parser could not classify (kept whole in the store).",
            )?,
            rejects: counter(
                "exim_pilot_rejects_total",
                "SMTP rejections and failed authentications found.",
            )?,
            lifecycle_updates: counter(
                "exim_pilot_lifecycle_updates_total",
                "Lifecycle versions written to the store.",
            )?,
            batches: counter(
                "exim_pilot_store_batches_committed_total",
                "Batches the store acknowledged.",
            )?,
            store_errors: counter(
                "exim_pilot_store_errors_total",
                "Store operations that failed (each is retried).",
            )?,
            store_retries: counter(
                "exim_pilot_store_retries_total",
                "Store operations attempted again after a failure.",
            )?,
            commit_seconds,
            offset_commit_errors: counter(
                "exim_pilot_kafka_offset_commit_errors_total",
                "Offset commits Kafka refused (the records are read again and skipped).",
            )?,
            consumer_errors: counter(
                "exim_pilot_kafka_consumer_errors_total",
                "Errors the Kafka consumer reported while polling.",
            )?,
            pending: gauge(
                "exim_pilot_pending_records",
                "Log records in the batch waiting for the store's acknowledgement.",
            )?,
            partitions: gauge(
                "exim_pilot_kafka_partitions_assigned",
                "Partitions of the raw topic assigned to this processor.",
            )?,
            lag: gauge(
                "exim_pilot_kafka_consumer_lag",
                "Kafka records not yet consumed, over this processor's partitions.",
            )?,
            warned: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The number of log records waiting for the store's acknowledgement.
    pub fn pending_records(&self) -> i64 {
        self.pending.get()
    }

    /// Batches the store has acknowledged.
    pub fn batches_committed(&self) -> u64 {
        self.batches.get()
    }

    /// Store operations retried.
    pub fn store_retries(&self) -> u64 {
        self.store_retries.get()
    }

    /// Log records processed.
    pub fn records_processed(&self) -> u64 {
        self.records.get()
    }

    pub(crate) fn lag(&self, records: i64) {
        self.lag.set(records);
    }

    pub(crate) fn consumed(&self, kafka_records: u64) {
        self.messages.inc_by(kafka_records);
    }

    pub(crate) fn undecodable(&self, partition: i32, offset: i64, error: &dyn std::fmt::Display) {
        tracing::warn!(
            partition,
            offset,
            error = %error,
            "Kafka record is no record batch; stored whole as undecodable"
        );
        self.undecodable.inc();
    }

    /// Adds what a pipeline did between two snapshots of its counts.
    pub(crate) fn processed(&self, before: PipelineCounts, after: PipelineCounts) {
        self.records
            .inc_by(after.records.saturating_sub(before.records));
        self.unparsed
            .inc_by(after.unparsed.saturating_sub(before.unparsed));
        self.rejects
            .inc_by(after.rejects.saturating_sub(before.rejects));
        self.lifecycle_updates.inc_by(
            after
                .lifecycle_updates
                .saturating_sub(before.lifecycle_updates),
        );
    }

    pub(crate) fn pending(&self, records: usize) {
        self.pending.set(records as i64);
    }

    pub(crate) fn store_failed(
        &self,
        what: &str,
        error: &StoreError,
        failures: u32,
        wait: Duration,
    ) {
        tracing::warn!(
            operation = what,
            error = %error,
            failures,
            retry_in_ms = wait.as_millis() as u64,
            "Store operation failed; retrying"
        );
        self.store_errors.inc();
    }

    pub(crate) fn store_retry(&self) {
        self.store_retries.inc();
    }

    pub(crate) fn batch_committed(&self, summary: &BatchSummary, records: usize, took: Duration) {
        tracing::debug!(
            records,
            records_added = summary.records_added,
            lifecycles_added = summary.lifecycles_added,
            lifecycles_updated = summary.lifecycles_updated,
            took_ms = took.as_millis() as u64,
            "Batch committed to the store"
        );
        self.batches.inc();
        self.commit_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn offset_commit_failed(&self, error: &dyn std::fmt::Display) {
        tracing::warn!(
            error = %error,
            "Kafka refused the offset commit; the stored records will be read again and skipped"
        );
        self.offset_commit_errors.inc();
    }

    pub(crate) fn consumer_error(&self, error: &dyn std::fmt::Display) {
        self.consumer_errors.inc();
        let text = error.to_string();
        if self.is_new_warning(&text) {
            tracing::warn!(error = %text, "Kafka consumer error");
        } else {
            tracing::debug!(error = %text, "Kafka consumer error");
        }
    }

    /// A Kafka client error reported outside a poll (connections, the
    /// group coordinator); not counted, as polls report what matters.
    pub(crate) fn client_error(&self, error: &dyn std::fmt::Display, reason: &str) {
        let text = error.to_string();
        if self.is_new_warning(&text) {
            tracing::warn!(error = %text, reason, "Kafka client error");
        } else {
            tracing::debug!(error = %text, reason, "Kafka client error");
        }
    }

    /// True when `text` was not warned about in the last
    /// [`REPEAT_WARNING_AFTER`].
    fn is_new_warning(&self, text: &str) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned
            .get(text)
            .is_some_and(|at| at.elapsed() < REPEAT_WARNING_AFTER)
        {
            return false;
        }
        // Errors are of a few kinds (a broker down reports two, in turn);
        // forgetting them all now and then keeps the map small.
        if warned.len() >= 64 {
            warned.clear();
        }
        warned.insert(text.to_string(), Instant::now());
        true
    }

    pub(crate) fn assigned(&self, partitions: usize) {
        self.partitions.set(partitions as i64);
    }
}
