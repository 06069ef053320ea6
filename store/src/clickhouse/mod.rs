//! The fleet store: ClickHouse, shared by every processor and reader.
//!
//! [`ClickHouseStore`] talks to one database of a ClickHouse server over
//! HTTP, with the `clickhouse` crate: rows go in as RowBinary, values are
//! bound into the SQL text by the client (never as server-side
//! parameters), and answers come uncompressed. That is what ClickHouse
//! 18.16, the oldest server it supports, understands; every statement also
//! runs on current releases (a test replays them all on one).
//!
//! - [`migrations`]: the tables and their versions.
//! - `rows`: the tables' rows as Rust values.
//! - `write`: batches, with idempotence by row identity.
//! - `read`: lookups, searches, reports.
//! - `retention`: dropping whole day partitions.
//! - `users`: the API's users and their sessions.
//! - `queue`: queue snapshots, current queues, queue history and jobs.
//! - `live`: the live feed, from the notes of materialized views;
//!   `login`: the login throttle's ledger.
//!
//! # Idempotence without transactions
//!
//! ClickHouse has no transactions, so a batch is written table by table.
//! Every row has an identity that the data itself decides: records and
//! rejections their origin (host, file identity, offset), lifecycles
//! (host, message id) with a version one above the stored one.
//! Tables are `ReplacingMergeTree`s keyed by that identity and every
//! read uses `FINAL`, so a row written twice counts once. Hour and day
//! cells are sums instead, and what a batch adds to them is marked, per
//! source, day and version, in the same insert, with the hour cells it
//! added: a batch sent again adds what it wants less what the marks
//! added, which is nothing when it is cut as before (see `migrations`,
//! versions 6 to 8). A batch is
//! compared with what is stored before it is written: records and
//! rejections already there and lifecycles that did not change are not
//! written again, and the summary counts only what was new.
//!
//! The order of the writes makes an interrupted batch safe to send again:
//! summed hour and day cells with their marks (with the raw records and
//! the attempts), before their lifecycle or rejection (a retry finds the lifecycle unchanged,
//! the rejection stored, only once they are in), blobs (the tailer's
//! checkpoint, the correlator's state) last, so a batch whose checkpoint
//! is stored is stored whole. The per-server counts of [`Store::hosts`]
//! are the one thing not exact under failure: a batch that fails after
//! its records and before its counts leaves them short by what it added.
//!
//! # Traces
//!
//! A trace reads by key: its lifecycle in the one day partition that
//! `lifecycle_days` names, its raw records by origin in the partitions
//! `events_by_message` names (both sorted by host and message id, and
//! filled by materialized views). The filters on a table's key run as
//! `PREWHERE`, before `FINAL` merges the versions of what is left. A
//! trace costs a few lookups of one small granule per day partition,
//! whatever the traffic.
//!
//! # Reports
//!
//! Reports and cells come from the cells each lifecycle and rejection
//! contributes (see `exim_pilot_schema::report::contribution`), per hour
//! and per day, kept summed per (dimension, bucket, host, key), as SQLite
//! keeps its cells: a changed lifecycle adds its new cells less its old
//! ones, so a month of one dimension is some thousands of rows however
//! many messages it holds, and samples are only ever added, as in SQLite.
//! (Hour cells stored before schema version 8 stay one row per source and
//! version, `cells_hour_by_source`, whose latest versions a read adds.)
//! The sums equal aggregating the stored lifecycles, and day cells
//! outlive the lifecycles as retention allows. A report reads day cells for the whole days of its
//! range and hour cells for the hours at its ends, and builds the
//! [`Report`] in Rust with the code every other path uses, so it is
//! exactly what [`crate::SqliteStore`] gives. A report for one
//! destination domain reads that domain's lifecycles, as SQLite does.
//!
//! # Full-text search
//!
//! [`Store::search_lines`] matches each word as a case-insensitive
//! substring of the raw line (`positionCaseInsensitive`), over the
//! partitions of the range asked: a scan, without an index. Unlike
//! SQLite's word index, `relay` also finds `relayed`.
//!
//! # Known limits
//!
//! A lifecycle sits in the partition of the day it was first stored, and
//! retention drops a day of lifecycles only once the last of them has
//! gone quiet for the retention period. Old hour cells are deleted from
//! the summed tables by a mutation, which ClickHouse runs in the
//! background (see `retention`). A batch sent again over a mark written
//! by a build before schema version 7 (which named no content) adds
//! nothing to the hour sums: such a build wrote its hour cells per
//! source, so whether that attempt got them in is not known.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use clickhouse::query::Query;
use clickhouse::{Client, Compression, RowOwned, RowRead, RowWrite};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;

