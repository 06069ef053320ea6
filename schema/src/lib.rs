//! The shared data model of exim-pilot.
//!
//! Data flows through exim-pilot in four shapes, all defined here so that
//! every crate speaks the same language:
//!
//! 1. [`RawRecord`] (module [`record`]): one log record as the tailer read
//!    it, with its host, file and offset. This is what travels through Kafka
//!    in fleet mode and what replay starts from.
//! 2. [`Event`] (module [`event`]): what the processor's parser makes of one
//!    record: an arrival, a delivery, a deferral, a rejection...
//! 3. [`Lifecycle`] (module [`lifecycle`]): what the correlator makes of all
//!    events of one message: its arrival, each recipient's outcome and every
//!    delivery attempt.
//! 4. [`Report`] (module [`report`]): what stores and `exim-pilot report`
//!    make of many lifecycles and rejections: totals, rates, delays and
//!    breakdowns, aggregated through mergeable hourly rollup cells.
//!
//! In fleet mode raw records cross Kafka in batches ([`wire`]). Every
//! reader of logs joins the parts of a syslog line Exim split the same
//! way ([`split`]).
//!
//! Beside the logs, each host's queue: [`QueueSnapshot`] lists what it
//! holds, [`QueueJob`] is an operator's action on it (module [`queue`]).
//! In fleet mode they cross Kafka as queue and command records
//! ([`queue_wire`]), whose readers commit offsets as [`commit`] says.
//!
//! Around them: [`MessageId`] and [`LogTime`], the two values every record
//! starts with, and [`ReasonClass`], the classification of every failure.

pub mod commit;
pub mod csv;
pub mod event;
pub mod id;
pub mod lifecycle;
pub mod queue;
pub mod queue_wire;
pub mod reason;
pub mod record;
pub mod report;
pub mod split;
pub mod time;
pub mod wire;

pub use event::{Event, EventKind};
pub use id::MessageId;
pub use lifecycle::{Attempt, AttemptResult, Lifecycle, MessageState, Origin, Outcome, Recipient};
pub use queue::{QueueAction, QueueActionResult, QueueJob, QueueSnapshot, QueuedMessage};
pub use reason::ReasonClass;
pub use record::{LogFile, RawRecord, RecordOrigin};
pub use report::{RejectRecord, Report};
pub use time::{LogTime, Zone};
