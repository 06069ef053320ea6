//! Storage for exim-pilot: the [`Store`] interface and its embedded SQLite
//! implementation.
//!
//! The processor hands a store what it made of the logs: raw records,
//! message lifecycles and SMTP rejections, together with the tailer's
//! checkpoints and its own state, in one [`Batch`]. The CLI, the API and
//! the standalone pipeline read back through the same interface: one
//! message's lifecycle and raw lines, searches, full-text search over the
//! logs, deliverability reports, per-server summaries. Beside the logs, a
//! store keeps each mail server's queue as its node lists it (snapshots),
//! and the queue jobs operators ask for with their results. Stores are
//! shared as `Arc<dyn Store>`.
//!
//! - [`Store`] (this file): the interface every backend implements.
//! - [`types`]: the values that cross it; [`queue`]: those of queues.
//! - [`live`]: feeds of what other processes store, for live
//!   subscriptions; [`login`]: the login throttle's shared ledger.
//! - [`sqlite`]: [`SqliteStore`], the embedded backend of standalone mode.
//! - [`clickhouse`]: [`ClickHouseStore`], the shared backend of fleet mode.
//! - `conformance` (feature `testing`): behaviour tests written once,
//!   run against every backend.
//!
//! # Rollups
//!
//! Reports come from rollup cells (see `exim_pilot_schema::report`): per
//! hour and per day, per mail server, per dimension (total, destination
//! domain, sender, sender domain, remote host, transport, client, reason,
//! rejection reason, rejection client) and key, each holding every counter,
//! a delay histogram and sample texts. Every committed lifecycle moves the
//! cells from its old numbers to its new ones (subtract, then add), so the
//! cells always equal what aggregating the stored lifecycles would give; the
//! conformance tests check exactly that. A report reads the day cells of
//! the whole days in its range and the hour cells of the hours at its
//! edges, so its cost grows with the number of distinct keys per day (chiefly
//! senders), not with the number of messages. The cells of one dimension
//! (every destination domain over a month) are one range of the key.
//!
//! # Measured
//!
//! `benches/store.rs` on the project's 2-core machine (shared with other
//! builds, so the figures are upper bounds), 1,000,000 messages over 90
//! days, two servers, 500 destination domains, 5,000 senders, two raw
//! records per message, a database of 2.7 GB:
//!
//! - writing, in batches of 1,000 messages with their raw records and
//!   full-text index: about 2,800 messages per second;
//! - the full report over 30 days: 400 ms (p99 440 ms); over 90 days:
//!   1.2 s; one server over 30 days: 230 ms;
//! - the cells of every destination domain per day over 30 days (what a
//!   deliverability query by domain reads): 100 ms (p99 110 ms);
//! - a message trace (lifecycle and raw records by server and id): p50
//!   0.12 ms, p99 0.34 ms;
//! - retention dropping 90 days of raw records at once (2 million rows with
//!   their full-text entries): 90 s, in chunks of 5,000 with the writer free
//!   between them. Run hourly, as standalone mode does, it deletes an
//!   hour's worth at a time.
//!
//! With a distinct sender on nearly every message (VERP, for instance) the
//! sender cells grow with the messages: the same store with 300,000
//! senders a month took 1.7 s for the full 30-day report, while the
//! by-domain cells stayed at about 200 ms.

//! # ClickHouse
//!
//! Fleet mode keeps everything in one ClickHouse database (module
//! [`clickhouse`], where the tables, idempotence and costs are described
//! in full). `ClickHouseStore::connect(url, database)` creates and
//! migrates the database, `ClickHouseStore::open` reads an existing one,
//! and `exim-pilot migrate --clickhouse URL` runs the migrations alone.
//! It passes the same conformance suite as SQLite, against a real
//! ClickHouse 18.16 server, and every statement it sends is replayed on a
//! current ClickHouse engine by a test. In short:
//!
//! - tables per kind of data (`events`, `lifecycles`, `attempts`,
//!   `rejects`, `unparsed`, `audit`, `users`, `blobs`, report cells,
//!   queue snapshots, messages, jobs and results), partitioned by day;
//!   retention drops whole days;
//! - rows named by their origin or (host, message id) and a version, in
//!   `ReplacingMergeTree`s read with `FINAL`: a batch written twice
//!   changes nothing;
//! - reports sum per-message cell rows (exactly SQLite's numbers, at a
//!   cost that grows with the messages in the range); hourly record and
//!   rejection counts for dashboards come from materialized views that
//!   count row identities with `uniqExact`;
//! - full-text search is a case-insensitive substring scan of the raw
//!   lines of the range asked.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use exim_pilot_schema::queue::{QueueActionResult, QueueJob, QueueSnapshot};
use exim_pilot_schema::report::{ReportCells, ReportOptions};
use exim_pilot_schema::{Lifecycle, MessageId, RejectRecord, Report};