use exim_pilot_schema::queue::{QueueActionResult, QueueJob, QueueSnapshot};
use exim_pilot_schema::report::{ReportCells, ReportOptions};
use exim_pilot_schema::{Lifecycle, MessageId, RejectRecord, Report};

use crate::error::{Result, StoreError};
use crate::live::LiveFeed;
use crate::login::LoginMark;
use crate::queue::*;
use crate::types::*;
use crate::Store;

mod live;
mod login;
pub mod migrations;
mod queue;
mod read;
mod retention;
mod rows;
mod users;
mod write;

/// The database the store uses when none is named.
pub const DEFAULT_DATABASE: &str = "exim_pilot";

/// Every statement sent, when a caller asked for them (see
/// [`ClickHouseStore::connect_recording`]).
pub type Journal = Arc<Mutex<Vec<String>>>;

/// A client with the settings every request needs, and the journal.
#[derive(Clone)]
pub(crate) struct Db {
    client: Client,
    journal: Option<Journal>,
    /// The longest a read may run on the server, in whole seconds.
    read_limit_secs: u64,
}

/// The longest a read may run on the server. A caller that stops waiting
/// (an API request past its timeout) only closes its connection, and the
/// server would finish the query anyway: this bounds that work, well above
/// what any read of ours takes (the API gives a request 15 s).
pub const READ_LIMIT: Duration = Duration::from_secs(60);

fn failed(doing: &str, e: clickhouse::error::Error) -> StoreError {
    StoreError::ClickHouse {
        doing: doing.to_string(),
        reason: e.to_string(),
    }
}

impl Db {
    fn new(url: &str, database: Option<&str>, journal: Option<Journal>) -> Db {
        // The crate's default HTTP client (keep-alive, an idle timeout
        // below the server's), plus `TCP_NODELAY`: without it a small
        // request (a few rows, a short query) waits for the acknowledgement
        // of the previous segment, about 40 ms each time on Linux, which
        // added up to a third of the time of a commit.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(2))
            .build(connector);
        let mut client = Client::with_http_client(http)
            .with_url(url)
            .with_validation(false)
            .with_compression(Compression::None)
            // Filters must see rows after FINAL has chosen each key's
            // latest version, not before (where PREWHERE would run them).
            .with_setting("optimize_move_to_prewhere", "0");
        if let Some(db) = database {
            client = client.with_database(db);
        }
        Db {
            client,
            journal,
            read_limit_secs: READ_LIMIT.as_secs(),
        }
    }

    /// The same client with another limit on reads (at least a second).
    #[cfg(test)]
    fn with_read_limit(mut self, limit: Duration) -> Db {
        self.read_limit_secs = limit.as_secs().max(1);
        self
    }

    fn query(&self, sql: &str) -> Query {
        self.client.query(sql)
    }

    fn note(&self, sql: String) {
        if let Some(journal) = &self.journal {
            journal
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(sql);
        }
    }

    async fn execute(&self, q: Query, doing: &str) -> Result<()> {
        self.note(q.sql_display().to_string());
        q.execute().await.map_err(|e| failed(doing, e))
    }

    async fn fetch<T: RowOwned + RowRead>(&self, q: Query, doing: &str) -> Result<Vec<T>> {
        self.note(q.sql_display().to_string());
        let limit = self.read_limit_secs.to_string();
        q.with_setting("max_execution_time", limit)
            .fetch_all::<T>()
            .await
            .map_err(|e| failed(doing, e))
    }

    /// Inserts rows into `table`, whose columns `columns` names in the
    /// order of the row type's fields.
    async fn insert<T: RowOwned + RowWrite>(
        &self,
        table: &str,
        rows: &[T],
        doing: &str,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let columns = rows::columns::<T>();
        // The journal gets a statement that checks the columns exist.
        self.note(format!(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} WHERE 0"
        ));
        let mut insert = self
            .client
            .insert::<T>(table)
            .await
            .map_err(|e| failed(doing, e))?;
        for row in rows {
            insert.write(row).await.map_err(|e| failed(doing, e))?;
        }
        insert.end().await.map_err(|e| failed(doing, e))
    }
}

/// The ClickHouse store of fleet mode.
pub struct ClickHouseStore {
    db: Db,
    url: String,
    database: String,
    /// The last version handed out for blobs and audit entries.
    clock: AtomicU64,
}

impl std::fmt::Debug for ClickHouseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseStore")
            .field("url", &self.url)
            .field("database", &self.database)
            .finish()
    }
}

