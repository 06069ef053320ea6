//! What the queue consumer reports: each observable thing is one method
//! that writes its `tracing` event and moves its Prometheus metric.
//!
//! [`QueueConsumerMetrics`] registers in the registry the binary serves at
//! `/metrics`; without it the events are only logged. Labels are fixed
//! words, never values from the topic.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::assemble::Abandoned;
use crate::fleet::metrics::MetricsError;

/// The queue consumer's metrics. Cloning shares them.
#[derive(Clone)]
pub struct QueueConsumerMetrics {
    records: IntCounterVec,
    assembled: IntCounter,
    abandoned: IntCounter,
    skipped: IntCounter,
    results: IntCounter,
    sink_errors: IntCounter,
    commit_errors: IntCounter,
    incomplete: IntGauge,
}

impl QueueConsumerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<QueueConsumerMetrics, MetricsError> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let records = IntCounterVec::new(
            Opts::new(
                "exim_pilot_queue_records_consumed_total",
                "Records read from the queue topic, by kind (snapshot_part, result, \
                 view_reply, undecodable).",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(records.clone()))?;
        let incomplete = IntGauge::new(
            "exim_pilot_queue_snapshots_incomplete",
            "Queue snapshots waiting for some of their parts.",
        )?;
        registry.register(Box::new(incomplete.clone()))?;
        Ok(QueueConsumerMetrics {
            records,
            assembled: counter(
                "exim_pilot_queue_snapshots_assembled_total",
                "Queue snapshots put together from all their parts and stored.",
            )?,
            abandoned: counter(
                "exim_pilot_queue_snapshots_abandoned_total",
                "Incomplete queue snapshots given up for a newer one of the same host.",
            )?,
            skipped: counter(
                "exim_pilot_queue_snapshot_parts_skipped_total",
                "Snapshot parts skipped: stale, repeated or malformed.",
            )?,
            results: counter(
                "exim_pilot_queue_results_stored_total",
                "Results of queue jobs handed to the store.",
            )?,
            sink_errors: counter(
                "exim_pilot_queue_sink_errors_total",
                "Failed attempts to store queue snapshots or results (each is retried).",
            )?,
            commit_errors: counter(
                "exim_pilot_queue_offset_commit_errors_total",
                "Offset commits of the queue topic Kafka refused.",
            )?,
            incomplete,
        })
    }

    /// Snapshots stored so far.
    pub fn snapshots_assembled(&self) -> u64 {
        self.assembled.get()
    }

    /// Snapshots abandoned so far.
    pub fn snapshots_abandoned(&self) -> u64 {
        self.abandoned.get()
    }

    /// Results stored so far.
    pub fn results_stored(&self) -> u64 {
        self.results.get()
    }

    /// Records read so far of `kind` (`snapshot_part`, `result`,
    /// `view_reply`, `undecodable`).
    pub fn records(&self, kind: &str) -> u64 {
        self.records.with_label_values(&[kind]).get()
    }

    /// Failed store attempts so far.
    pub fn sink_errors(&self) -> u64 {
        self.sink_errors.get()
    }
}

/// The consumer's events: always logged, counted when metrics are set.
#[derive(Clone, Default)]
pub(crate) struct Events {
    metrics: Option<QueueConsumerMetrics>,
}

impl Events {
    pub(crate) fn new(metrics: Option<QueueConsumerMetrics>) -> Events {
        Events { metrics }
    }

    pub(crate) fn consumed(&self, kind: &'static str) {
        if let Some(m) = &self.metrics {
            m.records.with_label_values(&[kind]).inc();
        }
    }

    pub(crate) fn undecodable(&self, partition: i32, offset: i64, error: &dyn std::fmt::Display) {
        tracing::warn!(
            partition,
            offset,
            error = %error,
            "Record of the queue topic is no queue record; skipped"
        );
        self.consumed("undecodable");
    }

    pub(crate) fn assembled(&self, host: &str, taken_at: DateTime<Utc>, messages: usize) {
        tracing::debug!(
            host,
            taken_at = %taken_at.to_rfc3339(),
            messages,
            "Queue snapshot stored"
        );
        if let Some(m) = &self.metrics {
            m.assembled.inc();
        }
    }

    pub(crate) fn abandoned(&self, abandoned: &Abandoned) {
        tracing::info!(
            host = %abandoned.host,
            taken_at = %abandoned.taken_at.to_rfc3339(),
            received = abandoned.received,
            parts = abandoned.parts,
            "Incomplete queue snapshot given up for a newer one"
        );
        if let Some(m) = &self.metrics {
            m.abandoned.inc();
        }
    }

    pub(crate) fn skipped(&self, host: &str, part: u32, reason: &'static str) {
        tracing::debug!(host, part, reason, "Snapshot part skipped");
        if let Some(m) = &self.metrics {
            m.skipped.inc();
        }
    }

    pub(crate) fn results_stored(&self, count: usize) {
        tracing::debug!(results = count, "Queue job results stored");
        if let Some(m) = &self.metrics {
            m.results.inc_by(count as u64);
        }
    }

    pub(crate) fn sink_failed(
        &self,
        what: &'static str,
        error: &dyn std::fmt::Display,
        failures: u32,
        wait: Duration,
    ) {
        tracing::warn!(
            what,
            error = %error,
            failures,
            retry_in_ms = wait.as_millis() as u64,
            "Storing queue data failed; retrying"
        );
        if let Some(m) = &self.metrics {
            m.sink_errors.inc();
        }
    }

    pub(crate) fn offset_commit_failed(&self, error: &dyn std::fmt::Display) {
        tracing::warn!(
            error = %error,
            "Kafka refused the queue topic's offsets; records stored may be read again"
        );
        if let Some(m) = &self.metrics {
            m.commit_errors.inc();
        }
    }

    pub(crate) fn consumer_error(&self, error: &dyn std::fmt::Display) {
        tracing::debug!(error = %error, "Queue consumer error");
    }

    pub(crate) fn incomplete(&self, snapshots: usize) {
        if let Some(m) = &self.metrics {
            m.incomplete.set(snapshots as i64);
        }
    }
}