pub mod clickhouse;
mod cursor;
pub mod error;
pub mod live;
pub mod login;
mod plan;
pub mod queue;
pub mod sqlite;
pub mod types;

#[cfg(any(test, feature = "testing"))]
pub mod conformance;

pub use crate::clickhouse::ClickHouseStore;
pub use error::{Result, StoreError};
pub use live::{LiveFeed, LivePage, MAX_LIVE_PAGE};
pub use login::{LoginMark, LoginMarkKind, LOGIN_MARK_DAYS, MAX_MARKS_PER_KEY};
pub use queue::{
    LastDeferral, QueueEntry, QueueFilter, QueueHealth, QueueHistoryQuery, QueueJobCounts,
    QueueJobFilter, QueueJobSummary, QueuePoint, RecipientScope, MAX_HISTORY_POINTS,
};
pub use sqlite::SqliteStore;
pub use types::{check_search_text, search_words, MAX_SEARCH_BYTES, MAX_SEARCH_WORDS};
pub use types::{
    AuditEntry, AuditFilter, Batch, BatchSummary, Blob, Bucket, CellQuery, HostSummary, LineQuery,
    MessageFilter, Page, PageRequest, RecipientCount, RecipientQuery, RejectFilter, Retention,
    RetentionSummary, Role, Session, StoredRecord, User, MAX_PAGE, MAX_TOP_RECIPIENTS,
};

/// A place where exim-pilot keeps what it learned from the logs.
///
/// Every write is idempotent: records and rejections are named by their
/// origin (host, file identity, offset) and stored once; a lifecycle is
/// named by (host, message id) and replaced by its newer version, with the
/// rollups moved from its old numbers to its new ones. Writing the same
/// batch twice changes nothing.
#[async_trait]
pub trait Store: Send + Sync {
    /// Writes a batch in one transaction: all of it or none of it.
    async fn commit_batch(&self, batch: Batch) -> Result<BatchSummary>;

    /// Saves one named blob on its own. Prefer putting it in the batch of
    /// the data it describes.
    async fn save_blob(&self, name: &str, data: &[u8]) -> Result<()> {
        let batch = Batch {
            blobs: vec![types::Blob {
                name: name.to_string(),
                data: data.to_vec(),
            }],
            ..Batch::default()
        };
        self.commit_batch(batch).await.map(|_| ())
    }