/// Database names are written into statements unquoted, so only plain
/// ones are accepted.
fn check_database(name: &str) -> Result<()> {
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().next().is_some_and(|c| !c.is_ascii_digit());
    if plain {
        Ok(())
    } else {
        Err(StoreError::InvalidQuery(format!(
            "the database name {name:?} is not plain: use letters, digits and _, \
             not starting with a digit"
        )))
    }
}

impl ClickHouseStore {
    /// Connects to the server at `url` (`http://host:8123`), creates the
    /// database if needed and brings its tables up to date: what a
    /// processor calls at startup.
    pub async fn connect(url: &str, database: &str) -> Result<ClickHouseStore> {
        ClickHouseStore::connect_with(url, database, None).await
    }

    /// Like [`ClickHouseStore::connect`], recording the text of every
    /// statement sent in `journal`, so that tests can replay them on
    /// other ClickHouse versions.
    pub async fn connect_recording(
        url: &str,
        database: &str,
        journal: Journal,
    ) -> Result<ClickHouseStore> {
        ClickHouseStore::connect_with(url, database, Some(journal)).await
    }

    async fn connect_with(
        url: &str,
        database: &str,
        journal: Option<Journal>,
    ) -> Result<ClickHouseStore> {
        migrate_with(url, database, journal.clone()).await?;
        Ok(ClickHouseStore::new(url, database, journal))
    }

    /// Connects to a database whose tables are already at this build's
    /// version, changing nothing: what readers call.
    pub async fn open(url: &str, database: &str) -> Result<ClickHouseStore> {
        check_database(database)?;
        let server = Db::new(url, None, None);
        let found = migrations::version(&server, database).await?;
        let expected = migrations::latest_version();
        if found > expected {
            return Err(StoreError::TooNew {
                found,
                known: expected,
            });
        }
        if found < expected {
            return Err(StoreError::NotMigrated {
                database: database.to_string(),
                found,
                expected,
            });
        }
        Ok(ClickHouseStore::new(url, database, None))
    }

    fn new(url: &str, database: &str, journal: Option<Journal>) -> ClickHouseStore {
        ClickHouseStore {
            db: Db::new(url, Some(database), journal),
            url: url.to_string(),
            database: database.to_string(),
            clock: AtomicU64::new(0),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// A number above every one this store handed out before, and above
    /// the clock in nanoseconds: later writes of a blob win.
    fn next_version(&self) -> u64 {
        let now = Utc::now().timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
        let prev = self
            .clock
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(v.max(now) + 1))
            .unwrap_or(now);
        prev.max(now) + 1
    }

    /// Keeps records of the raw topic that could not be decoded, with
    /// where they came from. Stored once per (topic, partition, offset);
    /// dropped with the raw records by retention.
    pub async fn store_unparsed(&self, records: &[UnparsedRecord]) -> Result<()> {
        write::store_unparsed(&self.db, records).await
    }
}

/// Creates the database if needed and brings its tables to the latest
/// version; returns that version. What `exim-pilot migrate` runs.
pub async fn migrate(url: &str, database: &str) -> Result<i64> {
    migrate_with(url, database, None).await?;
    Ok(migrations::latest_version())
}

async fn migrate_with(url: &str, database: &str, journal: Option<Journal>) -> Result<()> {
    check_database(database)?;
    let server = Db::new(url, None, journal.clone());
    server
        .execute(
            server.query(&format!("CREATE DATABASE IF NOT EXISTS {database}")),
            "create the database",
        )
        .await?;
    migrations::migrate(&Db::new(url, Some(database), journal), database).await
}

/// A record of the raw topic that could not be decoded as a batch.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UnparsedRecord {
    /// The Kafka topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// When it was read, in milliseconds since the epoch.
    pub read_at_ms: i64,
    /// Why it could not be decoded.
    pub problem: String,
    /// Its bytes, exactly as read.
    pub bytes: Vec<u8>,
}

#[async_trait]
impl Store for ClickHouseStore {
    async fn commit_batch(&self, batch: Batch) -> Result<BatchSummary> {
        if batch.is_empty() {
            return Ok(BatchSummary::default());
        }
        write::commit_batch(self, batch).await
    }

    async fn load_blob(&self, name: &str) -> Result<Option<Vec<u8>>> {
        read::load_blob(&self.db, name).await
    }

    async fn lifecycle(&self, host: &str, id: MessageId) -> Result<Option<Lifecycle>> {
        read::lifecycle(&self.db, host, id).await
    }

    async fn lifecycles_by_id(&self, id: MessageId) -> Result<Vec<Lifecycle>> {
        read::lifecycles_by_id(&self.db, id).await
    }

