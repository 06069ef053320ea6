//! The fleet processor: a Kafka consumer group in front of the
//! [`Pipeline`](crate::pipeline::Pipeline).
//!
//! In fleet mode every mail server runs a tailer that publishes its log
//! records to one topic (the raw topic): each Kafka record holds an
//! encoded [`RecordBatch`](exim_pilot_schema::wire::RecordBatch) of one
//! file of one server, keyed by the server's name, so all of a server's
//! records land in one partition, in order. Any number of processors join
//! one consumer group on that topic; Kafka spreads the partitions over
//! them. Each processor parses and correlates what it is given and writes
//! it to the shared store.
//!
//! - [`config`]: what a processor needs to know.
//! - `context`: the consumer's callbacks (rebalances, statistics).
//! - `decode`: Kafka records to raw records, or to undecodable records.
//! - `pending`: the batch waiting for the store, offered again unchanged
//!   until the store takes it.
//! - `saves`: partition states saved beside the loop.
//! - [`metrics`]: what a processor reports, in logs and in Prometheus.
//! - [`processor`]: the loop that ties them together.
//! - [`queue`]: beside the raw topic, the queue topic's consumer: queue
//!   snapshots (put together from their parts) and queue job results to
//!   a [`QueueSink`](queue::QueueSink).
//!
//! # One round of the loop
//!
//! Poll up to [`FleetConfig::batch_records`] log records, until no more
//! records wait (none comes within a few milliseconds), or for
//! [`FleetConfig::batch_wait`], whichever comes first: a round stores
//! what has arrived instead of waiting for more, and records that arrive
//! meanwhile make the next round, so rounds grow with the load. A round
//! that is not full is not stored before [`FleetConfig::batch_interval`]
//! has passed since the last one was: at a steady rate each table then
//! gets a few inserts a second, not one per handful of lines. Decode
//! each Kafka record and run the records of each partition through that
//! partition's own pipeline. Merge the partitions' output into one store
//! [`Batch`]. Commit it to the store, again and again with growing pauses
//! while the store fails.
//!
//! A partition's pipeline state (every message in flight) is saved when
//! [`FleetConfig::state_interval`] has passed since it was last saved:
//! the round takes a copy of it, and once the round's batch is stored, a
//! thread of its own serialises the copy and stores it while the next
//! rounds go on (serialising and writing it inside the round held up every
//! record behind it by a second and more). Only once the state is stored,
//! the Kafka offset just past the round's last record of that partition
//! is committed. Before the processor stops, every partition's state goes
//! with the last batch itself, and its offset is committed with it.
//!
//! A crash at any point therefore leaves the committed offsets at or
//! behind saved states, and a state is saved only after the records it
//! covers. The records after the committed offsets are read again after a
//! restart: those the restored state covers are skipped (it remembers the
//! last record applied per file), the others applied; the store keeps
//! records it already holds once and ignores lifecycles that did not
//! change, so no record is lost and none is counted twice. The interval
//! trades the cost of a save for some records read twice after a crash.
//!
//! # Where the correlator's state lives
//!
//! Messages in flight (received, not yet delivered) are the correlator's
//! state; a processor that takes over a partition needs it. It is saved in
//! the store, as a blob named after the topic and partition
//! ([`state_blob_name`]), in the same transaction as the data it
//! describes. The alternative, a compacted Kafka topic of states, would
//! need a second write that can succeed while the store write fails (or
//! the reverse), leaving the state ahead of or behind the data: the store
//! is the one place where both can be committed atomically, and it has to
//! be reachable anyway. The state is restored when a partition is first
//! processed after being assigned.
//!
//! # Rebalances
//!
//! Kafka calls the consumer back (inside a poll) when partitions are
//! assigned or revoked. A revoked partition's pipeline, its unprocessed
//! records and its part of a batch not yet stored are dropped: its next
//! owner restores the state this processor last stored and reads on from
//! the offset this processor last committed. A state save in flight is
//! waited for inside the callback, before the partitions go, so that it
//! cannot land over a state the next owner stores; its offsets are not
//! committed (the next owner reads those records again and skips them).
//! While the store fails, the processor keeps polling with its partitions
//! paused, so it stays in the group and learns of rebalances instead of
//! writing, much later, a batch for a partition that has moved on.
//!
//! # Undecodable records
//!
//! A Kafka record that is not a record batch this version reads (another
//! producer, a corrupt write, a newer format) is not skipped: it is stored
//! as a raw record of event kind [`UNDECODABLE`] with its bytes exactly as
//! they were, under the origin host `kafka:TOPIC/PARTITION`, file 0 and
//! its Kafka offset, which names it uniquely and says where it came from.
//!
//! # Measured
//!
//! `benches/fleet.rs` (root crate) on the project's 2-core machine, shared
//! with other builds: 200,000 generated mainlog records of two servers,
//! published as batches of 500, read by one processor into an empty
//! SQLite store in 12.8 s, about 15,600 records per second, in store
//! batches of 20,000 records; the SQLite commit takes most of the time.
//!
//! # Known limits
//!
//! A server's records must stay in one partition for its messages to be
//! correlated: adding partitions to the topic moves some servers to other
//! partitions, whose pipelines do not know their messages in flight; those
//! messages are then stored as fragments. A store write that succeeds
//! after the processor was excluded from the group without noticing (a
//! process frozen for longer than the session timeout) can still land once
//! after the partition's new owner wrote; the new owner's next state save
//! replaces the partition state, but lifecycles that batch does not touch
//! keep the older version.

pub mod config;
mod context;
mod decode;
pub mod metrics;
mod pending;
pub mod processor;
pub mod queue;
mod saves;

use exim_pilot_store::Batch;

pub use config::{Backoff, FleetConfig};
pub use decode::UNDECODABLE;
pub use metrics::FleetMetrics;
pub use processor::{reset_to_beginning, FleetError, Processor};

/// The name of the store blob that holds the pipeline state of one
/// partition of a topic.
pub fn state_blob_name(topic: &str, partition: i32) -> String {
    format!("fleet-state/{topic}/{partition}")
}

/// Appends `part` to `into`.
fn merge(into: &mut Batch, part: &Batch) {
    into.records.extend(part.records.iter().cloned());
    into.lifecycles.extend(part.lifecycles.iter().cloned());
    into.rejects.extend(part.rejects.iter().cloned());
    into.blobs.extend(part.blobs.iter().cloned());
}
