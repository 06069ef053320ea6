//! The Prometheus metrics of a running exim-pilot process.
//!
//! Long-running subcommands create one [`Metrics`], update it as they
//! work, and serve it at `/metrics` (see the api crate). Labels are only
//! the log kind (`main`, `reject`, `panic`), never values from the logs,
//! so the number of series stays fixed.

use std::sync::atomic::Ordering;

use exim_pilot_ingest::kafka::PublishStats;
use exim_pilot_ingest::Stats;
use exim_pilot_processor::pipeline::PipelineCounts;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric of the standalone pipeline.
pub struct Metrics {
    /// The registry they are registered in.
    pub registry: Registry,
    logs: LogMetrics,
    records: IntCounter,
    unparsed: IntCounter,
    rejects: IntCounter,
    lifecycle_updates: IntCounter,
    commit_seconds: Histogram,
    last_commit: IntGauge,
    /// Values already counted, to turn cumulative snapshots into increments.
    seen_counts: PipelineCounts,
}

/// The tailer's metrics, per log kind.
struct LogMetrics {
    lines_read: IntCounterVec,
    bytes_behind: IntGaugeVec,
    rotations: IntCounterVec,
    /// Per followed path: lines and rotations already counted.
    seen: Vec<(String, u64, u64)>,
}

/// Why metrics could not be set up.
pub type MetricsError = prometheus::Error;

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let logs = LogMetrics::register(&registry)?;
        let records = IntCounter::new(
            "exim_pilot_records_processed_total",
            "Records parsed and correlated.",
        )?;
        let unparsed = IntCounter::new(
            "exim_pilot_records_unparsed_total",
            "Records the parser could not classify (kept whole in the store).",
        )?;
        let rejects = IntCounter::new(
            "exim_pilot_rejects_total",
            "SMTP rejections and failed authentications found.",
        )?;
        let lifecycle_updates = IntCounter::new(
            "exim_pilot_lifecycle_updates_total",
            "Lifecycle versions written to the store.",
        )?;
        let commit_seconds = Histogram::with_opts(HistogramOpts::new(
            "exim_pilot_store_commit_seconds",
            "Time to commit one batch to the store.",
        ))?;
        let last_commit = IntGauge::new(
            "exim_pilot_store_last_commit_timestamp_seconds",
            "When the last batch was committed, in seconds since the epoch.",
        )?;
        registry.register(Box::new(records.clone()))?;
        registry.register(Box::new(unparsed.clone()))?;
        registry.register(Box::new(rejects.clone()))?;
        registry.register(Box::new(lifecycle_updates.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(last_commit.clone()))?;
        Ok(Metrics {
            registry,
            logs,
            records,
            unparsed,
            rejects,
            lifecycle_updates,
            commit_seconds,
            last_commit,
            seen_counts: PipelineCounts::default(),
        })
    }

    /// Records one store commit and what the pipeline has done so far.
    pub fn committed(&mut self, seconds: f64, counts: PipelineCounts) {
        self.commit_seconds.observe(seconds);
        self.last_commit.set(chrono::Utc::now().timestamp());
        let seen = self.seen_counts;
        self.records
            .inc_by(counts.records.saturating_sub(seen.records));
        self.unparsed
            .inc_by(counts.unparsed.saturating_sub(seen.unparsed));
        self.rejects
            .inc_by(counts.rejects.saturating_sub(seen.rejects));
        self.lifecycle_updates.inc_by(
            counts
                .lifecycle_updates
                .saturating_sub(seen.lifecycle_updates),
        );
        self.seen_counts = counts;
    }

    /// Takes the tailer's per-log statistics.
    pub fn tailer(&mut self, stats: &[Stats]) {
        self.logs.update(stats);
    }
}

impl LogMetrics {
    fn register(registry: &Registry) -> Result<LogMetrics, MetricsError> {
        let log = &["log"];
        let lines_read = IntCounterVec::new(
            Opts::new(
                "exim_pilot_ingest_lines_read_total",
                "Log lines read, per log.",
            ),
            log,
        )?;
        let bytes_behind = IntGaugeVec::new(
            Opts::new(
                "exim_pilot_ingest_bytes_behind",
                "Bytes written to a log and not read yet, per log.",
            ),
            log,
        )?;
        let rotations = IntCounterVec::new(
            Opts::new(
                "exim_pilot_ingest_rotations_total",
                "Log rotations followed, per log.",
            ),
            log,
        )?;
        registry.register(Box::new(lines_read.clone()))?;
        registry.register(Box::new(bytes_behind.clone()))?;
        registry.register(Box::new(rotations.clone()))?;
        Ok(LogMetrics {
            lines_read,
            bytes_behind,
            rotations,
            seen: Vec::new(),
        })
    }

