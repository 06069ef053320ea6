//! Everything the queue node's Kafka side reports: one method per
//! observable event, which writes the `tracing` event and moves the
//! matching Prometheus metric, so logs and figures agree.
//!
//! [`NodeMetrics`] registers the metrics in the registry the binary
//! serves at `/metrics`; without it the events are only logged. Labels
//! are fixed words, never values from commands or the queue.

use chrono::{DateTime, Utc};
use exim_pilot_schema::queue::QueueJob;
use exim_pilot_schema::queue_wire::{ViewOutcome, ViewRequest};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rdkafka::error::KafkaError;

use super::super::metrics::MetricsError;

/// The metrics of the queue node's Kafka side. Cloning shares them.
#[derive(Clone)]
pub struct NodeMetrics {
    commands: IntCounterVec,
    jobs: IntCounterVec,
    views: IntCounterVec,
    results_published: IntCounter,
    snapshots_published: IntCounter,
    parts_published: IntCounter,
    snapshots_superseded: IntCounter,
    publish_errors: IntCounter,
    commit_errors: IntCounter,
    consumer_errors: IntCounter,
}

impl NodeMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<NodeMetrics, MetricsError> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counters = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, MetricsError>(c)
        };
        Ok(NodeMetrics {
            commands: counters(
                "exim_pilot_queue_commands_received_total",
                "Records read from the command topic, by kind (job, view, other_host: a \
                 command for another host, ignored; undecodable).",
                "kind",
            )?,
            jobs: counters(
                "exim_pilot_queue_jobs_total",
                "Queue jobs taken from the command topic, by outcome (run; expired: not run; \
                 repeated: finished before a restart, not run again).",
                "outcome",
            )?,
            views: counters(
                "exim_pilot_queue_views_total",
                "View requests answered, by outcome (text, not_queued, expired, failed).",
                "outcome",
            )?,
            results_published: counter(
                "exim_pilot_queue_results_published_total",
                "Per-message results of queue jobs the broker acknowledged.",
            )?,
            snapshots_published: counter(
                "exim_pilot_queue_snapshots_published_total",
                "Queue snapshots whose every part the broker acknowledged.",
            )?,
            parts_published: counter(
                "exim_pilot_queue_snapshot_parts_published_total",
                "Kafka records of queue snapshots the broker acknowledged.",
            )?,
            snapshots_superseded: counter(
                "exim_pilot_queue_snapshots_superseded_total",
                "Queue snapshots not published because a newer one was taken meanwhile.",
            )?,
            publish_errors: counter(
                "exim_pilot_queue_publish_errors_total",
                "Kafka records of the queue the producer reported failed (each is sent again).",
            )?,
            commit_errors: counter(
                "exim_pilot_queue_command_commit_errors_total",
                "Offset commits of the command topic Kafka refused.",
            )?,
            consumer_errors: counter(
                "exim_pilot_queue_command_consumer_errors_total",
                "Errors the command topic's consumer reported.",
            )?,
        })
    }

    /// Results the broker acknowledged so far.
    pub fn results_published(&self) -> u64 {
        self.results_published.get()
    }

    /// Snapshots wholly acknowledged so far.
    pub fn snapshots_published(&self) -> u64 {
        self.snapshots_published.get()
    }

    /// Snapshots dropped for a newer one so far.
    pub fn snapshots_superseded(&self) -> u64 {
        self.snapshots_superseded.get()
    }

    /// Commands read so far of `kind` (`job`, `view`, `other_host`,
    /// `undecodable`).
    pub fn commands_received(&self, kind: &str) -> u64 {
        self.commands.with_label_values(&[kind]).get()
    }

    /// Jobs so far that ended as `outcome` (`run`, `expired`,
    /// `repeated`).
    pub fn jobs(&self, outcome: &str) -> u64 {
        self.jobs.with_label_values(&[outcome]).get()
    }

    /// Records the producer reported failed so far.
    pub fn publish_errors(&self) -> u64 {
        self.publish_errors.get()
    }
}

/// The events of the node's Kafka side: always logged, counted when
/// metrics are set.
#[derive(Clone, Default)]
pub(crate) struct NodeEvents {
    metrics: Option<NodeMetrics>,
}

impl NodeEvents {
    pub(crate) fn new(metrics: Option<NodeMetrics>) -> NodeEvents {
        NodeEvents { metrics }
    }

    pub(crate) fn snapshot_published(
        &self,
        host: &str,
        taken_at: DateTime<Utc>,
        parts: usize,
        messages: usize,
        bytes: usize,
    ) {
        tracing::debug!(
            host,
            taken_at = %taken_at.to_rfc3339(),
            parts,
            messages,
            bytes,
            "Queue snapshot published"
        );
        if let Some(m) = &self.metrics {
            m.snapshots_published.inc();
            m.parts_published.inc_by(parts as u64);
        }
    }

    pub(crate) fn snapshot_superseded(&self, host: &str, taken_at: DateTime<Utc>) {
        tracing::debug!(
            host,
            taken_at = %taken_at.to_rfc3339(),
            "Queue snapshot not published: a newer one replaces it"
        );
        if let Some(m) = &self.metrics {
            m.snapshots_superseded.inc();
        }
    }

