//! Counters and figures a follower exposes for metrics.
//!
//! The crate only counts; turning the figures into Prometheus metrics is
//! the binary's job. Every event worth a log line is emitted from
//! the crate's `events` module, next to the counter it bumps, so logs and figures
//! cannot drift apart.

use serde::Serialize;

/// Running totals of one follower. All counters only grow.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Bytes read from log files (decompressed bytes for gzip files).
    pub bytes_read: u64,
    /// Lines read, a final line without its newline included.
    pub lines_read: u64,
    /// Records handed to the consumer.
    pub records_emitted: u64,
    /// Records the consumer acknowledged.
    pub records_acked: u64,
    /// Lines longer than the record limit, cut into pieces.
    pub oversized_lines: u64,
    /// Final lines emitted without their newline because their file ended.
    pub unterminated_lines: u64,
    /// Rename rotations seen (a new file at the path).
    pub rotations: u64,
    /// Truncations seen (copytruncate rotation or a file emptied in place).
    pub truncations: u64,
    /// Checkpoints written.
    pub checkpoints_written: u64,
    /// Checkpoint writes that failed.
    pub checkpoint_errors: u64,
}

/// A snapshot of a follower's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// The followed path.
    pub path: std::path::PathBuf,
    /// Which log it is.
    pub log: exim_pilot_schema::record::LogFile,
    /// Totals since the follower started.
    pub counters: Counters,
    /// Bytes on disk not read yet: the followed file's size minus the read
    /// offset, plus what is left of rotated files still to be drained
    /// (compressed bytes for gzip files).
    pub bytes_behind: u64,
    /// Bytes read at the end of the followed file that are no line yet
    /// (no newline after them): a line Exim is still writing, read as a
    /// record once it is complete.
    pub unfinished_line_bytes: u64,
    /// Records read and waiting to be pulled.
    pub records_ready: usize,
    /// Batches handed out and not yet acknowledged.
    pub batches_unacked: usize,
}