    fn update(&mut self, stats: &[Stats]) {
        for s in stats {
            let log = s.log.as_str();
            self.bytes_behind
                .with_label_values(&[log])
                .set(s.bytes_behind as i64);
            let key = s.path.display().to_string();
            let (lines, rotations) = match self.seen.iter_mut().find(|(p, _, _)| *p == key) {
                Some(entry) => entry_delta(entry, &s.counters),
                None => {
                    self.seen.push((
                        key,
                        s.counters.lines_read,
                        s.counters.rotations + s.counters.truncations,
                    ));
                    (
                        s.counters.lines_read,
                        s.counters.rotations + s.counters.truncations,
                    )
                }
            };
            self.lines_read.with_label_values(&[log]).inc_by(lines);
            self.rotations.with_label_values(&[log]).inc_by(rotations);
        }
    }
}

/// Every metric of `exim-pilot tail`: the tailer's, and the publisher's.
pub struct TailMetrics {
    /// The registry they are registered in.
    pub registry: Registry,
    logs: LogMetrics,
    records_published: IntCounter,
    kafka_records_published: IntCounter,
    bytes_published: IntCounter,
    publish_errors: IntCounter,
    client_errors: IntCounter,
    in_flight_bytes: IntGauge,
    in_flight_kafka_records: IntGauge,
    /// Publisher totals already counted.
    seen: [u64; 5],
}

impl TailMetrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Result<TailMetrics, MetricsError> {
        let registry = Registry::new();
        let logs = LogMetrics::register(&registry)?;
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let records_published = counter(
            "exim_pilot_tail_records_published_total",
            "Log records the broker acknowledged.",
        )?;
        let kafka_records_published = counter(
            "exim_pilot_tail_kafka_records_published_total",
            "Kafka records (batches of log records of one file) the broker acknowledged.",
        )?;
        let bytes_published = counter(
            "exim_pilot_tail_bytes_published_total",
            "Encoded bytes the broker acknowledged.",
        )?;
        let publish_errors = counter(
            "exim_pilot_tail_publish_errors_total",
            "Kafka records reported failed (each is sent again).",
        )?;
        let client_errors = counter(
            "exim_pilot_tail_kafka_client_errors_total",
            "Errors of the Kafka client outside any one record, such as an unreachable broker.",
        )?;
        let in_flight_bytes = IntGauge::new(
            "exim_pilot_tail_in_flight_bytes",
            "Bytes read and not yet acknowledged by the broker.",
        )?;
        let in_flight_kafka_records = IntGauge::new(
            "exim_pilot_tail_in_flight_kafka_records",
            "Kafka records sent or waiting to be sent, not yet acknowledged by the broker.",
        )?;
        registry.register(Box::new(in_flight_bytes.clone()))?;
        registry.register(Box::new(in_flight_kafka_records.clone()))?;
        Ok(TailMetrics {
            registry,
            logs,
            records_published,
            kafka_records_published,
            bytes_published,
            publish_errors,
            client_errors,
            in_flight_bytes,
            in_flight_kafka_records,
            seen: [0; 5],
        })
    }

    /// Takes the tailer's and the publisher's figures.
    pub fn update(&mut self, stats: &[Stats], published: &PublishStats) {
        self.logs.update(stats);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let now = [
            load(&published.records_published),
            load(&published.batches_published),
            load(&published.bytes_published),
            load(&published.publish_errors),
            load(&published.client_errors),
        ];
        let counters = [
            &self.records_published,
            &self.kafka_records_published,
            &self.bytes_published,
            &self.publish_errors,
            &self.client_errors,
        ];
        for ((counter, seen), now) in counters.iter().zip(self.seen.iter_mut()).zip(now) {
            counter.inc_by(now.saturating_sub(*seen));
            *seen = now;
        }
        self.in_flight_bytes
            .set(load(&published.in_flight_bytes) as i64);
        self.in_flight_kafka_records
            .set(load(&published.in_flight_batches) as i64);
    }
}

/// The increase since the last snapshot, remembering the new one.
fn entry_delta(
    entry: &mut (String, u64, u64),
    counters: &exim_pilot_ingest::Counters,
) -> (u64, u64) {
    let rotations = counters.rotations + counters.truncations;
    let delta = (
        counters.lines_read.saturating_sub(entry.1),
        rotations.saturating_sub(entry.2),
    );
    entry.1 = counters.lines_read;
    entry.2 = rotations;
    delta
}
