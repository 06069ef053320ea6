//! Everything the queue node reports: one method per observable event,
//! which writes the `tracing` event and moves the matching Prometheus
//! metric, so the logs and the figures always agree.
//!
//! [`QueueMetrics`] registers the metrics in the registry the binary serves
//! at `/metrics`. Without it (the default) the events are only logged.
//! Labels are only action and status names, never values from the queue,
//! so the number of series stays fixed.

use std::time::Duration;

use exim_pilot_schema::queue::{QueueActionResult, QueueActionStatus, QueueJob, QueueSnapshot};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::error::EximError;
use super::listing::ListingProblem;

/// Why the metrics could not be registered.
pub type MetricsError = prometheus::Error;

/// The queue node's Prometheus metrics. Cloning shares them.
#[derive(Clone)]
pub struct QueueMetrics {
    snapshots: IntCounter,
    snapshot_errors: IntCounter,
    listing_problems: IntCounter,
    messages: IntGauge,
    frozen: IntGauge,
    oldest_age: IntGauge,
    last_snapshot: IntGauge,
    list_seconds: Histogram,
    actions: IntCounterVec,
}

impl QueueMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<QueueMetrics, MetricsError> {
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
        let list_seconds = Histogram::with_opts(HistogramOpts::new(
            "exim_pilot_queue_list_seconds",
            "Time `exim -bp` took to list the queue.",
        ))?;
        registry.register(Box::new(list_seconds.clone()))?;
        let actions = IntCounterVec::new(
            Opts::new(
                "exim_pilot_queue_actions_total",
                "Queue actions run on single messages, by action and how they ended.",
            ),
            &["action", "status"],
        )?;
        registry.register(Box::new(actions.clone()))?;
        Ok(QueueMetrics {
            snapshots: counter("exim_pilot_queue_snapshots_total", "Queue listings taken.")?,
            snapshot_errors: counter(
                "exim_pilot_queue_snapshot_errors_total",
                "Queue listings that failed (tried again at the next interval).",
            )?,
            listing_problems: counter(
                "exim_pilot_queue_listing_problems_total",
                "Lines of queue listings that could not be read.",
            )?,
            messages: gauge(
                "exim_pilot_queue_messages",
                "Messages on the queue at the last listing.",
            )?,
            frozen: gauge(
                "exim_pilot_queue_frozen_messages",
                "Frozen messages on the queue at the last listing.",
            )?,
            oldest_age: gauge(
                "exim_pilot_queue_oldest_message_age_seconds",
                "Time the oldest message had spent on the queue at the last listing.",
            )?,
            last_snapshot: gauge(
                "exim_pilot_queue_last_snapshot_timestamp_seconds",
                "When the last queue listing was taken, in seconds since the epoch.",
            )?,
            list_seconds,
            actions,
        })
    }

    /// Queue listings taken so far.
    pub fn snapshots(&self) -> u64 {
        self.snapshots.get()
    }

    /// Queue listings that failed so far.
    pub fn snapshot_errors(&self) -> u64 {
        self.snapshot_errors.get()
    }

    /// Listing lines that could not be read so far.
    pub fn listing_problems(&self) -> u64 {
        self.listing_problems.get()
    }
}

/// The events of one queue node: always logged, counted when metrics are
/// set.
#[derive(Clone, Default)]
pub(crate) struct Events {
    metrics: Option<QueueMetrics>,
}

impl Events {
    pub(crate) fn new(metrics: Option<QueueMetrics>) -> Events {
        Events { metrics }
    }

    pub(crate) fn snapshot_taken(
        &self,
        snapshot: &QueueSnapshot,
        problems: &[ListingProblem],
        took: Duration,
    ) {
        let totals = snapshot.totals();
        tracing::debug!(
            host = %snapshot.host,
            messages = totals.messages,
            frozen = totals.frozen,
            took_ms = took.as_millis() as u64,
            "Queue listed"
        );
        if let Some(first) = problems.first() {
            tracing::warn!(
                host = %snapshot.host,
                lines = problems.len(),
                first_line = first.line,
                first_text = %first.text,
                reason = first.reason,
                "Queue listing has lines that could not be read; their messages may lack details"
            );
        }
        let Some(m) = &self.metrics else { return };
        m.snapshots.inc();
        m.listing_problems.inc_by(problems.len() as u64);
        m.messages.set(to_i64(totals.messages));
        m.frozen.set(to_i64(totals.frozen));
        m.oldest_age
            .set(to_i64(totals.oldest_age_secs.unwrap_or(0)));
        m.last_snapshot.set(snapshot.taken_at.timestamp());
        m.list_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn snapshot_failed(&self, host: &str, error: &EximError) {
        tracing::warn!(
            host,
            error = %error,
            "Queue listing failed; trying again at the next interval"
        );
        if let Some(m) = &self.metrics {
            m.snapshot_errors.inc();
        }
    }

    pub(crate) fn snapshots_unwanted(&self, host: &str) {
        tracing::info!(
            host,
            "Queue snapshots are no longer read; the snapshotter stops"
        );
    }

    pub(crate) fn action_finished(&self, result: &QueueActionResult) {
        let done = result.status == QueueActionStatus::Done;
        if done {
            tracing::info!(
                job_id = %result.job_id,
                id = %result.id,
                action = %result.action,
                status = result.status.as_str(),
                "Queue action done"
            );
        } else {
            tracing::warn!(
                job_id = %result.job_id,
                id = %result.id,
                action = %result.action,
                status = result.status.as_str(),
                exit_code = result.exit_code,
                output = %result.output,
                "Queue action did not succeed"
            );
        }
        if let Some(m) = &self.metrics {
            m.actions
                .with_label_values(&[result.action.as_str(), result.status.as_str()])
                .inc();
        }
    }

    pub(crate) fn job_refused(&self, job: &QueueJob, error: &EximError) {
        tracing::warn!(
            job_id = %job.job_id,
            job_host = %job.host,
            error = %error,
            "Queue job refused; nothing was run"
        );
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
