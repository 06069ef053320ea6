//! The processor: from raw Exim log records to events and lifecycles.
//!
//! Records come from the ingest crate (or a file read by the CLI). The
//! [`parse`] module turns each one into a typed
//! [`Event`](exim_pilot_schema::Event); [`correlate`] groups events into
//! message lifecycles and [`classify`] names the reason of every failure.
//! [`pipeline`] chains them for a batch of records and produces what a
//! store writes. With the `kafka` feature, [`fleet`] runs the pipeline as a
//! Kafka consumer group: the processor of fleet mode.

pub mod classify;
pub mod correlate;
pub mod parse;
pub mod pipeline;

#[cfg(feature = "kafka")]
pub mod fleet;
