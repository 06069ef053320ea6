//! The log tailer: follows Exim's log files and hands out complete records.
//!
//! Input: Exim's `mainlog`, `rejectlog` and `paniclog` on the local disk,
//! with their rotated copies (`mainlog.1`, `mainlog.2.gz`, ...). Output:
//! [`RawRecord`](exim_pilot_schema::record::RawRecord)s, each one log entry
//! (a line, or a line with its continuation lines) labelled with host, log
//! kind, file identity and byte offset, for the processor to parse. In
//! `exim-pilot standalone` the records go straight to the parser in the
//! same process; in fleet mode `exim-pilot tail` publishes them to Kafka.
//!
//! How the parts fit:
//!
//! - `source` (internal) reads one file and cuts lines into records;
//!   `events` (internal) writes every log event next to its counter.
//! - [`identity`] names a file by device, inode and a fingerprint of its
//!   first bytes, which survives renames and catches recycled inodes.
//! - [`siblings`] finds a log's rotated copies and expands wildcard paths.
//! - [`follower`] follows one log path through rotations, with back-pressure
//!   and acknowledgements; [`checkpoint`] saves where it stands.
//! - [`tailer`] runs the followers of one host together.
//! - [`import`] reads a list of finished files once, for backfills.
//! - `kafka` (cargo feature `kafka`, on in the binary) publishes a
//!   tailer's records to Kafka for `exim-pilot tail`.
//! - [`queue`] watches the host's Exim queue rather than its logs: it
//!   lists it with `exim -bp` at an interval into snapshots, and runs
//!   operators' queue actions (`exim -M`, `-Mf`, `-Mt`, `-Mrm`, `-Mg`) and
//!   message views, each through Exim's own command line.
//!
//! A consumer's loop:
//!
//! ```no_run
//! # fn store(_: &[exim_pilot_schema::record::RawRecord]) {}
//! use exim_pilot_ingest::{LogSpec, Tailer, TailerConfig};
//! use std::time::Duration;
//!
//! let mut tailer = Tailer::new(TailerConfig {
//!     logs: vec![LogSpec::new("/var/log/exim4/mainlog")],
//!     checkpoint_dir: Some("/var/lib/exim-pilot/checkpoints".into()),
//!     ..TailerConfig::default()
//! })?;
//! loop {
//!     if let Some(batch) = tailer.next_batch(5_000, Duration::from_secs(1))? {
//!         store(&batch.records);
//!         // Only now may the checkpoint move past these records.
//!         tailer.ack(&batch.ack())?;
//!     }
//! }
//! # Ok::<(), exim_pilot_ingest::IngestError>(())
//! ```
//!
//! In fleet mode the consumer is `kafka::Publisher`. Records flow:
//! files → [`Follower`]s (records, each with host, log, `file_id`, offset)
//! → [`Tailer::next_batch`] → the publisher packs consecutive records of
//! one file into a [`RecordBatch`](exim_pilot_schema::wire::RecordBatch)
//! (up to 256 KiB or 1000 records, or what 5 ms of waiting gathers) → one
//! Kafka record per batch, keyed by the host name, through an idempotent
//! producer (`acks=all`) → once the broker has acknowledged every Kafka
//! record holding a tailer batch's records, the batch is acknowledged and
//! the checkpoint moves. Keying by host puts all of one mail server's
//! records in one partition, in the order they were read, so one processor
//! sees every line of each of its messages in order, lines without a
//! message id included; one server's log rate is far below what one
//! partition takes. The `kafka` module says more, and how outages are
//! ridden out without reading further than a bounded amount.
//!
//! Delivery is at least once: after a crash the records after the last
//! acknowledged checkpoint are read again, with the same host, `file_id`
//! and offset as before, which is the key the stores de-duplicate on.

pub mod ack;
pub mod checkpoint;
pub mod error;
mod events;
pub mod follower;
pub mod identity;
pub mod import;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod queue;
pub mod siblings;
mod source;
pub mod stats;
pub mod tailer;

pub use ack::{Ack, Acker, Batch};
pub use checkpoint::{Checkpoint, FilePosition};
pub use error::{IngestError, Result};
pub use follower::{FollowConfig, Follower};
pub use identity::{FileIdentity, Fingerprint};
pub use import::{order_for_import, Importer};
pub use stats::{Counters, Stats};
pub use tailer::{local_hostname, LogSpec, Tailer, TailerConfig};
