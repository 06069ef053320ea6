//! The processor: from raw Exim log records to events and lifecycles.
//!
//! Records come from the ingest crate (or a file read by the CLI). The
//! [`parse`] module turns each one into a typed
//! [`Event`](exim_pilot_schema::Event); the other modules build on those
//! events.

pub mod classify;
pub mod correlate;
pub mod parse;
