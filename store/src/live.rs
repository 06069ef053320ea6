//! Live feeds: what is stored, as it is stored, for processes that did
//! not write it.
//!
//! The process that runs the pipeline knows what it commits. Any other
//! process over the same store (`exim-pilot serve` beside the processors
//! of a fleet, or beside `standalone` and `import` on one machine) learns
//! it from a [`LiveFeed`]: [`crate::Store::live_feed`] opens one at the
//! current end of the store, and each [`LiveFeed::next`] returns the raw
//! records stored and the lifecycles changed since, a bounded page at a
//! time. Each backend follows a position that only grows, read through
//! an index, so a poll costs what it returns, not the size of the store:
//!
//! - SQLite numbers every raw record and every change of a lifecycle from
//!   sequences kept in the database, in the writing transaction; one
//!   writer commits at a time, so what a reader sees is always every
//!   number up to some point, and a feed never misses or repeats a row.
//! - ClickHouse has no sequences nor transactions, and inserts of several
//!   processors become visible in any order; the feed follows the time
//!   the server stored each row, and looks back over a short window for
//!   rows that became visible late (see `clickhouse::live`).
//!
//! A lifecycle that changed several times between two polls is returned
//! once, as it now is (ClickHouse may return an intermediate version as
//! well); a record is returned once.

use async_trait::async_trait;

use exim_pilot_schema::Lifecycle;

use crate::error::Result;
use crate::types::StoredRecord;

/// The most a feed returns of each kind per call.
pub const MAX_LIVE_PAGE: usize = 10_000;

/// What was stored since the previous call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LivePage {
    /// Raw records stored.
    pub records: Vec<StoredRecord>,
    /// Lifecycles new or changed, as stored now.
    pub lifecycles: Vec<Lifecycle>,
    /// True when more is waiting: call again without waiting.
    pub more: bool,
}

impl LivePage {
    /// True when the page holds nothing.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.lifecycles.is_empty()
    }
}

/// A position in what a store holds, moved forward by reading.
#[async_trait]
pub trait LiveFeed: Send {
    /// What was stored since the previous call (since the feed was
    /// opened, the first time): at most `limit` records and `limit`
    /// lifecycles (capped at [`MAX_LIVE_PAGE`]), oldest first as far as
    /// the backend can tell.
    async fn next(&mut self, limit: usize) -> Result<LivePage>;

    /// Moves past everything stored so far without reading it: what a
    /// feed that nobody listens to does, so that a listener who comes
    /// later gets what is stored from then on, not a backlog.
    async fn skip(&mut self) -> Result<()>;
}

/// `limit` within 1..=[`MAX_LIVE_PAGE`].
pub(crate) fn page_size(limit: usize) -> usize {
    limit.clamp(1, MAX_LIVE_PAGE)
}