    pub(crate) fn not_encoded(&self, what: &str, error: &dyn std::fmt::Display) {
        tracing::error!(what, error = %error, "Queue record could not be encoded; dropped");
        if let Some(m) = &self.metrics {
            m.publish_errors.inc();
        }
    }

    pub(crate) fn command_received(&self, kind: &'static str, partition: i32, offset: i64) {
        tracing::debug!(kind, partition, offset, "Queue command received");
        self.count_command(kind);
    }

    pub(crate) fn command_for_another_host(&self, host: &str, partition: i32, offset: i64) {
        tracing::debug!(
            command_host = host,
            partition,
            offset,
            "Queue command for another host ignored"
        );
        self.count_command("other_host");
    }

    pub(crate) fn command_undecodable(
        &self,
        partition: i32,
        offset: i64,
        error: &dyn std::fmt::Display,
    ) {
        tracing::warn!(
            partition,
            offset,
            error = %error,
            "Record of the command topic is no queue command; skipped"
        );
        self.count_command("undecodable");
    }

    fn count_command(&self, kind: &str) {
        if let Some(m) = &self.metrics {
            m.commands.with_label_values(&[kind]).inc();
        }
    }

    pub(crate) fn job_started(&self, job: &QueueJob, expired: bool) {
        let outcome = if expired { "expired" } else { "run" };
        if expired {
            tracing::warn!(
                job_id = %job.job_id,
                action = %job.action,
                messages = job.ids.len(),
                expires_at = %job.expires_at.to_rfc3339(),
                "Queue job expired before it reached this node; nothing is run"
            );
        } else {
            tracing::info!(
                job_id = %job.job_id,
                action = %job.action,
                messages = job.ids.len(),
                actor = %job.actor,
                "Queue job running"
            );
        }
        if let Some(m) = &self.metrics {
            m.jobs.with_label_values(&[outcome]).inc();
        }
    }

    pub(crate) fn job_repeated(&self, job: &QueueJob) {
        tracing::info!(
            job_id = %job.job_id,
            "Queue job already finished before a restart; not run again"
        );
        if let Some(m) = &self.metrics {
            m.jobs.with_label_values(&["repeated"]).inc();
        }
    }

    pub(crate) fn job_interrupted(&self, job: &QueueJob) {
        tracing::warn!(
            job_id = %job.job_id,
            "Queue job interrupted by the stop; it runs again after the restart"
        );
    }

    pub(crate) fn results_published(&self, job: &QueueJob, results: usize) {
        tracing::info!(
            job_id = %job.job_id,
            results,
            "Queue job finished; its results are on the queue topic"
        );
        if let Some(m) = &self.metrics {
            m.results_published.inc_by(results as u64);
        }
    }

    pub(crate) fn view_served(&self, request: &ViewRequest, outcome: &ViewOutcome) {
        let name = match outcome {
            ViewOutcome::Text { .. } => "text",
            ViewOutcome::Error { kind, .. } => match kind {
                exim_pilot_schema::queue_wire::ViewErrorKind::NotQueued => "not_queued",
                exim_pilot_schema::queue_wire::ViewErrorKind::Expired => "expired",
                exim_pilot_schema::queue_wire::ViewErrorKind::Failed => "failed",
            },
        };
        tracing::debug!(
            request_id = %request.request_id,
            id = %request.id,
            view = ?request.view,
            outcome = name,
            "Message view answered"
        );
        if let Some(m) = &self.metrics {
            m.views.with_label_values(&[name]).inc();
        }
    }

    pub(crate) fn publish_failed(&self, topic: &str, error: &KafkaError) {
        tracing::warn!(
            topic,
            error = %error,
            "Queue record not delivered; it is sent again"
        );
        if let Some(m) = &self.metrics {
            m.publish_errors.inc();
        }
    }

    pub(crate) fn producer_replaced(&self, reason: &str) {
        tracing::warn!(
            reason,
            "Kafka producer replaced by a new one after a failed delivery; undelivered records \
             are sent again"
        );
    }

    pub(crate) fn producer_not_replaced(&self, error: &KafkaError) {
        tracing::error!(error = %error, "Cannot recreate the Kafka producer; trying again later");
    }

    pub(crate) fn offset_commit_failed(&self, error: &KafkaError) {
        tracing::warn!(
            error = %error,
            "Kafka refused the command offsets; commands done may be read again after a restart"
        );
        if let Some(m) = &self.metrics {
            m.commit_errors.inc();
        }
    }

    pub(crate) fn consumer_error(&self, error: &KafkaError) {
        tracing::debug!(error = %error, "Command consumer error");
        if let Some(m) = &self.metrics {
            m.consumer_errors.inc();
        }
    }

    pub(crate) fn journal_failed(&self, error: &dyn std::fmt::Display) {
        tracing::warn!(
            error = %error,
            "Cannot record a finished queue job; after a crash it may run again"
        );
    }
}