    /// A named blob, if saved.
    async fn load_blob(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// The lifecycle of one message on one server.
    async fn lifecycle(&self, host: &str, id: MessageId) -> Result<Option<Lifecycle>>;

    /// Every lifecycle with this message id, on any server (ids are unique
    /// per server, and a relayed message keeps no id across servers, but
    /// two servers may produce the same id).
    async fn lifecycles_by_id(&self, id: MessageId) -> Result<Vec<Lifecycle>>;

    /// The raw records of one message, in log order.
    async fn message_records(&self, host: &str, id: MessageId) -> Result<Vec<StoredRecord>>;

    /// Lifecycles matching a filter, newest first, a page at a time.
    async fn search(&self, filter: &MessageFilter, page: &PageRequest) -> Result<Page<Lifecycle>>;

    /// Every lifecycle to or from an address, newest first.
    async fn lifecycles_by_address(
        &self,
        address: &str,
        page: &PageRequest,
    ) -> Result<Page<Lifecycle>> {
        let filter = MessageFilter {
            address: Some(address.to_string()),
            ..MessageFilter::default()
        };
        self.search(&filter, page).await
    }

    /// SMTP rejections matching a filter, newest first.
    async fn rejects(
        &self,
        filter: &RejectFilter,
        page: &PageRequest,
    ) -> Result<Page<RejectRecord>>;

    /// The deliverability report over a range, from the rollups.
    async fn report(&self, options: &ReportOptions) -> Result<Report>;

    /// Rollup cells over a range, per hour or day.
    async fn cells(&self, query: &CellQuery) -> Result<ReportCells>;

    /// Whether a long range is read faster as day cells for its whole
    /// days and hour cells for the partial days at its ends (three reads)
    /// than as hour cells alone (one read): true where a read costs by
    /// the cells it reads and day cells are summed per day (both stores
    /// here), false for a store where each read costs a scan whatever its
    /// range.
    fn splits_ranges_into_days(&self) -> bool {
        true
    }

    /// Final addresses of the messages of a range, most messages first
    /// (then by address), with what became of them.
    async fn top_recipients(&self, query: &RecipientQuery) -> Result<Vec<RecipientCount>>;

    /// Raw lines of any log matching a full-text query, most recently
    /// stored first.
    async fn search_lines(&self, query: &LineQuery) -> Result<Vec<StoredRecord>>;

    /// Every mail server seen, by name.
    async fn hosts(&self) -> Result<Vec<HostSummary>>;

    /// Appends an entry to the audit trail.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<()>;

    /// Audit entries matching a filter, newest first.
    async fn audit_log(&self, filter: &AuditFilter, page: &PageRequest)
        -> Result<Page<AuditEntry>>;

    /// Adds a user; fails with [`StoreError::Exists`] when the name is
    /// taken.
    async fn create_user(&self, user: &User) -> Result<()>;

    /// Replaces a user's stored fields; fails with
    /// [`StoreError::NotFound`] when there is no such user.
    async fn update_user(&self, user: &User) -> Result<()>;

    /// One user by name.
    async fn user(&self, name: &str) -> Result<Option<User>>;

    /// Every user, by name.
    async fn users(&self) -> Result<Vec<User>>;

    /// Saves a session, new or changed (a refreshed token, a revocation).
    async fn save_session(&self, session: &Session) -> Result<()>;

    /// One session by id.
    async fn session(&self, id: &str) -> Result<Option<Session>>;

    /// Revokes every live session of a user as of `at`; returns how many.
    async fn revoke_sessions(&self, user: &str, at: DateTime<Utc>) -> Result<u64>;

    /// Keeps a host's queue snapshot: its totals as history, its messages
    /// as the host's current queue (see [`queue`]). Saving a snapshot
    /// again changes nothing; one older than the host's current snapshot
    /// adds to the history only.
    async fn save_queue_snapshot(&self, snapshot: &QueueSnapshot) -> Result<()>;

    /// Messages of the hosts' current queues matching a filter, each with
    /// the latest deferral of its lifecycle: oldest first (unknown ages
    /// last), then by host and id, a page at a time.
    async fn queue_messages(
        &self,
        filter: &QueueFilter,
        page: &PageRequest,
    ) -> Result<Page<QueueEntry>>;

    /// The health of each host's queue (only `host`'s when given), from
    /// its latest snapshot, by host name.
    async fn queue_health(&self, host: Option<&str>) -> Result<Vec<QueueHealth>>;

    /// Queue totals over a range, oldest first, per snapshot or per
    /// bucket.
    async fn queue_history(&self, query: &QueueHistoryQuery) -> Result<Vec<QueuePoint>>;

    /// Saves an operator's queue job; saving it again changes nothing.
    async fn save_queue_job(&self, job: &QueueJob) -> Result<()>;

    /// Saves results of queue jobs. A result is named by its job and
    /// message: saved again, it counts once, and it replaces the stored one
    /// only when it finished later.
    async fn save_queue_results(&self, results: &[QueueActionResult]) -> Result<()>;

    /// One job with its results so far, by finishing time.
    async fn queue_job(&self, job_id: &str) -> Result<Option<(QueueJob, Vec<QueueActionResult>)>>;

    /// Jobs matching a filter with the counts of their results, newest
    /// first.
    async fn queue_jobs(
        &self,
        filter: &QueueJobFilter,
        page: &PageRequest,
    ) -> Result<Page<QueueJobSummary>>;

    /// Deletes what is older than the policy allows, as of `now`.
    async fn apply_retention(
        &self,
        policy: &Retention,
        now: DateTime<Utc>,
    ) -> Result<RetentionSummary>;

    /// A feed of the raw records and lifecycle changes stored from now
    /// on, by this process or any other (see [`live`]).
    async fn live_feed(&self) -> Result<Box<dyn LiveFeed>>;

    /// Appends marks to the login throttle's ledger (see [`login`]).
    async fn append_login_marks(&self, marks: &[LoginMark]) -> Result<()>;

    /// The newest marks of each of `keys` at or after `since`: at most
    /// `per_key` of each (capped at [`MAX_MARKS_PER_KEY`]), each key's
    /// newest first.
    async fn login_marks(
        &self,
        keys: &[String],
        since: DateTime<Utc>,
        per_key: usize,
    ) -> Result<Vec<LoginMark>>;
}