    async fn message_records(&self, host: &str, id: MessageId) -> Result<Vec<StoredRecord>> {
        read::message_records(&self.db, host, id).await
    }

    async fn search(&self, filter: &MessageFilter, page: &PageRequest) -> Result<Page<Lifecycle>> {
        read::search(&self.db, filter, page).await
    }

    async fn rejects(
        &self,
        filter: &RejectFilter,
        page: &PageRequest,
    ) -> Result<Page<RejectRecord>> {
        read::rejects(&self.db, filter, page).await
    }

    async fn report(&self, options: &ReportOptions) -> Result<Report> {
        read::report(&self.db, options).await
    }

    async fn cells(&self, query: &CellQuery) -> Result<ReportCells> {
        read::cells(&self.db, query).await
    }

    async fn top_recipients(&self, query: &RecipientQuery) -> Result<Vec<RecipientCount>> {
        read::top_recipients(&self.db, query).await
    }

    async fn search_lines(&self, query: &LineQuery) -> Result<Vec<StoredRecord>> {
        read::search_lines(&self.db, query).await
    }

    async fn hosts(&self) -> Result<Vec<HostSummary>> {
        read::hosts(&self.db).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        write::append_audit(&self.db, entry, self.next_version()).await
    }

    async fn audit_log(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>> {
        read::audit_log(&self.db, filter, page).await
    }

    async fn create_user(&self, user: &User) -> Result<()> {
        users::create_user(&self.db, user, self.next_version()).await
    }

    async fn update_user(&self, user: &User) -> Result<()> {
        users::update_user(&self.db, user, self.next_version()).await
    }

    async fn user(&self, name: &str) -> Result<Option<User>> {
        users::user(&self.db, name).await
    }

    async fn users(&self) -> Result<Vec<User>> {
        users::users(&self.db).await
    }

    async fn save_session(&self, session: &Session) -> Result<()> {
        users::save_session(&self.db, session, self.next_version()).await
    }

    async fn session(&self, id: &str) -> Result<Option<Session>> {
        users::session(&self.db, id).await
    }

    async fn revoke_sessions(&self, user: &str, at: DateTime<Utc>) -> Result<u64> {
        users::revoke_sessions(&self.db, user, at.timestamp_millis(), || {
            self.next_version()
        })
        .await
    }

    async fn save_queue_snapshot(&self, snapshot: &QueueSnapshot) -> Result<()> {
        queue::save_snapshot(&self.db, snapshot).await
    }

    async fn queue_messages(
        &self,
        filter: &QueueFilter,
        page: &PageRequest,
    ) -> Result<Page<QueueEntry>> {
        queue::messages(&self.db, filter, page).await
    }

    async fn queue_health(&self, host: Option<&str>) -> Result<Vec<QueueHealth>> {
        queue::health(&self.db, host).await
    }

    async fn queue_history(&self, query: &QueueHistoryQuery) -> Result<Vec<QueuePoint>> {
        queue::history(&self.db, query).await
    }

    async fn save_queue_job(&self, job: &QueueJob) -> Result<()> {
        queue::save_job(&self.db, job).await
    }

    async fn save_queue_results(&self, results: &[QueueActionResult]) -> Result<()> {
        queue::save_results(&self.db, results).await
    }

    async fn queue_job(&self, job_id: &str) -> Result<Option<(QueueJob, Vec<QueueActionResult>)>> {
        queue::job(&self.db, job_id).await
    }

    async fn queue_jobs(
        &self,
        filter: &QueueJobFilter,
        page: &PageRequest,
    ) -> Result<Page<QueueJobSummary>> {
        queue::jobs(&self.db, filter, page).await
    }

    async fn apply_retention(
        &self,
        policy: &Retention,
        now: DateTime<Utc>,
    ) -> Result<RetentionSummary> {
        retention::apply(&self.db, policy, now).await
    }

    async fn live_feed(&self) -> Result<Box<dyn LiveFeed>> {
        Ok(Box::new(live::ClickHouseFeed::open(self.db.clone()).await?))
    }

    async fn append_login_marks(&self, marks: &[LoginMark]) -> Result<()> {
        login::append(&self.db, marks).await
    }

    async fn login_marks(
        &self,
        keys: &[String],
        since: DateTime<Utc>,
        per_key: usize,
    ) -> Result<Vec<LoginMark>> {
        let per_key = per_key.min(crate::MAX_MARKS_PER_KEY);
        login::marks(&self.db, keys, since.timestamp_millis(), per_key).await
    }
}

#[cfg(test)]
mod tests;
