//! The queue node: watches this host's Exim queue and acts on it.
//!
//! Input: Exim's own command line, run without a shell. Output:
//! [`QueueSnapshot`](exim_pilot_schema::queue::QueueSnapshot)s every few
//! seconds, and one
//! [`QueueActionResult`](exim_pilot_schema::queue::QueueActionResult) per
//! message of each [`QueueJob`](exim_pilot_schema::queue::QueueJob) run.
//! In `exim-pilot standalone` the snapshots go to the embedded store; in
//! fleet mode they are published to Kafka, and jobs come back from it.
//!
//! How the parts fit:
//!
//! - [`listing`] reads the text of `exim -bp` into messages, never losing
//!   one, and says which lines it could not read.
//! - [`exim`] runs Exim: [`Exim::list`], [`Exim::count`], [`Exim::act`],
//!   [`Exim::view`] and [`Exim::run_job`], each one process with a time
//!   limit and bounded output, message ids checked before anything runs.
//! - [`snapshot`]'s [`Snapshotter`] lists the queue at an interval and
//!   sends the snapshots into a channel, riding out failures.
//! - [`metrics`]'s [`QueueMetrics`] are what the node counts, next to what
//!   it logs.
//! - `process` (internal) runs one command: no shell, no input, killed
//!   with everything it started when out of time.
//! - `fleet` (cargo feature `kafka`) is the node's Kafka side in fleet
//!   mode: its `QueueNode` publishes the snapshots and serves the jobs and
//!   view requests of the command topic; `control` (same feature) is the
//!   other end, for the API: `KafkaQueueControl` publishes jobs and view
//!   requests and waits for the replies.
//!
//! Wiring it up:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use exim_pilot_ingest::queue::{Exim, EximConfig, QueueMetrics, Snapshotter};
//!
//! let registry = prometheus::Registry::new();
//! let exim = Exim::new("mx1.example.com", EximConfig::default())
//!     .with_metrics(QueueMetrics::new(&registry)?);
//! let (sender, mut snapshots) = tokio::sync::mpsc::channel(4);
//! let snapshotter = Snapshotter::new(Arc::new(exim), std::time::Duration::from_secs(30));
//! tokio::spawn(snapshotter.run(sender, std::future::pending()));
//! while let Some(snapshot) = snapshots.recv().await {
//!     println!("{} messages on the queue", snapshot.messages.len());
//! }
//! # Ok(()) }
//! ```
//!
//! Snapshots come from `exim -bp` and never from reading the spool
//! directly: Exim knows its spool layout and its locking, and exim-pilot
//! needs no more access than an Exim administrator's. The listing carries
//! what the snapshot needs; headers, logs and bodies are read one message
//! at a time on request ([`Exim::view`]).

#[cfg(feature = "kafka")]
pub mod control;
pub mod error;
pub mod exim;
#[cfg(feature = "kafka")]
pub mod fleet;
pub mod listing;
pub mod metrics;
mod process;
pub mod snapshot;

pub use error::EximError;
pub use exim::{Exim, EximConfig, MessageText, ACTION_OUTPUT_LIMIT};
pub use listing::{parse_bp, Listing, ListingProblem};
pub use metrics::{MetricsError, QueueMetrics};
pub use snapshot::{Snapshotter, DEFAULT_INTERVAL};
