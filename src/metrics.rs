//! The Prometheus metrics of a running exim-pilot process.
//!
//! Long-running subcommands create one [`Metrics`], update it as they
//! work, and serve it at `/metrics` (see the api crate). Labels are only
//! the log kind (`main`, `reject`, `panic`), never values from the logs,
//! so the number of series stays fixed.

use exim_pilot_ingest::Stats;
use exim_pilot_processor::pipeline::PipelineCounts;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric of the standalone pipeline.
pub struct Metrics {
    /// The registry they are registered in.
    pub registry: Registry,
    lines_read: IntCounterVec,
    bytes_behind: IntGaugeVec,
    rotations: IntCounterVec,
    records: IntCounter,
    unparsed: IntCounter,
    rejects: IntCounter,
    lifecycle_updates: IntCounter,
    commit_seconds: Histogram,
    last_commit: IntGauge,
    /// Values already counted, to turn cumulative snapshots into increments.
    seen_counts: PipelineCounts,
    seen_lines: Vec<(String, u64, u64)>,
}

/// Why metrics could not be set up.
pub type MetricsError = prometheus::Error;

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
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
        registry.register(Box::new(lines_read.clone()))?;
        registry.register(Box::new(bytes_behind.clone()))?;
        registry.register(Box::new(rotations.clone()))?;
        registry.register(Box::new(records.clone()))?;
        registry.register(Box::new(unparsed.clone()))?;
        registry.register(Box::new(rejects.clone()))?;
        registry.register(Box::new(lifecycle_updates.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(last_commit.clone()))?;
        Ok(Metrics {
            registry,
            lines_read,
            bytes_behind,
            rotations,
            records,
            unparsed,
            rejects,
            lifecycle_updates,
            commit_seconds,
            last_commit,
            seen_counts: PipelineCounts::default(),
            seen_lines: Vec::new(),
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
        for s in stats {
            let log = s.log.as_str();
            self.bytes_behind
                .with_label_values(&[log])
                .set(s.bytes_behind as i64);
            let key = s.path.display().to_string();
            let (lines, rotations) = match self.seen_lines.iter_mut().find(|(p, _, _)| *p == key) {
                Some(entry) => entry_delta(entry, &s.counters),
                None => {
                    self.seen_lines.push((
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
